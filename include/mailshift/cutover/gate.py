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
4. **notices**: `notice_check(conn, domain) -> [Reason]` (pluggable; the audit capability
   provides the policy check). The default, `notice_rows_check`, enforces what the `notice` table
   says without interpreting `notice_policy`: every *required* notice row of the domain's
   households must be sent, delivered or acknowledged (planned, failed, bounced block; cancelled
   does not). It does **not** check that the rows required by each building's `notice_policy`
   (email rounds, letter, call, lead days) were planned at all: the verdict's summary says so
   (`notice_check`), until the audit capability's check is passed in.

There is no flag that skips any of this; only waivers change the verdict (and only for rule 1/2).
A refusal names each reason: kind, building, mailbox (address), what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from mailshift.store.exception_records import open_exceptions

MAX_FINDINGS_SHOWN = 5

# kinds of Reason
NO_DOMAIN = "unknown_domain"
NO_MAILBOXES = "no_mailboxes"
NOT_VERIFIED = "never_verified"
FINDINGS = "unwaived_findings"
PROOF_FAILED = "proof_failed"
STALE_PROOF = "ledger_changed_since_proof"
NO_PASS = "never_copied"
PASS_RUNNING = "pass_running"
PASS_FAILED = "pass_failed"
INTENT = "copy_interrupted"
EXCEPTION = "open_exception"
NOTICE = "notice_missing"


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

_WAIVER_COVERS = """
    EXISTS (SELECT 1 FROM waiver w WHERE w.mailbox_id = f.mailbox_id AND w.revoked_at IS NULL AND (
        w.scope = 'mailbox'
     OR (w.scope = 'folder' AND f.folder_id IS NOT NULL AND w.folder_id = f.folder_id)
     OR (w.scope = 'message' AND f.src_uid IS NOT NULL AND w.folder_id = f.folder_id AND w.src_uid = f.src_uid)
     OR (w.scope = 'dest_message' AND f.src_uid IS NULL AND w.dest_uid = f.dest_uid
         AND w.dest_folder = f.dest_folder AND w.dest_uidvalidity = f.dest_uidvalidity)))
"""

_MAILBOXES = """
WITH mb AS (
    SELECT s.mailbox_id, s.address, s.building_id FROM mailbox_scope s WHERE s.domain = %(domain)s
), lp AS (
    SELECT DISTINCT ON (p.mailbox_id) p.mailbox_id, p.id, p.verify_run_id, p.kind, p.verdict, p.ledger_as_of,
           p.proven_at, p.src_messages
    FROM proof p JOIN mb ON mb.mailbox_id = p.mailbox_id
    ORDER BY p.mailbox_id, p.proven_at DESC, p.id DESC
), lpass AS (
    SELECT DISTINCT ON (x.mailbox_id) x.mailbox_id, x.id, x.kind, x.status, x.started_at, x.detail
    FROM pass x JOIN mb ON mb.mailbox_id = x.mailbox_id
    ORDER BY x.mailbox_id, x.started_at DESC, x.id DESC
)
SELECT mb.mailbox_id, mb.address, mb.building_id,
       lp.id, lp.verify_run_id, lp.kind, lp.verdict, lp.ledger_as_of, lp.proven_at, lp.src_messages,
       (SELECT max(m.updated_at) FROM message m WHERE m.mailbox_id = mb.mailbox_id) AS ledger_now,
       EXISTS (SELECT 1 FROM message m WHERE m.mailbox_id = mb.mailbox_id AND m.state = 0) AS has_intent,
       lpass.id, lpass.kind, lpass.status, lpass.started_at, lpass.detail,
       EXISTS (SELECT 1 FROM waiver w WHERE w.mailbox_id = mb.mailbox_id AND w.revoked_at IS NULL
               AND w.scope = 'mailbox') AS whole_waived
FROM mb LEFT JOIN lp ON lp.mailbox_id = mb.mailbox_id LEFT JOIN lpass ON lpass.mailbox_id = mb.mailbox_id
ORDER BY mb.building_id, mb.address
"""

_OPEN_FINDINGS = f"""
SELECT f.mailbox_id, f.id, f.kind, f.src_folder, f.src_uid, f.dest_folder, f.dest_uid, f.detail
FROM reconciliation_finding f JOIN reconciliation r ON r.id = f.reconciliation_id
WHERE r.verify_run_id = %s AND f.mailbox_id = %s AND f.blocking AND NOT {_WAIVER_COVERS}
ORDER BY f.id
"""


def notice_rows_check(conn, domain: str) -> list[Reason]:
    """Default notice condition: every required notice row of the domain's households is
    sent/delivered/acknowledged (or cancelled). Does not interpret `notice_policy`."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT b.id, h.id, m.address, n.id, n.campaign, n.kind, n.channel, n.status, n.due_by"
            " FROM notice n JOIN household h ON h.id = n.household_id JOIN building b ON b.id = h.building_id"
            " LEFT JOIN mailbox m ON m.id = n.mailbox_id"
            " WHERE b.domain = %s AND n.required AND n.status NOT IN ('sent', 'delivered', 'acknowledged', 'cancelled')"
            " ORDER BY b.id, h.id, n.id", (domain,))
        return [Reason(NOTICE, b, addr, f"household {h}: required notice #{nid} ({campaign}/{kind} by {channel}) "
                       f"is {status}" + (f", due by {due:%Y-%m-%d}" if due else ""))
                for b, h, addr, nid, campaign, kind, channel, status, due in cur.fetchall()]


notice_rows_check.description = (  # type: ignore[attr-defined]
    "notice rows only (default): required notice rows must be sent/delivered/acknowledged; the buildings' "
    "notice_policy (rounds, channels, lead days) is not enforced until the audit capability's check is passed")


def evaluate_gate(conn, domain: str, notice_check: NoticeCheck | None = None, *,
                  proof_kind: str | None = None) -> GateVerdict:
    """The gate's verdict for `domain`, with every reason it refuses and a summary.

    `proof_kind="final"` (the final proof after the drain) also requires each mailbox's latest
    proof to be of that kind."""
    check = notice_check or notice_rows_check
    v = GateVerdict(domain, False)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT mx_ttl FROM domain WHERE name = %s", (domain,))
        if cur.fetchone() is None:
            v.reasons.append(Reason(NO_DOMAIN, None, None, f"domain {domain!r} is not in the inventory"))
            return v
        cur.execute(_MAILBOXES, {"domain": domain})
        rows = cur.fetchall()
    if not rows:
        v.reasons.append(Reason(NO_MAILBOXES, None, None, f"no mailbox of {domain} is in the inventory: "
                                                          "nothing to prove, refusing to swap blind"))
        return v
    proven = waived_whole = 0
    messages = 0
    for (mid, address, building, proof_id, run_id, pkind, verdict, as_of, _proven_at, src_messages, ledger_now,
         has_intent, pass_id, pass_kind, pass_status, pass_started, pass_detail, whole_waived) in rows:
        r0 = len(v.reasons)

        def add(kind: str, detail: str, building=building, address=address) -> None:
            v.reasons.append(Reason(kind, building, address, detail))

        # copy passes (a running pass or an interrupted copy blocks even under a waiver)
        if pass_id is None:
            if not whole_waived:
                add(NO_PASS, "no copy pass has run for this mailbox")
        elif pass_status == "running":
            add(PASS_RUNNING, f"{pass_kind} pass #{pass_id} is still running (started {pass_started:%Y-%m-%d %H:%M:%S %Z})"
                              "; if its worker died, run the pass again")
        elif pass_status == "failed" and not whole_waived:
            err = (pass_detail or {}).get("error") if isinstance(pass_detail, dict) else None
            add(PASS_FAILED, f"latest {pass_kind} pass #{pass_id} failed" + (f": {err}" if err else ""))
        if has_intent:
            add(INTENT, "the ledger has messages in state intent (a copy was interrupted): run a pass again")
        # proof
        if whole_waived:
            waived_whole += 1
        elif proof_id is None:
            add(NOT_VERIFIED, "never verified (no proof row)")
        else:
            with conn, conn.cursor() as cur:
                cur.execute(_OPEN_FINDINGS, (run_id, mid))
                open_ = cur.fetchall()
            if open_:
                shown = "; ".join(f"finding #{fid} {k} (folder {sf or '-'} UID {su if su is not None else '-'}"
                                  f" -> {df or '-'} UID {du if du is not None else '-'})"
                                  for _, fid, k, sf, su, df, du, _d in open_[:MAX_FINDINGS_SHOWN])
                more = len(open_) - MAX_FINDINGS_SHOWN
                add(FINDINGS, f"{len(open_)} blocking finding(s) of verification run {run_id} without a waiver: "
                              f"{shown}" + (f"; and {more} more" if more > 0 else ""))
            elif verdict == "failed":
                add(PROOF_FAILED, f"proof #{proof_id} (run {run_id}) failed without a recorded blocking finding")
            if proof_kind and pkind != proof_kind:
                add(NOT_VERIFIED, f"the latest proof (#{proof_id}, run {run_id}) is {pkind}, not {proof_kind}")
            if ledger_now is not None and (as_of is None or ledger_now > as_of):
                add(STALE_PROOF, f"the ledger changed after verification run {run_id} "
                                 f"({ledger_now:%Y-%m-%d %H:%M:%S} > {as_of}): verify again")
        if len(v.reasons) == r0:
            proven += 1
            messages += src_messages or 0
    for e in open_exceptions(conn, domain=domain):
        v.reasons.append(Reason(EXCEPTION, e["building_id"], e["address"],
                                f"open exception #{e['id']} ({e['kind']}): {e['summary']}"))
    v.reasons.extend(check(conn, domain))
    v.passed = not v.reasons
    v.summary = _summary(conn, domain, rows, proven, waived_whole, messages, check)
    return v


def _summary(conn, domain, rows, proven, waived_whole, messages, check) -> dict:
    ids = [r[0] for r in rows]
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), coalesce(sum(size), 0) FROM message WHERE mailbox_id = ANY(%s) AND state = 1",
                    (ids,))
        copied, bytes_ = cur.fetchone()
        cur.execute("SELECT w.id, m.address, w.scope, w.approved_by, w.requested_by, w.approved_at, w.reason"
                    " FROM waiver w JOIN mailbox m ON m.id = w.mailbox_id"
                    " WHERE w.mailbox_id = ANY(%s) AND w.revoked_at IS NULL ORDER BY w.id", (ids,))
        waivers = [{"id": i, "mailbox": a, "scope": s, "approved_by": by, "requested_by": rq,
                    "approved_at": at.isoformat() if at else None, "reason": why}
                   for i, a, s, by, rq, at, why in cur.fetchall()]
    return {
        "domain": domain,
        "buildings": len({r[2] for r in rows}),
        "mailboxes": len(rows),
        "mailboxes_ok": proven,
        "mailboxes_waived_whole": waived_whole,
        "messages_proven": messages,
        "messages": copied,
        "bytes": int(bytes_),
        "waivers": waivers,
        "notice_check": getattr(check, "description", getattr(check, "__name__", repr(check))),
    }
