"""What the verifier reads and records: tables verify_run, reconciliation, reconciliation_finding,
proof (the row a verification writes) and gx_validation, plus the ledger reads it compares with
and the reads of the per-building proof report. Every statement of `mailshift.verify` is here;
`rules.proof` decides the proof state from these rows (through `store.proofs`).
"""

from __future__ import annotations

import json

import psycopg2.extras

#: reconciliation columns a row may set (the values dict of `record_mailbox` names a subset)
REC_COLUMNS = ("verify_run_id", "mailbox_id", "folder_id", "level", "dest_folder", "src_folders", "mode",
               "src_count", "dest_count", "ledger_copied", "ledger_other", "ledger_expunged", "src_bytes",
               "dest_bytes", "matched", "missing", "duplicated", "unexpected", "altered", "flags_mismatch",
               "date_mismatch", "folders_missing", "uidl_mismatch", "waived", "expunged_kept",
               "expunged_kept_bytes", "transform_bytes", "transformed", "missing_open", "duplicated_open",
               "altered_open", "unexpected_open", "flags_open", "dates_open", "folders_open", "uidl_open",
               "blocking_open", "src_count_net", "dest_count_net", "src_bytes_net", "dest_bytes_net", "sampled",
               "seconds", "ok", "accepted_altered", "accepted_altered_bytes")
_FINDING_COLUMNS = ("reconciliation_id", "mailbox_id", "folder_id", "kind", "src_uid", "dest_uid", "src_sha256",
                    "dest_sha256", "pop3_uidl", "detail", "blocking", "waiver_id", "src_folder", "dest_folder",
                    "dest_uidvalidity", "src_size", "dest_size", "ledger_state", "alteration_class")
_PROOF_COLUMNS = ("mailbox_id", "verify_run_id", "kind", "verdict", "src_messages", "dest_messages", "matched",
                  "waived", "transformed", "ledger_as_of", "detail")


# -- the ledger the verifier compares with ----------------------------------------------------
def read_ledger(conn, mailbox_id: int) -> tuple[list[tuple], list[tuple], object]:
    """(folders, messages, as_of) of one mailbox, read in one transaction:
    folders (id, src_name, src_uidvalidity, dest_name, state); messages (folder_id, src_uid, state,
    transform, pop3_uidl, dest_uid, size, src_sha256, dest_sha256, detail, transform_detail) with
    the digests as bytes and transform_detail as declared (the X-UIDL fields removed, so the
    verifier reverses exactly that); as_of the ledger's newest change (max(message.updated_at))."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, src_name, src_uidvalidity, dest_name, state FROM folder WHERE mailbox_id = %s",
                    (mailbox_id,))
        folders = cur.fetchall()
        cur.execute("SELECT folder_id, src_uid, state, transform, pop3_uidl, dest_uid, size, src_sha256,"
                    " dest_sha256, detail, transform_detail FROM message WHERE mailbox_id = %s", (mailbox_id,))
        messages = [(f, u, s, t, p, d, z, bytes(a), bytes(b) if b is not None else None, dt, td)
                    for f, u, s, t, p, d, z, a, b, dt, td in cur.fetchall()]
        cur.execute("SELECT max(updated_at) FROM message WHERE mailbox_id = %s", (mailbox_id,))
        as_of = cur.fetchone()[0]
    return folders, messages, as_of


def ledger_counts(conn, mailbox_id: int) -> dict[int, tuple[int, int, int]]:
    """{folder_id: (copied, intent/refused/failed, source_expunged)} of one mailbox."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT folder_id, count(*) FILTER (WHERE state = 1), count(*) FILTER (WHERE state IN (0, 2, 3)),"
                    " count(*) FILTER (WHERE state = 4) FROM message WHERE mailbox_id = %s GROUP BY folder_id",
                    (mailbox_id,))
        return {fid: (a, b, c) for fid, a, b, c in cur.fetchall()}


def folders_by_dest(conn, mailbox_id: int) -> dict[str, list[int]]:
    """{destination folder name: [ledger folder ids mapped to it]} of one mailbox."""
    out: dict[str, list[int]] = {}
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, dest_name FROM folder WHERE mailbox_id = %s", (mailbox_id,))
        for fid, dname in cur.fetchall():
            out.setdefault(dname, []).append(fid)
    return out


def building_mailboxes(conn, building_id: str) -> list[tuple[int, str]] | None:
    """[(mailbox id, address)] of a building in id order; None when the building is unknown."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM building WHERE id = %s", (building_id,))
        if cur.fetchone() is None:
            return None
        cur.execute("SELECT mailbox_id, address FROM mailbox_scope WHERE building_id = %s ORDER BY mailbox_id",
                    (building_id,))
        return cur.fetchall()


# -- verify_run ------------------------------------------------------------------------------
def open_run(conn, scope: str, scope_id: str, kind: str, verifier: str, detail: dict | None = None) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO verify_run (scope, scope_id, kind, verifier, detail) VALUES (%s, %s, %s, %s, %s)"
                    " RETURNING id", (scope, scope_id, kind, verifier, json.dumps(detail or {})))
        return cur.fetchone()[0]


def finish_run(conn, run_id: int, status: str, detail: dict | None = None) -> None:
    """Mark the run finished/failed; `detail` is merged into the run's detail."""
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE verify_run SET status = %s, finished_at = now(),"
                    " detail = coalesce(detail, '{}'::jsonb) || %s::jsonb WHERE id = %s",
                    (status, json.dumps(detail or {}, default=str), run_id))


# -- reconciliation, findings and the proof row ------------------------------------------------
def _insert_reconciliation(cur, values: dict) -> int:
    cols = [c for c in REC_COLUMNS if c in values]
    cur.execute(f"INSERT INTO reconciliation ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
                " RETURNING id", [values[c] for c in cols])
    return cur.fetchone()[0]


def _insert_findings(cur, rec_id: int, mailbox_id: int, findings) -> None:
    rows = [(rec_id, mailbox_id, f.folder_id, f.kind, f.src_uid, f.dest_uid, f.src_sha256, f.dest_sha256,
             f.pop3_uidl, f.detail, f.blocking, f.waiver_id, f.src_folder, f.dest_folder, f.dest_uidvalidity,
             f.src_size, f.dest_size, f.ledger_state, f.alteration_class) for f in findings]
    if rows:
        psycopg2.extras.execute_values(cur, f"INSERT INTO reconciliation_finding ({', '.join(_FINDING_COLUMNS)})"
                                       " VALUES %s", rows, page_size=500)


def record_mailbox(conn, mailbox_id: int, rows: list[tuple[dict, list]], proof: dict) -> tuple[int, int]:
    """Record one mailbox's verification in ONE transaction: each (reconciliation values, findings) of
    `rows` in order (the last one the mailbox-level row), then the proof row (`proof` names the
    columns of `_PROOF_COLUMNS`; its detail gets `reconciliation_id` = the mailbox-level row).
    Returns (mailbox-level reconciliation id, proof id)."""
    rec_id = None
    with conn, conn.cursor() as cur:
        for values, findings in rows:
            rec_id = _insert_reconciliation(cur, values)
            _insert_findings(cur, rec_id, mailbox_id, findings)
        detail = {**(proof.get("detail") or {}), "reconciliation_id": rec_id}
        values = {**proof, "mailbox_id": mailbox_id, "detail": json.dumps(detail, default=str)}
        cur.execute(f"INSERT INTO proof ({', '.join(_PROOF_COLUMNS)})"
                    f" VALUES ({', '.join(['%s'] * len(_PROOF_COLUMNS))}) RETURNING id",
                    [values.get(c) for c in _PROOF_COLUMNS])
        return rec_id, cur.fetchone()[0]


# -- Great Expectations ------------------------------------------------------------------------
def gx_query(run_id: int, columns: tuple[str, ...]) -> str:
    """The query GX's query asset validates: the run's mailbox-level reconciliation rows with the
    mailbox address (for naming unexpected rows) and the given extra reconciliation columns."""
    return ("SELECT r.mailbox_id, m.address, r.src_count, r.dest_count, r.src_count_net, r.dest_count_net,"
            " r.src_bytes, r.dest_bytes, r.src_bytes_net, r.dest_bytes_net, r.transform_bytes, r.expunged_kept,"
            " r.waived, " + ", ".join(f"r.{c}" for c in columns) +
            " FROM reconciliation r JOIN mailbox m ON m.id = r.mailbox_id"
            f" WHERE r.verify_run_id = {int(run_id)} AND r.level = 'mailbox'")


def store_gx_validation(conn, run_id: int, suite: str, success: bool, evaluated: int, failed: int,
                        result: dict, report_path: str | None) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO gx_validation (verify_run_id, suite, success, evaluated, failed, result, report_path)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (run_id, suite, success, evaluated, failed, json.dumps(result), report_path))
        return cur.fetchone()[0]


# -- the per-building proof report -------------------------------------------------------------
def report_rows(conn, building_id: str, run_id: int) -> dict:
    """Everything the building's proof report shows of one verify run:
    building (name, domain, source_system), spec (the building's spec), run (started_at, verifier, kind, detail), mailboxes (one
    tuple per mailbox of the building: id, address, protocol and its mailbox-level reconciliation
    figures, NULLs when it was not verified in this run) and findings (every finding of the run)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT name, domain, source_system, spec FROM building WHERE id = %s", (building_id,))
        *building, spec = cur.fetchone()
        cur.execute("SELECT started_at, verifier, kind, detail FROM verify_run WHERE id = %s", (run_id,))
        run = cur.fetchone()
        cur.execute("SELECT s.mailbox_id, s.address, s.protocol, r.src_count, r.dest_count, r.src_bytes,"
                    " r.dest_bytes, r.matched, r.transformed, r.transform_bytes, r.expunged_kept, r.waived,"
                    " r.blocking_open, r.mode, r.sampled, r.seconds, r.accepted_altered FROM mailbox_scope s"
                    " LEFT JOIN reconciliation r ON r.mailbox_id = s.mailbox_id AND r.verify_run_id = %s"
                    " AND r.level = 'mailbox' WHERE s.building_id = %s ORDER BY s.mailbox_id",
                    (run_id, building_id))
        mailboxes = cur.fetchall()
        cur.execute("SELECT f.id, m.address, f.kind, f.blocking, f.src_folder, f.dest_folder, f.src_uid, f.dest_uid,"
                    " f.pop3_uidl, f.detail, f.waiver_id, f.alteration_class FROM reconciliation_finding f"
                    " JOIN reconciliation r ON r.id = f.reconciliation_id JOIN mailbox m ON m.id = f.mailbox_id"
                    " WHERE r.verify_run_id = %s ORDER BY m.id, f.blocking DESC, f.id", (run_id,))
        findings = cur.fetchall()
    return {"building": tuple(building), "spec": spec, "run": run, "mailboxes": mailboxes, "findings": findings}
