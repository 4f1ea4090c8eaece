"""Zero-loss proof: an independent recount of both servers, digest matching, findings,
Great Expectations suites, waivers, POP3 UIDL comparison and the HTML proof report.

Entry points (plain Python; the DAGs and the CLI call these):
    verify_mailbox(conn, address_or_id, resolve=endpoint_from_env, mode="full") -> MailboxVerdict
    verify_building(conn, building_id, resolve=..., mode="full", reports=None) -> BuildingVerdict
    proof_state(conn, mailbox_id) -> ProofState
    create_waiver(conn, mailbox, approved_by, reason, ...), revoke_waiver(conn, id, revoked_by)
"""

from mailshift.errors import WaiverError
from mailshift.rules.proof import ProofState, proof_state
from mailshift.store.waivers import create_waiver, list_waivers, revoke_waiver
from mailshift.verify.core import (
           BuildingVerdict,
           MailboxVerdict,
           verify_building,
           verify_mailbox,
)

__all__ = ["BuildingVerdict", "MailboxVerdict", "ProofState", "WaiverError", "create_waiver", "list_waivers",
           "proof_state", "revoke_waiver", "verify_building", "verify_mailbox"]
