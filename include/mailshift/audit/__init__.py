"""Pre-migration audit: addresses the new provider refuses, POP3 usage from legacy logs
(APOP, LAST, leave-on-server), forwarding/auto-reply rules, customer-notice campaigns and the
cutover gate's notice condition (`notice_gate_check`)."""
from .notices import NoticePolicy, notice_gate_check  # noqa: F401
