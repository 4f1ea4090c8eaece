"""`waiver` rows: create (validated, four eyes), revoke (the row stays), list."""

from __future__ import annotations

import psycopg2

from mailshift.errors import WaiverError
from mailshift.rules.waivers import Waiver

_COLS = ("w.id, w.mailbox_id, w.scope, w.folder_id, f.src_name, w.src_uid, w.dest_folder, w.dest_uidvalidity,"
         " w.dest_uid, w.reason, w.requested_by, w.approved_by, w.approved_at, w.revoked_at, w.revoked_by")


def list_waivers(conn, mailbox_ids: list[int], include_revoked: bool = True) -> list[Waiver]:
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT {_COLS} FROM waiver w LEFT JOIN folder f ON f.id = w.folder_id"
                    " WHERE w.mailbox_id = ANY(%s)" + ("" if include_revoked else " AND w.revoked_at IS NULL")
                    + " ORDER BY w.mailbox_id, w.id", (list(mailbox_ids),))
        return [Waiver(*row) for row in cur.fetchall()]


def _mailbox_id(conn, mailbox) -> int:
    from mailshift.copy.copy_one import mailbox_context

    return mailbox_context(conn, mailbox).mailbox.id


def create_waiver(conn, mailbox, approved_by: str, reason: str, *, finding_id: int | None = None,
                  folder: str | None = None, src_uid: int | None = None, dest_folder: str | None = None,
                  dest_uid: int | None = None, whole_mailbox: bool = False,
                  requested_by: str | None = None) -> Waiver:
    """Record a waiver. Exactly one target: a finding, a folder [+ UID], a destination message, or
    the whole mailbox. Raises WaiverError with a clear message for anything missing or unknown."""
    if not approved_by or not approved_by.strip():
        raise WaiverError("a waiver needs the name of the person approving it (--by)")
    if not reason or not reason.strip():
        raise WaiverError("a waiver needs a reason (--reason)")
    if requested_by is not None and requested_by.strip() == approved_by.strip():
        raise WaiverError("the approver must not be the requester (four eyes)")
    targets = sum(x for x in (finding_id is not None, folder is not None, dest_folder is not None, whole_mailbox))
    if targets != 1:
        raise WaiverError("name exactly one target: --finding ID, --folder NAME [--uid N], "
                          "--dest-folder NAME --dest-uid N, or --whole-mailbox")
    if src_uid is not None and folder is None:
        raise WaiverError("--uid needs --folder (the source folder of that UID)")
    if (dest_folder is None) != (dest_uid is None):
        raise WaiverError("--dest-folder and --dest-uid go together")
    mid = _mailbox_id(conn, mailbox)
    scope, folder_id, uidvalidity = None, None, None
    with conn, conn.cursor() as cur:
        if finding_id is not None:
            cur.execute("SELECT mailbox_id, kind, folder_id, src_uid, dest_folder, dest_uidvalidity, dest_uid,"
                        " blocking FROM reconciliation_finding WHERE id = %s", (finding_id,))
            row = cur.fetchone()
            if row is None:
                raise WaiverError(f"no finding #{finding_id}")
            fmid, kind, folder_id, src_uid, dest_folder, uidvalidity, dest_uid, blocking = row
            if fmid != mid:
                raise WaiverError(f"finding #{finding_id} belongs to another mailbox (id {fmid})")
            if not blocking:
                raise WaiverError(f"finding #{finding_id} ({kind}) does not block the proof; nothing to waive")
            if kind == "folder_missing":
                scope, src_uid, dest_folder, dest_uid = "folder", None, None, None
            elif src_uid is not None and folder_id is not None:
                scope, dest_folder, dest_uid, uidvalidity = "message", None, None, None
            elif src_uid is None and dest_uid is not None:
                scope, folder_id = "dest_message", None
            elif kind == "uidl_mismatch":
                raise WaiverError(f"finding #{finding_id} names no message in the ledger; waive the folder "
                                  "or the whole mailbox instead")
            else:
                raise WaiverError(f"finding #{finding_id} ({kind}) names no message of the ledger: "
                                  "waive its folder or the whole mailbox instead")
            if scope in ("folder", "message") and folder_id is None:
                raise WaiverError(f"finding #{finding_id}: its source folder is not in the ledger (never "
                                  "copied); run a copy pass first, or waive the whole mailbox")
        elif folder is not None:
            cur.execute("SELECT id FROM folder WHERE mailbox_id = %s AND src_name = %s"
                        " ORDER BY (state = 'active') DESC, id DESC LIMIT 1", (mid, folder))
            row = cur.fetchone()
            if row is None:
                raise WaiverError(f"mailbox {mailbox}: no source folder {folder!r} in the ledger")
            folder_id = row[0]
            scope = "folder"
            if src_uid is not None:
                cur.execute("SELECT 1 FROM message WHERE mailbox_id = %s AND folder_id = %s AND src_uid = %s",
                            (mid, folder_id, src_uid))
                if cur.fetchone() is None:
                    raise WaiverError(f"mailbox {mailbox}: folder {folder!r} has no source UID {src_uid} "
                                      "in the ledger")
                scope = "message"
        elif dest_folder is not None:
            cur.execute("SELECT dest_uidvalidity FROM reconciliation_finding WHERE mailbox_id = %s AND"
                        " dest_folder = %s AND dest_uid = %s AND src_uid IS NULL ORDER BY id DESC LIMIT 1",
                        (mid, dest_folder, dest_uid))
            row = cur.fetchone()
            if row is None or row[0] is None:
                raise WaiverError(f"mailbox {mailbox}: no verification finding names destination "
                                  f"{dest_folder!r} UID {dest_uid} as an extra message; verify first")
            uidvalidity = row[0]
            scope = "dest_message"
        else:
            scope = "mailbox"
        try:
            cur.execute("INSERT INTO waiver (mailbox_id, folder_id, src_uid, finding_id, scope, reason,"
                        " requested_by, approved_by, dest_folder, dest_uidvalidity, dest_uid)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                        (mid, folder_id if scope in ("folder", "message") else None,
                         src_uid if scope == "message" else None, finding_id, scope, reason.strip(),
                         requested_by, approved_by.strip(), dest_folder if scope == "dest_message" else None,
                         uidvalidity if scope == "dest_message" else None,
                         dest_uid if scope == "dest_message" else None))
        except psycopg2.IntegrityError as exc:
            raise WaiverError(f"waiver refused by the database: {exc.pgerror or exc}".strip()) from exc
        wid = cur.fetchone()[0]
    return next(w for w in list_waivers(conn, [mid]) if w.id == wid)


def revoke_waiver(conn, waiver_id: int, revoked_by: str) -> Waiver:
    if not revoked_by or not revoked_by.strip():
        raise WaiverError("revoking a waiver needs the name of the person doing it (--by)")
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE waiver SET revoked_at = now(), revoked_by = %s WHERE id = %s AND revoked_at IS NULL"
                    " RETURNING mailbox_id", (revoked_by.strip(), waiver_id))
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT revoked_by FROM waiver WHERE id = %s", (waiver_id,))
            old = cur.fetchone()
            raise WaiverError(f"no waiver #{waiver_id}" if old is None
                              else f"waiver #{waiver_id} was already revoked by {old[0]}")
    return next(w for w in list_waivers(conn, [row[0]]) if w.id == waiver_id)
