"""Before copying a building: can we log in on both sides, and is there room at the destination?

Per mailbox, never fatal for the others: each problem is returned (and recorded as an
exception by the caller) so one broken account does not hold up a whole building.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailshift.errors import AuthError, ConfigError, ProtocolError, TransientError
from mailshift.protocols.endpoint import Endpoint
from mailshift.protocols.imap.session import close_session, open_session, translated_errors


@dataclass
class PreflightResult:
    mailbox_id: int
    address: str
    problems: list = field(default_factory=list)
    dest_quota: tuple | None = None  # (used bytes, limit bytes)

    @property
    def ok(self) -> bool:
        return not self.problems


def _quota(client) -> tuple | None:
    if not client.has_capability("QUOTA"):
        return None
    _, quotas = client.get_quota_root("INBOX")
    for q in quotas:
        if q.resource.upper() == "STORAGE":
            return q.usage * 1024, q.limit * 1024
    return None


def check_mailbox(mailbox_id: int, address: str, source_login: str, dest_login: str,
                  source: Endpoint, dest: Endpoint, expected_bytes: int | None = None) -> PreflightResult:
    """Log in at the source and at the destination; read the destination quota."""
    result = PreflightResult(mailbox_id, address)
    for side, endpoint, login in (("source", source, source_login), ("destination", dest, dest_login)):
        client = None
        try:
            client = open_session(endpoint, login)
            with translated_errors(f"{side} {endpoint.label}"):
                client.select_folder("INBOX", readonly=True)
                if side == "destination":
                    result.dest_quota = _quota(client)
        except AuthError as exc:
            result.problems.append(("auth", f"{side} refused login: {exc}"))
        except (TransientError, ProtocolError, ConfigError) as exc:
            result.problems.append(("unreachable", f"{side}: {exc}"))
        finally:
            close_session(client)
    if result.dest_quota and expected_bytes is not None:
        used, limit = result.dest_quota
        if limit and used + expected_bytes > limit:
            result.problems.append(("quota", f"destination has {limit - used} bytes free, "
                                             f"mailbox needs about {expected_bytes}"))
    return result
