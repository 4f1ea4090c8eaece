"""The copier's reads and writes of the ledger (tables pass, folder, message).

Every method commits before it returns: the ledger is the only memory the copier has, so a
kill at any moment leaves it describing exactly what was done. The order that makes APPEND
exactly-once is: write intents (state 0, dest_uid = the destination's UIDNEXT before the
APPEND) → commit → APPEND → mark copied with the real destination UID → commit. A crash in
between leaves intents, which the next run resolves by looking at the destination.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import psycopg2.extras
from psycopg2.extensions import connection as PgConnection

from mailshift.rules import states

#: message state 5 (migration 0008): stored at the destination but not byte-identical (rules.states)
ALTERED = states.ALTERED


@dataclass(frozen=True)
class FolderRow:
    id: int
    src_name: str
    src_uidvalidity: int
    dest_name: str
    dest_uidvalidity: int | None
    created: bool


@dataclass(frozen=True)
class LedgerRow:
    src_uid: int
    state: int
    dest_uid: int | None
    size: int
    sys_flags: int
    keywords: tuple[str, ...]
    src_sha256: bytes
    dest_sha256: bytes | None
    transform: int
    pop3_uidl: str | None
    detail: str | None
    transform_detail: dict | None = None

    @property
    def dest_size(self) -> int:
        """Size of the appended bytes: the source size plus a declared X-UIDL header line, minus
        the stale X-UIDL fields it replaced."""
        if self.transform == states.Transform.X_UIDL and self.pop3_uidl is not None:
            removed = sum(len(h) // 2 for _, h in (self.transform_detail or {}).get("removed", []))
            return self.size + len(states.x_uidl_header(self.pop3_uidl)) - removed
        return self.size

    @property
    def dest_digest(self) -> bytes:
        """Digest of the bytes that were appended (differs from the source only if transformed)."""
        return self.dest_sha256 or self.src_sha256


@dataclass(frozen=True)
class Intent:
    """A message about to be appended, as it will be recorded."""

    src_uid: int
    size: int
    internal_date: datetime
    sys_flags: int
    keywords: tuple[str, ...]
    src_sha256: bytes
    dest_sha256: bytes | None
    transform: int
    pop3_uidl: str | None
    dest_size: int
    #: what the transformation removed from the source: {"removed": [[offset, hex], ...]} or None
    transform_detail: dict | None = None


class CopyStore:
    """Ledger access for one mailbox pass. Not thread-safe: one per worker."""

    def __init__(self, conn: PgConnection):
        self.conn = conn

    # -- passes -------------------------------------------------------------------------
    def open_pass(self, mailbox_id: int, kind: str) -> int:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO pass (mailbox_id, kind, status, started_at) VALUES (%s, %s, 'running', now())"
                " RETURNING id",
                (mailbox_id, kind),
            )
            return cur.fetchone()[0]

    def finish_pass(self, pass_id: int, status: str, summary: dict) -> None:
        with self.conn, self.conn.cursor() as cur:
            counters = {k: v for k, v in summary.items() if isinstance(v, int)}
            cur.execute(
                "UPDATE pass SET status = %s, finished_at = now(), counters = %s, detail = %s WHERE id = %s",
                (status, psycopg2.extras.Json(counters), psycopg2.extras.Json(summary), pass_id),
            )

    # -- folders ------------------------------------------------------------------------
    def folder(self, mailbox_id: int, src_name: str, src_uidvalidity: int, dest_name: str,
               special_use: str | None, subscribed: bool, note: str | None) -> FolderRow:
        """Get or create the folder row of this source folder and UIDVALIDITY epoch."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO folder (mailbox_id, src_name, src_uidvalidity, dest_name, special_use,"
                " subscribed, state, detail) VALUES (%s, %s, %s, %s, %s, %s, 'active', %s)"
                " ON CONFLICT (mailbox_id, src_name, src_uidvalidity) DO UPDATE SET"
                " subscribed = EXCLUDED.subscribed, state = 'active'"
                " RETURNING id, dest_name, dest_uidvalidity, (xmax = 0)",
                (mailbox_id, src_name, src_uidvalidity, dest_name, special_use, subscribed, note),
            )
            fid, dname, duv, created = cur.fetchone()
        return FolderRow(fid, src_name, src_uidvalidity, dname, duv, created)

    def older_epochs(self, mailbox_id: int, src_name: str, uidvalidity: int) -> list[int]:
        """Folder ids of the same source name under an earlier UIDVALIDITY, not yet superseded
        (`supersede_epoch`) and not a refusal placeholder (UIDVALIDITY 0)."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM folder WHERE mailbox_id = %s AND src_name = %s AND src_uidvalidity <> %s"
                " AND src_uidvalidity <> 0 AND (detail IS NULL OR detail NOT LIKE 'superseded:%%')",
                (mailbox_id, src_name, uidvalidity),
            )
            return [r[0] for r in cur.fetchall()]

    def set_dest_uidvalidity(self, folder_id: int, dest_uidvalidity: int) -> None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute("UPDATE folder SET dest_uidvalidity = %s WHERE id = %s", (dest_uidvalidity, folder_id))

    def mark_folders_gone(self, mailbox_id: int, present: list[str]) -> list[str]:
        """Folders seen before but no longer at the source: reported, never deleted."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "UPDATE folder SET state = 'gone' WHERE mailbox_id = %s AND state = 'active'"
                " AND NOT (src_name = ANY(%s)) RETURNING src_name",
                (mailbox_id, present),
            )
            return sorted({r[0] for r in cur.fetchall()})

    def mark_folder_unmappable(self, mailbox_id: int, src_name: str, detail: str) -> None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO folder (mailbox_id, src_name, src_uidvalidity, dest_name, subscribed, state, detail)"
                " VALUES (%s, %s, 0, '', false, 'unmappable', %s)"
                " ON CONFLICT (mailbox_id, src_name, src_uidvalidity) DO UPDATE SET detail = EXCLUDED.detail",
                (mailbox_id, src_name, detail),
            )

    def clear_folder_refusal(self, mailbox_id: int, src_name: str) -> None:
        """The folder copies now: forget an earlier recorded refusal of it (its placeholder row)."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "DELETE FROM folder WHERE mailbox_id = %s AND src_name = %s AND src_uidvalidity = 0"
                " AND state = 'unmappable' AND NOT EXISTS (SELECT 1 FROM message m WHERE m.mailbox_id = %s"
                " AND m.folder_id = folder.id)",
                (mailbox_id, src_name, mailbox_id),
            )

    # -- messages -----------------------------------------------------------------------
    def rows(self, mailbox_id: int, folder_id: int) -> dict[int, LedgerRow]:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT src_uid, state, dest_uid, size, sys_flags, keywords, src_sha256, dest_sha256,"
                " transform, pop3_uidl, detail, transform_detail FROM message"
                " WHERE mailbox_id = %s AND folder_id = %s",
                (mailbox_id, folder_id),
            )
            out = {}
            for uid, state, duid, size, sflags, kw, ssha, dsha, tr, uidl, detail, tdetail in cur:
                out[uid] = LedgerRow(uid, state, duid, size, sflags, tuple(kw or ()), bytes(ssha),
                                     bytes(dsha) if dsha is not None else None, tr, uidl, detail, tdetail)
            return out

    def write_intents(self, mailbox_id: int, folder_id: int, pass_id: int, floor_uid: int,
                      intents: list[Intent]) -> None:
        """Record that these messages are about to be appended at UID >= floor_uid."""
        with self.conn, self.conn.cursor() as cur:
            self._insert_intents(cur, mailbox_id, folder_id, pass_id, floor_uid, intents)

    @staticmethod
    def _insert_intents(cur, mailbox_id: int, folder_id: int, pass_id: int, floor_uid: int,
                        intents: list[Intent]) -> None:
        # One array per column and one INSERT ... SELECT FROM unnest: psycopg2 quotes arrays in C,
        # where execute_values built every row's SQL text in Python (a tenth of the copier's CPU).
        # Keywords travel space-joined (an IMAP keyword is an atom: it cannot hold a space).
        columns = (
            [i.src_uid for i in intents], [i.size for i in intents], [i.internal_date for i in intents],
            [i.sys_flags for i in intents], [" ".join(i.keywords) for i in intents],
            [i.src_sha256 for i in intents], [i.dest_sha256 for i in intents],
            [int(i.transform) for i in intents], [i.pop3_uidl for i in intents],
            [json.dumps(i.transform_detail) if i.transform_detail else None for i in intents],
        )
        cur.execute(
            "INSERT INTO message (mailbox_id, folder_id, src_uid, dest_uid, size, internal_date, state,"
            " sys_flags, keywords, src_sha256, dest_sha256, transform, pop3_uidl, pass_id, transform_detail)"
            " SELECT %s, %s, v.uid, %s, v.size, v.idate, %s, v.sflags,"
            " NULLIF(string_to_array(v.kw, ' '), '{}'), v.ssha, v.dsha, v.tr, v.uidl, %s, v.td::jsonb"
            " FROM unnest(%s::bigint[], %s::int[], %s::timestamptz[], %s::smallint[], %s::text[],"
            " %s::bytea[], %s::bytea[], %s::smallint[], %s::text[], %s::text[])"
            " AS v(uid, size, idate, sflags, kw, ssha, dsha, tr, uidl, td)"
            " ON CONFLICT (mailbox_id, folder_id, src_uid) DO UPDATE SET dest_uid = EXCLUDED.dest_uid,"
            " state = EXCLUDED.state, sys_flags = EXCLUDED.sys_flags, keywords = EXCLUDED.keywords,"
            " src_sha256 = EXCLUDED.src_sha256, dest_sha256 = EXCLUDED.dest_sha256,"
            " transform = EXCLUDED.transform, pop3_uidl = EXCLUDED.pop3_uidl, pass_id = EXCLUDED.pass_id,"
            " transform_detail = EXCLUDED.transform_detail,"
            " detail = NULL, updated_at = now()",
            (mailbox_id, folder_id, floor_uid, states.INTENT, pass_id, *columns),
        )

    def _set_state(self, mailbox_id: int, folder_id: int, state: int, values: list[tuple],
                   column: str) -> None:
        if not values:
            return
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                f"UPDATE message AS m SET state = %s, {column} = v.val, updated_at = now()"
                f" FROM unnest(%s::bigint[], %s::{'bigint' if column == 'dest_uid' else 'text'}[])"
                " AS v(uid, val) WHERE m.mailbox_id = %s AND m.folder_id = %s AND m.src_uid = v.uid",
                (state, [v[0] for v in values], [v[1] for v in values], mailbox_id, folder_id),
            )

    def mark_copied(self, mailbox_id: int, folder_id: int, pairs: list[tuple[int, int]]) -> None:
        """[(src_uid, dest_uid)] landed at the destination."""
        self._set_state(mailbox_id, folder_id, states.COPIED, pairs, "dest_uid")

    def mark_altered(self, mailbox_id: int, folder_id: int, rows: list[tuple[int, int, str]]) -> None:
        """[(src_uid, dest_uid, "<class>: <evidence>")]: stored, but not the appended bytes."""
        if not rows:
            return
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "UPDATE message AS m SET state = %s, dest_uid = v.duid, detail = v.detail, updated_at = now()"
                " FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(uid, duid, detail)"
                " WHERE m.mailbox_id = %s AND m.folder_id = %s AND m.src_uid = v.uid",
                (ALTERED, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], mailbox_id, folder_id))

    def mark_refused(self, mailbox_id: int, folder_id: int, reasons: list[tuple[int, str]]) -> None:
        """[(src_uid, the destination's words)]: the destination said NO."""
        self._set_state(mailbox_id, folder_id, states.REFUSED, reasons, "detail")

    def drop_intents(self, mailbox_id: int, folder_id: int, uids: list[int]) -> None:
        """Intents proven NOT to have landed: forget them so they are appended again."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "DELETE FROM message WHERE mailbox_id = %s AND folder_id = %s AND state = %s"
                " AND src_uid = ANY(%s)",
                (mailbox_id, folder_id, states.INTENT, uids),
            )

    def update_flags(self, mailbox_id: int, folder_id: int, changes: list[tuple[int, int, tuple]]) -> None:
        """[(src_uid, sys_flags, keywords)] after the destination's flags were set to match."""
        with self.conn, self.conn.cursor() as cur:
            for uid, sflags, kw in changes:
                cur.execute(
                    "UPDATE message SET sys_flags = %s, keywords = %s, updated_at = now()"
                    " WHERE mailbox_id = %s AND folder_id = %s AND src_uid = %s",
                    (sflags, list(kw) or None, mailbox_id, folder_id, uid),
                )

    def mark_source_expunged(self, mailbox_id: int, folder_id: int, uids: list[int]) -> None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "UPDATE message SET state = %s, updated_at = now() WHERE mailbox_id = %s AND folder_id = %s"
                " AND src_uid = ANY(%s) AND state = %s",
                (states.SOURCE_EXPUNGED, mailbox_id, folder_id, uids, states.COPIED),
            )

    def supersede_epoch(self, mailbox_id: int, folder_id: int, pass_id: int, old_folder_ids: list[int],
                        moved: list[tuple[Intent, int, int, int]], uidvalidity: int) -> int:
        """The source folder came back under a new UIDVALIDITY: in ONE transaction, re-key the
        messages found again (`moved`: (new intent, dest_uid, old folder id, old src_uid)) to the
        new epoch's folder as copied, delete their old rows, turn the old epoch's other copied
        rows into source_expunged (gone at the source since), and mark the old folder rows gone.
        No message is ever counted twice. Returns how many old copied rows became expunged."""
        with self.conn, self.conn.cursor() as cur:
            if moved:
                self._insert_intents(cur, mailbox_id, folder_id, pass_id, 1, [m[0] for m in moved])
                cur.execute(
                    "UPDATE message AS m SET state = %s, dest_uid = v.duid, updated_at = now()"
                    " FROM unnest(%s::bigint[], %s::bigint[]) AS v(uid, duid)"
                    " WHERE m.mailbox_id = %s AND m.folder_id = %s AND m.src_uid = v.uid",
                    (states.COPIED, [m[0].src_uid for m in moved], [m[1] for m in moved], mailbox_id, folder_id))
                cur.execute(
                    "DELETE FROM message AS m USING unnest(%s::int[], %s::bigint[]) AS v(fid, uid)"
                    " WHERE m.mailbox_id = %s AND m.folder_id = v.fid AND m.src_uid = v.uid",
                    ([m[2] for m in moved], [m[3] for m in moved], mailbox_id))
            cur.execute(
                "UPDATE message SET state = %s, updated_at = now() WHERE mailbox_id = %s"
                " AND folder_id = ANY(%s) AND state = %s",
                (states.SOURCE_EXPUNGED, mailbox_id, old_folder_ids, states.COPIED))
            expunged = cur.rowcount
            cur.execute(
                "UPDATE folder SET state = 'gone', detail = %s WHERE mailbox_id = %s AND id = ANY(%s)",
                (f"superseded: the source folder's UIDVALIDITY is now {uidvalidity}; messages found again "
                 f"were moved to folder {folder_id}", mailbox_id, old_folder_ids))
        return expunged

    def claimed_dest_uids(self, mailbox_id: int, dest_name: str) -> set[int]:
        """Destination UIDs already owned by copied rows of any source folder mapped to dest_name."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute(
                "SELECT m.dest_uid FROM message m JOIN folder f ON f.id = m.folder_id"
                " WHERE m.mailbox_id = %s AND f.dest_name = %s AND m.state IN (%s, %s, %s)",
                (mailbox_id, dest_name, states.COPIED, states.SOURCE_EXPUNGED, ALTERED),
            )
            return {r[0] for r in cur.fetchall()}


def declared_server(conn: PgConnection, system_id: str) -> dict | None:
    """What systems.yaml declared for a source system (imap_host, imap_port, pop3_port, tls), for
    the preflight's comparison with the connection actually used; None if unknown."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT imap_host, imap_port, pop3_port, tls FROM source_system WHERE id = %s", (system_id,))
        row = cur.fetchone()
    if row is None:
        return None
    return dict(zip(("imap_host", "imap_port", "pop3_port", "tls"), row, strict=True))
