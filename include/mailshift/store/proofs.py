"""What the database knows about the proof of each mailbox in a scope, read in a few set queries.

`mailbox_facts` gathers, per mailbox: the latest `proof` row, the ledger's newest change, whether
an intent row is left, the latest copy `pass`, the blocking findings of the latest verification
run and every waiver (revoked ones too, for display). It decides nothing: the decision is
`mailshift.rules.proof.decide`, the one definition of "proven".

At scale (500,000 mailboxes, 1e8 ledger rows) nothing here scans the ledger: the latest pass and
proof are the `mailbox_latest` row kept by triggers (migration 0012); the newest change is one
backward probe of `message_mailbox_updated_idx` (migration 0009), read live so that a summary is
never trusted on a changed ledger; an intent row comes from the `mailbox_ledger` row when its
watermark equals that probe, else one probe of the partial `message_unsettled_idx`; findings are
read only for mailboxes whose latest proof recorded some (verdict not `proven`: a `proven` run
recorded no blocking finding, `verify.core._verdict`). A domain or wave is read in chunks of
whole buildings, in building order, over up to `CONNECTIONS` connections at once (the probes are
per mailbox and run in parallel; the caller decides one chunk while the next is read).
`live=True` is the former full evaluation (aggregate over every ledger row, `pass` and `proof`
probed, findings of every verified mailbox), kept to prove the two agree
(tests/integration/test_cutover_gate_summary.py) and for the benchmark.
`copied_totals` reads the maintained `mailbox_ledger` rows whose watermark equals the ledger's
newest change and counts the others live.
"""

from __future__ import annotations

import contextlib
import gc
import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import psycopg2

from mailshift.store import waivers as waiver_store

#: a scope is exactly one of these keyword arguments
SCOPES = ("mailbox_ids", "building", "domain", "wave")
#: a domain or wave is read in chunks of whole buildings of about this many households ...
CHUNK_HOUSEHOLDS = 80_000
#: ... over at most this many connections at once (the caller's and siblings opened for the read)
CONNECTIONS = 3


@dataclass(slots=True)
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
    # not facts of the proof (the rule ignores them): the copied totals of a fresh mailbox_ledger row
    copied: int | None = None
    bytes_copied: int | None = None
    summary_fresh: bool = False
    findings: list = field(default_factory=list)   # blocking findings of the latest run
    waivers: list = field(default_factory=list)    # rules.waivers.Waiver, revoked ones included


def _where(scope: dict) -> tuple[str, dict]:
    given = {k: v for k, v in scope.items() if k in SCOPES and v is not None}
    if len(given) != 1 or len(scope) != len(given):
        raise ValueError(f"name exactly one scope of {SCOPES}, got {sorted(scope)}")
    (key, value), = given.items()
    column = {"mailbox_ids": "s.mailbox_id = ANY(%(v)s)", "building": "s.building_id = %(v)s",
              "domain": "s.domain = %(v)s", "wave": "s.wave_id = %(v)s"}[key]
    return column, {"v": list(value) if key == "mailbox_ids" else value}


_INTENT = "EXISTS (SELECT 1 FROM message m WHERE m.mailbox_id = s.mailbox_id AND m.state = 0)"
# the full evaluation: an aggregate over every ledger row of the mailbox, an intent probe, the
# latest proof and pass probed in their tables
_LIVE = f"""(SELECT max(m.updated_at) FROM message m WHERE m.mailbox_id = s.mailbox_id),
       {_INTENT}"""
_LIVE_TOTALS = "NULL::bigint, NULL::bigint, false"
_LIVE_JOINS = """
LEFT JOIN LATERAL (SELECT p.id AS proof_id, p.verify_run_id, p.kind AS proof_kind, p.verdict, p.ledger_as_of,
                          p.proven_at, p.src_messages
                   FROM proof p WHERE p.mailbox_id = s.mailbox_id
                   ORDER BY p.proven_at DESC, p.id DESC LIMIT 1) lp ON true
LEFT JOIN LATERAL (SELECT x.id AS pass_id, x.kind AS pass_kind, x.status AS pass_status, x.started_at AS pass_started,
                          x.detail ->> 'error' AS pass_error
                   FROM pass x WHERE x.mailbox_id = s.mailbox_id
                   ORDER BY x.started_at DESC, x.id DESC LIMIT 1) lx ON true"""
# the summary: the latest proof and pass from mailbox_latest (0012); the newest change as ONE
# backward probe of message_mailbox_updated_idx; when the mailbox_ledger row's watermark equals
# it (fresh), its intent count and copied totals are used
_SUMMARY = f"""nw.newest,
       CASE WHEN ml.ledger_now IS NOT DISTINCT FROM nw.newest THEN coalesce(ml.n_intent, 0) > 0 ELSE {_INTENT} END"""
_SUMMARY_TOTALS = "ml.n_copied, ml.bytes_copied, ml.ledger_now IS NOT DISTINCT FROM nw.newest"
_SUMMARY_JOINS = """
LEFT JOIN mailbox_latest lt ON lt.mailbox_id = s.mailbox_id
LEFT JOIN LATERAL (SELECT m.updated_at AS newest FROM message m WHERE m.mailbox_id = s.mailbox_id
                   ORDER BY m.updated_at DESC LIMIT 1) nw ON true
LEFT JOIN mailbox_ledger ml ON ml.mailbox_id = s.mailbox_id"""

# columns in MailboxFacts' order: the row is the dataclass's positional arguments
_MAILBOXES = """
SELECT s.mailbox_id, s.address, s.building_id, s.domain,
       proof_id, verify_run_id, proof_kind, verdict, ledger_as_of, proven_at, src_messages,
       {ledger},
       pass_id, pass_kind, pass_status, pass_started, pass_error,
       {totals}
FROM mailbox_scope s{joins}
WHERE {where}{chunk}
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

# the buildings of a domain or wave with their household counts, to cut it into chunks
# (households, not mailboxes: 0.13 s instead of 1.0 s at 400,000 households; the ranges cover
# every building whatever the counts)
_BUILDINGS = """SELECT b.id, count(*) FROM building b JOIN household h ON h.building_id = b.id
WHERE {where} GROUP BY 1 ORDER BY 1"""
_BUILDING_WHERE = {"domain": "b.domain = %(v)s", "wave": "b.wave_id = %(v)s"}


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection while hundreds of thousands of facts and proof states are
    built (none of them form cycles; measured: the collector's passes over them cost more than
    building them: 2.4 -> 0.8 us a MailboxFacts, 4.0 -> 1.8 us a decision)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def mailbox_facts(conn, *, live: bool = False, **scope) -> list[MailboxFacts]:
    """Facts for every mailbox of one scope: `mailbox_ids=[...]`, `building=`, `domain=` or `wave=`,
    ordered by building and address. `live=True`: the full evaluation (scans every ledger row of
    the scope; same facts)."""
    with gc_paused():
        return [f for chunk in facts_in_chunks(conn, live=live, **scope) for f in chunk]


def facts_in_chunks(conn, *, live: bool = False, connections: int = CONNECTIONS,
                    **scope) -> Iterator[list[MailboxFacts]]:
    """`mailbox_facts` as consecutive chunks of whole buildings, in order. A domain or wave larger
    than one chunk is read over up to `connections` connections (siblings of `conn`, same
    database and role, closed at the end): the next chunks are read while the caller works on
    this one. Do not use `conn` until the iteration ends."""
    where, params = _where(scope)
    by = next((k for k in _BUILDING_WHERE if scope.get(k) is not None), None)
    bounds = _chunk_bounds(conn, _BUILDING_WHERE[by], params) if by else [(None, None)]
    if len(bounds) == 1 or connections <= 1:
        for lo, hi in bounds:
            yield _read_chunk(conn, where, params, lo, hi, live)
        return
    siblings = _siblings(conn, min(connections, len(bounds)) - 1)
    idle: queue.Queue = queue.Queue()
    for c in [conn, *siblings]:
        idle.put(c)

    def read(lo, hi):
        c = idle.get()
        try:
            return _read_chunk(c, where, params, lo, hi, live)
        finally:
            idle.put(c)

    pool = ThreadPoolExecutor(1 + len(siblings), thread_name_prefix="mailbox-facts")
    try:
        for fut in [pool.submit(read, lo, hi) for lo, hi in bounds]:
            yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for c in siblings:
            c.close()


def _chunk_bounds(conn, where: str, params: dict) -> list[tuple[str | None, str | None]]:
    with conn, conn.cursor() as cur:
        cur.execute(_BUILDINGS.format(where=where), params)
        return chunk_bounds(cur.fetchall(), CHUNK_HOUSEHOLDS)


def chunk_bounds(counts: list[tuple[str, int]], size: int) -> list[tuple[str | None, str | None]]:
    """Half-open building ranges [lo, hi) of whole buildings, about `size` households each, from
    (building, households) in building order. The first range has no lower and the last no upper
    bound, so a building added meanwhile is still read, exactly once."""
    starts, n = [], 0
    for building, mailboxes in counts:
        if n >= size:
            starts.append(building)
            n = 0
        n += mailboxes
    edges = [None, *starts, None]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _siblings(conn, n: int) -> list:
    """Up to `n` more connections to `conn`'s database as its role; none if they cannot be opened
    (the read then runs on `conn` alone: slower, the same facts)."""
    params = {k: v for k, v in conn.get_dsn_parameters().items() if v}
    params["password"] = conn.info.password
    params["application_name"] = "mailshift-facts"
    out = []
    for _ in range(n):
        try:
            out.append(psycopg2.connect(**params))
        except psycopg2.Error:
            break
    return out


def _read_chunk(conn, where: str, params: dict, lo: str | None, hi: str | None, live: bool) -> list[MailboxFacts]:
    chunk = (" AND s.building_id >= %(lo)s" if lo is not None else "") + \
            (" AND s.building_id < %(hi)s" if hi is not None else "")
    sql = _MAILBOXES.format(where=where, chunk=chunk, ledger=_LIVE if live else _SUMMARY,
                            totals=_LIVE_TOTALS if live else _SUMMARY_TOTALS,
                            joins=_LIVE_JOINS if live else _SUMMARY_JOINS)
    with conn, conn.cursor() as cur:
        cur.execute("SET LOCAL work_mem = '64MB'")   # the ordered result of a chunk, in memory
        # no JIT: its cost model sees 64 partitions x 2 probes and compiles ~400 functions (7.6 s a
        # chunk, measured at 500,000 mailboxes) for a query of index probes that it cannot speed up
        cur.execute("SET LOCAL jit = off")
        # the chunks run side by side on their own connections: no parallel workers under each
        cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cur.execute(sql, {**params, "lo": lo, "hi": hi})
        facts = [MailboxFacts(*row) for row in cur.fetchall()]
        verified = [f for f in facts if f.verify_run_id is not None and (live or f.verdict != "proven")]
        if verified:
            _add_findings(cur, facts, verified)
    if facts:
        by_id = {f.mailbox_id: f for f in facts}
        for w in waiver_store.list_waivers(conn, list(by_id)):
            by_id[w.mailbox_id].waivers.append(w)
    return facts


def _add_findings(cur, facts: list[MailboxFacts], verified: list[MailboxFacts]) -> None:
    cur.execute(_FINDINGS, ([f.verify_run_id for f in verified], [f.mailbox_id for f in verified]))
    by_id = {f.mailbox_id: f for f in facts}
    for mid, *rest in cur.fetchall():
        fid, kind, folder_id, src_uid, dest_folder, uidvalidity, dest_uid, src_folder, detail = rest
        by_id[mid].findings.append(SimpleNamespace(
            id=fid, kind=kind, folder_id=folder_id, src_uid=src_uid, dest_folder=dest_folder,
            dest_uidvalidity=uidvalidity, dest_uid=dest_uid, src_folder=src_folder, detail=detail,
            blocking=True, waiver_id=None))


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
