"""Proof state of a mailbox, from its latest proof row, that run's findings and the waivers now.

- proven: the latest verification found nothing blocking, and the ledger has not changed since.
- waived: every blocking finding of the latest verification is covered by an active waiver.
- not_proven: never verified, a blocking finding is not waived (a revoked waiver counts as none),
  or the ledger changed after the verification (verify again).
Nothing but a waiver turns a failure into a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from mailshift.rules import waivers as wv
from mailshift.store import waivers as waiver_store

MAX_REASONS = 50


@dataclass
class ProofState:
    mailbox_id: int
    address: str
    state: str                          # proven | not_proven | waived
    reasons: list[str] = field(default_factory=list)
    waivers: list[str] = field(default_factory=list)
    verify_run_id: int | None = None
    proof_id: int | None = None
    proven_at: object = None
    kind: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _shown(conn, mailbox_id: int) -> list[str]:
    return [w.describe() + (f" [revoked by {w.revoked_by}]" if not w.active else "")
            for w in waiver_store.list_waivers(conn, [mailbox_id])]


def proof_state(conn, mailbox_id: int) -> ProofState:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT address FROM mailbox WHERE id = %s", (mailbox_id,))
        row = cur.fetchone()
        if row is None:
            from mailshift.copy.copy_one import UnknownMailbox

            raise UnknownMailbox(f"no mailbox {mailbox_id!r} in the inventory")
        address = row[0]
        cur.execute("SELECT id, verify_run_id, verdict, ledger_as_of, proven_at, kind FROM proof"
                    " WHERE mailbox_id = %s ORDER BY proven_at DESC, id DESC LIMIT 1", (mailbox_id,))
        proof = cur.fetchone()
    if proof is None:  # outside the transaction block: _shown opens its own
        return ProofState(mailbox_id, address, "not_proven", ["never verified"], _shown(conn, mailbox_id))
    pid, run_id, verdict, as_of, proven_at, kind = proof
    with conn, conn.cursor() as cur:
        cur.execute("SELECT f.id, f.kind, f.folder_id, f.src_uid, f.dest_folder, f.dest_uidvalidity, f.dest_uid,"
                    " f.src_folder, f.detail FROM reconciliation_finding f JOIN reconciliation r"
                    " ON r.id = f.reconciliation_id WHERE r.verify_run_id = %s AND f.mailbox_id = %s"
                    " AND f.blocking ORDER BY f.id", (run_id, mailbox_id))
        findings = [SimpleNamespace(id=i, kind=k, folder_id=fo, src_uid=su, dest_folder=df, dest_uidvalidity=dv,
                                    dest_uid=du, src_folder=sf, detail=d, blocking=True, waiver_id=None)
                    for i, k, fo, su, df, dv, du, sf, d in cur.fetchall()]
        cur.execute("SELECT max(updated_at) FROM message WHERE mailbox_id = %s", (mailbox_id,))
        now_as_of = cur.fetchone()[0]
    all_waivers = waiver_store.list_waivers(conn, [mailbox_id])
    shown = [w.describe() + (f" [revoked by {w.revoked_by}]" if not w.active else "") for w in all_waivers]
    wv.apply_waivers(findings, [w for w in all_waivers if w.active])
    state = ProofState(mailbox_id, address, "proven", [], shown, run_id, pid, proven_at, kind)
    open_ = [f for f in findings if f.waiver_id is None]
    for f in open_[:MAX_REASONS]:
        state.reasons.append(f"finding #{f.id} {f.kind}: folder {f.src_folder or '-'} -> {f.dest_folder or '-'}, "
                             f"source UID {f.src_uid if f.src_uid is not None else '-'}, destination UID "
                             f"{f.dest_uid if f.dest_uid is not None else '-'}: {f.detail}")
    if len(open_) > MAX_REASONS:
        state.reasons.append(f"... and {len(open_) - MAX_REASONS} more blocking findings")
    if now_as_of is not None and (as_of is None or now_as_of > as_of):
        state.reasons.append(f"the ledger changed after verification run {run_id} ({now_as_of} > {as_of}): "
                             "verify again")
    if state.reasons:
        state.state = "not_proven"
    elif findings:
        state.state = "waived"
    return state
