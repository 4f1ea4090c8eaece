"""What the database knows about the proof of each mailbox in a scope, read in a few set queries.

`mailbox_facts` gathers, per mailbox: the latest `proof` row, the ledger's newest change, whether
an intent row is left, the latest copy `pass`, the blocking findings of the latest verification
run and every waiver (revoked ones too, for display). It decides nothing: the decision is
`mailshift.rules.proof.decide`, the one definition of "proven".

At scale (500,000 mailboxes, 1e8 ledger rows) nothing here scans the ledger (migration 0009):
the newest change is one backward probe of `message_mailbox_updated_idx`, an intent row one
probe of the partial `message_unsettled_idx`, the latest pass/proof one probe each; findings are
read only for mailboxes whose latest proof recorded some (verdict not `proven`: a `proven` run
recorded no blocking finding, `verify.core._verdict`). `live=True` is the former full evaluation
(aggregate over every ledger row, findings of every verified mailbox), kept to prove the two
agree (tests/integration/test_cutover_gate_summary.py) and for the benchmark.
`copied_totals` reads the maintained `mailbox_ledger` rows whose watermark equals the ledger's
newest change and counts the others live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from mailshift.store import waivers as waiver_store

#: a scope is exactly one of these keyword arguments
SCOPES = ("mailbox_ids", "building", "domain", "wave")


@dataclass
class MailboxFacts:
    mailbox_id: int
    address: str
    building_id: str
    domain: str
    proof_id: int | None = None
    verify_run_id: int | None = None
    proof_kind: str | None = None
    verdict: str | None = None
    ledger_as_of: object = None
    proven_at: object = None
    src_messages: int | None = None
    ledger_now: object = None              # max(message.updated_at); None: nothing in the ledger
    has_intent: bool = False               # a message row in state intent (an interrupted copy)
    pass_id: int | None = None             # the latest copy pass
    pass_kind: str | None = None
    pass_status: str | None = None
    pass_started: object = None
    pass_error: str | None = None
    findings: list = field(default_factory=list)   # blocking findings of the latest run
    waivers: list = field(default_factory=list)    # rules.waivers.Waiver, revoked ones included
    # not facts of the proof (the rule ignores them): the copied totals of a fresh mailbox_ledger row
    copied: int | None = None
    bytes_copied: int | None = None
    summary_fresh: bool = False


def _where(scope: dict) -> tuple[str, dict]:
    given = {k: v for k, v in scope.items() if k in SCOPES and v is not None}
    if len(given) != 1 or len(scope) != len(given):
        raise ValueError(f"name exactly one scope of {SCOPES}, got {sorted(scope)}")
    (key, value), = given.items()
    column = {"mailbox_ids": "s.mailbox_id = ANY(%(v)s)", "building": "s.building_id = %(v)s",
              "domain": "s.domain = %(v)s", "wave": "s.wave_id = %(v)s"}[key]
    return column, {"v": list(value) if key == "mailbox_ids" else value}


_INTENT = "EXISTS (SELECT 1 FROM message m WHERE m.mailbox_id = s.mailbox_id AND m.state = 0)"
# the full evaluation: an aggregate over every ledger row of the mailbox, an intent probe
_LIVE = f"""(SELECT max(m.updated_at) FROM message m WHERE m.mailbox_id = s.mailbox_id),
       {_INTENT}, NULL::bigint, NULL::bigint, false"""
# the summary: the newest change as ONE backward probe of message_mailbox_updated_idx; when the
# mailbox_ledger row's watermark equals it (fresh), its intent count and copied totals are used
_SUMMARY = f"""nw.newest,
       CASE WHEN ml.ledger_now IS NOT DISTINCT FROM nw.newest THEN coalesce(ml.n_intent, 0) > 0 ELSE {_INTENT} END,
       ml.n_copied, ml.bytes_copied, ml.ledger_now IS NOT DISTINCT FROM nw.newest"""
_SUMMARY_JOINS = """
LEFT JOIN LATERAL (SELECT m.updated_at AS newest FROM message m WHERE m.mailbox_id = s.mailbox_id
                   ORDER BY m.updated_at DESC LIMIT 1) nw ON true
LEFT JOIN mailbox_ledger ml ON ml.mailbox_id = s.mailbox_id"""

_MAILBOXES = """
SELECT s.mailbox_id, s.address, s.building_id, s.domain,
       lp.id, lp.verify_run_id, lp.kind, lp.verdict, lp.ledger_as_of, lp.proven_at, lp.src_messages,
       {ledger},
       lpass.id, lpass.kind, lpass.status, lpass.started_at, lpass.detail ->> 'error'
FROM mailbox_scope s
LEFT JOIN LATERAL (SELECT p.id, p.verify_run_id, p.kind, p.verdict, p.ledger_as_of, p.proven_at, p.src_messages
                   FROM proof p WHERE p.mailbox_id = s.mailbox_id
                   ORDER BY p.proven_at DESC, p.id DESC LIMIT 1) lp ON true
LEFT JOIN LATERAL (SELECT x.id, x.kind, x.status, x.started_at, x.detail FROM pass x
                   WHERE x.mailbox_id = s.mailbox_id
                   ORDER BY x.started_at DESC, x.id DESC LIMIT 1) lpass ON true{joins}
WHERE {where}
ORDER BY s.building_id, s.address
"""

_FINDINGS = """
SELECT f.mailbox_id, f.id, f.kind, f.folder_id, f.src_uid, f.dest_folder, f.dest_uidvalidity, f.dest_uid,
       f.src_folder, f.detail
FROM unnest(%s::bigint[], %s::int[]) AS latest(run_id, mailbox_id)
JOIN reconciliation r ON r.verify_run_id = latest.run_id
JOIN reconciliation_finding f ON f.reconciliation_id = r.id AND f.mailbox_id = latest.mailbox_id
WHERE f.blocking
ORDER BY f.mailbox_id, f.id
"""


def mailbox_facts(conn, *, live: bool = False, **scope) -> list[MailboxFacts]:
    """Facts for every mailbox of one scope: `mailbox_ids=[...]`, `building=`, `domain=` or `wave=`.
    `live=True`: the full evaluation (scans every ledger row of the scope; same facts)."""
    where, params = _where(scope)
    sql = _MAILBOXES.format(where=where, ledger=_LIVE if live else _SUMMARY, joins="" if live else _SUMMARY_JOINS)
    with conn, conn.cursor() as cur:
        cur.execute("SET LOCAL work_mem = '64MB'")   # the ordered result of a whole domain, in memory
        cur.execute(sql, params)
        facts = []
        for row in cur.fetchall():
            f = MailboxFacts(*row[:13], *row[16:])
            f.copied, f.bytes_copied, f.summary_fresh = row[13], row[14], row[15]
            facts.append(f)
        verified = [f for f in facts if f.verify_run_id is not None and (live or f.verdict != "proven")]
        if verified:
            cur.execute(_FINDINGS, ([f.verify_run_id for f in verified], [f.mailbox_id for f in verified]))
            by_id = {f.mailbox_id: f for f in facts}
            for mid, *rest in cur.fetchall():
                fid, kind, folder_id, src_uid, dest_folder, uidvalidity, dest_uid, src_folder, detail = rest
                by_id[mid].findings.append(SimpleNamespace(
                    id=fid, kind=kind, folder_id=folder_id, src_uid=src_uid, dest_folder=dest_folder,
                    dest_uidvalidity=uidvalidity, dest_uid=dest_uid, src_folder=src_folder, detail=detail,
                    blocking=True, waiver_id=None))
    if facts:
        by_id = {f.mailbox_id: f for f in facts}
        for w in waiver_store.list_waivers(conn, list(by_id)):
            by_id[w.mailbox_id].waivers.append(w)
    return facts


def domain_exists(conn, domain: str) -> bool:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM domain WHERE name = %s", (domain,))
        return cur.fetchone() is not None


def copied_totals(conn, mailbox_ids: list[int]) -> tuple[int, int]:
    """(messages, bytes) in state copied for these mailboxes, counted live: one PK range scan each."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), coalesce(sum(size), 0) FROM message WHERE mailbox_id = ANY(%s) AND state = 1",
                    (list(mailbox_ids),))
        n, b = cur.fetchone()
    return n, int(b)


def summarised_totals(conn, facts: list[MailboxFacts]) -> tuple[int, int, int]:
    """(messages, bytes, mailboxes counted live) in state copied: the totals of the fresh
    `mailbox_ledger` rows read with the facts (watermark == the ledger's newest change); the
    other mailboxes (no row, a row behind or ahead of the ledger) are counted live."""
    stale = [f.mailbox_id for f in facts if not f.summary_fresh]
    n = sum(f.copied or 0 for f in facts if f.summary_fresh)
    b = sum(f.bytes_copied or 0 for f in facts if f.summary_fresh)
    if stale:
        ln, lb = copied_totals(conn, stale)
        n, b = n + ln, b + lb
    return int(n), int(b), len(stale)


def verify_guarantee(conn, run_ids: list[int]) -> dict:
    """What the verify runs guaranteed, from their mailbox-level reconciliation rows: per mode
    (`full`: every message re-read and its digest compared; `sample`: counts, UIDs and metadata
    re-read, full digests compared for `sampled` messages, the rest covered by the ledger) the
    mailboxes, the source messages and the messages whose bytes were compared."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT mode, count(*), coalesce(sum(src_count), 0), coalesce(sum(sampled), 0)"
                    " FROM reconciliation WHERE verify_run_id = ANY(%s) AND level = 'mailbox' GROUP BY mode",
                    (list(run_ids),))
        rows = {mode: (n, int(msgs), int(sampled)) for mode, n, msgs, sampled in cur.fetchall()}
    full, sample = rows.get("full", (0, 0, 0)), rows.get("sample", (0, 0, 0))
    return {"mailboxes_reread_in_full": full[0], "messages_reread_in_full": full[1],
            "mailboxes_ledger_plus_sample": sample[0], "messages_ledger_plus_sample": sample[1],
            "messages_sampled": sample[2]}
