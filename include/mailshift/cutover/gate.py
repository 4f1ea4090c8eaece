"""The zero-loss gate of a domain's MX swap: read only from the ledger tables, never skipped.

`evaluate_gate(conn, domain)` passes only if, for every mailbox of the domain (every building
whose `building.domain` is the domain):

1. **proof**: its latest `proof` row exists, no blocking finding of that verification run is
   left without an active waiver, the verdict is not `failed` for another reason, and the ledger
   has not changed since the proof's `ledger_as_of` (a pass after the verification means
   "verify again"). An active whole-mailbox waiver (`mailshift waive ADDRESS --whole-mailbox`)
   stands in for the proof, by the named person who approved it. Waiver coverage follows
   `mailshift.rules.waivers.covers` (mailbox / folder / source message / destination message),
   re-applied live: a revoked waiver counts as none.
2. **copy passes**: its latest `pass` is `finished` (not `running`, not `failed`, and there is
   one); an interrupted copy (`message.state = 0`, intent) blocks too. A failed or missing pass
   is accepted only under a whole-mailbox waiver; a running pass or an intent row never is.
3. **exceptions**: no blocking exception with status open/acknowledged on the domain, one of its
   buildings or one of its mailboxes.
4. **notices**: every affected household has had what its building's `notice_policy` requires
   (`mailshift.customers.notices.notice_gate_check`), the same from the CLI and from Airflow.
   `notice_check=` replaces it only in benchmarks and tests that measure the rest.

Rules 1 and 2 are one function, `mailshift.rules.proof.decide`: the gate adds 3 and 4.

There is no flag that skips any of this; only waivers change the verdict (and only for rule 1/2).
A refusal names each reason: kind, building, mailbox (address), what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from mailshift.rules import proof
from mailshift.rules.proof import (  # noqa: F401  (the reason kinds, re-exported for callers)
    FINDINGS,
    INTENT,
    NO_PASS,
    NOT_VERIFIED,
    PASS_FAILED,
    PASS_RUNNING,
    PROOF_FAILED,
    STALE_PROOF,
    WRONG_KIND,
    Reason,
)
from mailshift.store import exception_records, proofs

# the gate's own kinds of Reason (the per-mailbox ones are rules.proof's)
NO_DOMAIN = "unknown_domain"
NO_MAILBOXES = "no_mailboxes"
EXCEPTION = "open_exception"
NOTICE = "notice_missing"


@dataclass
class GateVerdict:
    domain: str
    passed: bool
    reasons: list[Reason] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def reason_texts(self) -> list[str]:
        return [r.text() for r in self.reasons]

    def as_dict(self) -> dict:
        return {"domain": self.domain, "passed": self.passed, "reasons": [asdict(r) for r in self.reasons],
                "summary": self.summary}


NoticeCheck = Callable[[object, str], list[Reason]]


def default_notice_check(conn, domain: str) -> list[Reason]:
    """The customers' notice policy (rounds, letters, calls, lead days): the same from the CLI
    and from Airflow, so the gate is never weaker in one of them."""
    from mailshift.customers.notices import notice_gate_check

    return [r if isinstance(r, Reason) else Reason(NOTICE, None, None, str(r)) for r in notice_gate_check(conn, domain)]


default_notice_check.description = (  # type: ignore[attr-defined]
    "notice policy: every affected household has had the notices its building's notice_policy requires")


def evaluate_gate(conn, domain: str, notice_check: NoticeCheck | None = None, *,
                  proof_kind: str | None = None, live: bool = False) -> GateVerdict:
    """The gate's verdict for `domain`, with every reason it refuses and a summary.

    `proof_kind="final"` (the final proof after the drain) also requires each mailbox's latest
    proof to be of that kind. The facts come from the kept latest pass and proof per mailbox
    (`mailbox_latest`, migration 0012), one live index probe of the ledger's newest change and the
    maintained `mailbox_ledger` (migration 0009), never a scan of the ledger, read in building
    chunks over a few connections; `live=True` is the full evaluation over every ledger row (the
    same verdict and reasons: tested)."""
    check = notice_check or default_notice_check
    v = GateVerdict(domain, False)
    if not proofs.domain_exists(conn, domain):
        v.reasons.append(Reason(NO_DOMAIN, None, None, f"domain {domain!r} is not in the inventory"))
        return v
    facts, found = [], []
    with proofs.gc_paused():   # decide chunk k while chunk k+1 is read (store.proofs.facts_in_chunks)
        for chunk in proofs.facts_in_chunks(conn, domain=domain, live=live):
            facts.extend(chunk)
            found.extend(proof.decide(f, require_kind=proof_kind) for f in chunk)
    if not found:
        v.reasons.append(Reason(NO_MAILBOXES, None, None, f"no mailbox of {domain} is in the inventory: "
                                                          "nothing to prove, refusing to swap blind"))
        return v
    for s in found:
        v.reasons.extend(s.reasons)
    for e in exception_records.open_exceptions(conn, domain=domain):
        v.reasons.append(Reason(EXCEPTION, e["building_id"], e["address"],
                                f"open exception #{e['id']} ({e['kind']}): {e['summary']}"))
    v.reasons.extend(check(conn, domain))
    v.passed = not v.reasons
    v.summary = _summary(conn, domain, found, check, facts, live)
    return v


def _summary(conn, domain, found: list[proof.ProofState], check, facts: list, live: bool) -> dict:
    ok = [s for s in found if s.ok]
    if live:
        (messages, bytes_), counted_live = proofs.copied_totals(conn, [f.mailbox_id for f in facts]), len(facts)
    else:
        messages, bytes_, counted_live = proofs.summarised_totals(conn, facts)
    waivers = [{"id": w.id, "mailbox": s.address, "scope": w.scope, "approved_by": w.approved_by,
                "requested_by": w.requested_by, "approved_at": w.approved_at.isoformat() if w.approved_at else None,
                "reason": w.reason} for s in found for w in s.active_waivers]
    return {
        "domain": domain,
        "buildings": len({s.building_id for s in found}),
        "mailboxes": len(found),
        "mailboxes_ok": len(ok),
        "mailboxes_waived_whole": sum(1 for s in found if s.whole_mailbox_waiver and s.ok),
        "messages_proven": sum(s.src_messages for s in ok),
        "messages": messages,
        "bytes": bytes_,
        "waivers": waivers,
        "mailboxes_counted_live": counted_live,
        "notice_check": getattr(check, "description", getattr(check, "__name__", repr(check))),
    }
