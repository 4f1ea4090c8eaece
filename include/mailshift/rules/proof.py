"""Is this mailbox proven? The one definition; the gate, the wave summary, the UI, the CLI, Slack
and the reports all ask `decide` (through `proof_states`), never the `proof` table directly.

A mailbox is
- **proven** when its latest verification found nothing blocking, the ledger has not changed
  since (`ledger_as_of`), its latest copy pass finished and no copy was interrupted;
- **waived** when the same holds except that every blocking finding is covered by an active
  waiver (`rules.waivers.covers`), or an active whole-mailbox waiver stands in for the proof and
  for a failed or missing pass, by the named person who approved it;
- **not_proven** otherwise, with every reason.

A running pass or an intent row (an interrupted copy) blocks even under a whole-mailbox waiver:
mail may be on its way. Waivers are re-applied live: a revoked waiver un-proves at once.
Nothing but a waiver turns a failure into a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailshift.rules import states
from mailshift.rules import waivers as wv

MAX_FINDINGS_SHOWN = 5

# kinds of Reason (the gate adds its own: unknown_domain, no_mailboxes, open_exception, notice_missing)
NOT_VERIFIED = "never_verified"
FINDINGS = "unwaived_findings"
PROOF_FAILED = "proof_failed"
WRONG_KIND = "not_final_proof"
STALE_PROOF = "ledger_changed_since_proof"
NO_PASS = "never_copied"
PASS_RUNNING = "pass_running"
PASS_FAILED = "pass_failed"
INTENT = "copy_interrupted"


@dataclass(frozen=True)
class Reason:
    kind: str
    building: str | None
    mailbox: str | None         # address
    detail: str

    def text(self) -> str:
        where = " ".join(x for x in (f"building {self.building}" if self.building else "",
                                     f"mailbox {self.mailbox}" if self.mailbox else "") if x)
        return f"[{self.kind}] {where + ': ' if where else ''}{self.detail}"


@dataclass
class ProofState:
    mailbox_id: int
    address: str
    building_id: str
    state: str                                   # one of states.PROOF_STATES
    reasons: list[Reason] = field(default_factory=list)
    waivers: list[str] = field(default_factory=list)   # every waiver, revoked ones marked
    verify_run_id: int | None = None
    proof_id: int | None = None
    proven_at: object = None
    kind: str | None = None
    src_messages: int = 0
    whole_mailbox_waiver: bool = False
    active_waivers: list = field(default_factory=list)   # rules.waivers.Waiver

    @property
    def ok(self) -> bool:
        return self.state in states.PROOF_OK

    def reason_texts(self) -> list[str]:
        return [r.detail for r in self.reasons]

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["reasons"] = self.reason_texts()
        d.pop("active_waivers")
        return d


def _passes(f, whole: bool, add) -> None:
    """The copy side: a mailbox whose copy is running, interrupted or failed is not proven."""
    if f.pass_id is None:
        if not whole:
            add(NO_PASS, "no copy pass has run for this mailbox")
    elif f.pass_status == "running":
        started = f"{f.pass_started:%Y-%m-%d %H:%M:%S %Z}" if f.pass_started else "?"
        add(PASS_RUNNING, f"{f.pass_kind} pass #{f.pass_id} is still running (started {started}); "
                          "if its worker died, run the pass again")
    elif f.pass_status == "failed" and not whole:
        add(PASS_FAILED, f"latest {f.pass_kind} pass #{f.pass_id} failed" + (f": {f.pass_error}" if f.pass_error else ""))
    if f.has_intent:
        add(INTENT, "the ledger has messages in state intent (a copy was interrupted): run a pass again")


def _verification(f, active, require_kind: str | None, add) -> int:
    """The proof side; returns how many blocking findings waivers cover."""
    if f.proof_id is None:
        add(NOT_VERIFIED, "never verified (no proof row)")
        return 0
    findings = f.findings
    covered = wv.apply_waivers(findings, active) if findings else 0   # nothing to cover: skip (500,000 at a gate)
    open_ = [x for x in findings if x.waiver_id is None] if findings else ()
    if open_:
        shown = "; ".join(f"finding #{x.id} {x.kind} (folder {x.src_folder or '-'} UID "
                          f"{x.src_uid if x.src_uid is not None else '-'} -> {x.dest_folder or '-'} UID "
                          f"{x.dest_uid if x.dest_uid is not None else '-'}): {x.detail}"
                          for x in open_[:MAX_FINDINGS_SHOWN])
        more = len(open_) - MAX_FINDINGS_SHOWN
        add(FINDINGS, f"{len(open_)} blocking finding(s) of verification run {f.verify_run_id} without a waiver: "
                      f"{shown}" + (f"; and {more} more" if more > 0 else ""))
    elif f.verdict == states.VERDICT_FAILED and not f.findings:
        add(PROOF_FAILED, f"proof #{f.proof_id} (run {f.verify_run_id}) failed without a recorded blocking finding")
    if require_kind and f.proof_kind != require_kind:
        add(WRONG_KIND, f"the latest proof (#{f.proof_id}, run {f.verify_run_id}) is {f.proof_kind}, not {require_kind}")
    if f.ledger_now is not None and (f.ledger_as_of is None or f.ledger_now > f.ledger_as_of):
        add(STALE_PROOF, f"the ledger changed after verification run {f.verify_run_id} "
                         f"({f.ledger_now:%Y-%m-%d %H:%M:%S} > {f.ledger_as_of}): verify again")
    return covered


def decide(f, *, require_kind: str | None = None) -> ProofState:
    """The proof state of one mailbox from its facts (`store.proofs.MailboxFacts`).

    `require_kind="final"` (the final proof after the drain) also requires the latest proof to
    be of that kind."""
    if f.waivers:
        active = [w for w in f.waivers if w.active]
        whole = any(w.scope == "mailbox" for w in active)
        shown = [w.describe() + ("" if w.active else f" [revoked by {w.revoked_by}]") for w in f.waivers]
    else:   # most mailboxes: no waiver
        active, whole, shown = [], False, []
    out = ProofState(f.mailbox_id, f.address, f.building_id, states.NOT_PROVEN, waivers=shown,
                     verify_run_id=f.verify_run_id, proof_id=f.proof_id, proven_at=f.proven_at, kind=f.proof_kind,
                     src_messages=f.src_messages or 0, whole_mailbox_waiver=whole, active_waivers=active)

    def add(kind: str, detail: str) -> None:
        out.reasons.append(Reason(kind, f.building_id, f.address, detail))

    _passes(f, whole, add)
    covered = 0 if whole else _verification(f, active, require_kind, add)
    if not out.reasons:
        out.state = states.WAIVED if (whole or covered) else states.PROVEN
    return out


def proof_states(conn, *, require_kind: str | None = None, **scope) -> list[ProofState]:
    """The proof state of every mailbox of one scope (`mailbox_ids=`, `building=`, `domain=`,
    `wave=`), ordered by building and address."""
    from mailshift.store.proofs import facts_in_chunks, gc_paused

    with gc_paused():
        return [decide(f, require_kind=require_kind) for chunk in facts_in_chunks(conn, **scope) for f in chunk]


def proof_state(conn, mailbox_id: int) -> ProofState:
    """The proof state of one mailbox; UnknownMailbox if it is not in the inventory."""
    found = proof_states(conn, mailbox_ids=[mailbox_id])
    if not found:
        from mailshift.errors import UnknownMailbox

        raise UnknownMailbox(f"no mailbox {mailbox_id!r} in the inventory")
    return found[0]


def tally(found: list[ProofState]) -> dict:
    """Counts for summaries: mailboxes, proven, waived, not_proven, ok, buildings, buildings_ok."""
    by_building: dict[str, bool] = {}
    for s in found:
        by_building[s.building_id] = by_building.get(s.building_id, True) and s.ok
    counts = {k: sum(1 for s in found if s.state == k) for k in states.PROOF_STATES}
    return {"mailboxes": len(found), **counts, "ok": counts[states.PROVEN] + counts[states.WAIVED],
            "buildings": len(by_building), "buildings_ok": sum(by_building.values())}
