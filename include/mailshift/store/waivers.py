"""`waiver` rows: create (validated, four eyes), revoke (the row stays), list."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2

from mailshift.errors import WaiverError
from mailshift.rules.waivers import Waiver, check_request

_COLS = ("w.id, w.mailbox_id, w.scope, w.folder_id, f.src_name, w.src_uid, w.dest_folder, w.dest_uidvalidity,"
         " w.dest_uid, w.reason, w.requested_by, w.approved_by, w.approved_at, w.revoked_at, w.revoked_by")


def list_waivers(conn, mailbox_ids: list[int], include_revoked: bool = True) -> list[Waiver]:
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT {_COLS} FROM waiver w LEFT JOIN folder f ON f.id = w.folder_id"
                    " WHERE w.mailbox_id = ANY(%s)" + ("" if include_revoked else " AND w.revoked_at IS NULL")
                    + " ORDER BY w.mailbox_id, w.id", (list(mailbox_ids),))
        return [Waiver(*row) for row in cur.fetchall()]


def _mailbox_id(conn, mailbox) -> int:
    from mailshift.errors import UnknownMailbox
    from mailshift.store.inventory import find_mailbox

    row = find_mailbox(conn, mailbox)
    if row is None:
        raise UnknownMailbox(f"no mailbox {mailbox!r} in the inventory")
    return row[0]


@dataclass
class _Target:
    scope: str
    folder_id: int | None = None
    src_uid: int | None = None
    dest_folder: str | None = None
    dest_uidvalidity: int | None = None
    dest_uid: int | None = None


def _target_of_finding(cur, mid: int, finding_id: int) -> _Target:
    """The narrowest scope that covers one blocking finding of this mailbox."""
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
        target = _Target("folder", folder_id)
    elif src_uid is not None and folder_id is not None:
        target = _Target("message", folder_id, src_uid)
    elif src_uid is None and dest_uid is not None:
        return _Target("dest_message", dest_folder=dest_folder, dest_uidvalidity=uidvalidity, dest_uid=dest_uid)
    elif kind == "uidl_mismatch":
        raise WaiverError(f"finding #{finding_id} names no message in the ledger; waive the folder "
                          "or the whole mailbox instead")
    else:
        raise WaiverError(f"finding #{finding_id} ({kind}) names no message of the ledger: "
                          "waive its folder or the whole mailbox instead")
    if target.folder_id is None:
        raise WaiverError(f"finding #{finding_id}: its source folder is not in the ledger (never "
                          "copied); run a copy pass first, or waive the whole mailbox")
    return target


def _target_of_folder(cur, mid: int, mailbox, folder: str, src_uid: int | None) -> _Target:
    cur.execute("SELECT id FROM folder WHERE mailbox_id = %s AND src_name = %s"
                " ORDER BY (state = 'active') DESC, id DESC LIMIT 1", (mid, folder))
    row = cur.fetchone()
    if row is None:
        raise WaiverError(f"mailbox {mailbox}: no source folder {folder!r} in the ledger")
    if src_uid is None:
        return _Target("folder", row[0])
    cur.execute("SELECT 1 FROM message WHERE mailbox_id = %s AND folder_id = %s AND src_uid = %s",
                (mid, row[0], src_uid))
    if cur.fetchone() is None:
        raise WaiverError(f"mailbox {mailbox}: folder {folder!r} has no source UID {src_uid} in the ledger")
    return _Target("message", row[0], src_uid)


def _target_of_dest(cur, mid: int, mailbox, dest_folder: str, dest_uid: int) -> _Target:
    cur.execute("SELECT dest_uidvalidity FROM reconciliation_finding WHERE mailbox_id = %s AND"
                " dest_folder = %s AND dest_uid = %s AND src_uid IS NULL ORDER BY id DESC LIMIT 1",
                (mid, dest_folder, dest_uid))
    row = cur.fetchone()
    if row is None or row[0] is None:
        raise WaiverError(f"mailbox {mailbox}: no verification finding names destination "
                          f"{dest_folder!r} UID {dest_uid} as an extra message; verify first")
    return _Target("dest_message", dest_folder=dest_folder, dest_uidvalidity=row[0], dest_uid=dest_uid)


def create_waiver(conn, mailbox, approved_by: str, reason: str, *, finding_id: int | None = None,
                  folder: str | None = None, src_uid: int | None = None, dest_folder: str | None = None,
                  dest_uid: int | None = None, whole_mailbox: bool = False,
                  requested_by: str | None = None) -> Waiver:
    """Record a waiver. Exactly one target: a finding, a folder [+ UID], a destination message, or
    the whole mailbox. Raises WaiverError with a clear message for anything missing or unknown."""
    check_request(approved_by, reason, requested_by, finding_id=finding_id, folder=folder, src_uid=src_uid,
                  dest_folder=dest_folder, dest_uid=dest_uid, whole_mailbox=whole_mailbox)
    mid = _mailbox_id(conn, mailbox)
    with conn, conn.cursor() as cur:
        if finding_id is not None:
            t = _target_of_finding(cur, mid, finding_id)
        elif folder is not None:
            t = _target_of_folder(cur, mid, mailbox, folder, src_uid)
        elif dest_folder is not None:
            t = _target_of_dest(cur, mid, mailbox, dest_folder, dest_uid)
        else:
            t = _Target("mailbox")
        try:
            cur.execute("INSERT INTO waiver (mailbox_id, folder_id, src_uid, finding_id, scope, reason,"
                        " requested_by, approved_by, dest_folder, dest_uidvalidity, dest_uid)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                        (mid, t.folder_id, t.src_uid, finding_id, t.scope, reason.strip(), requested_by,
                         approved_by.strip(), t.dest_folder, t.dest_uidvalidity, t.dest_uid))
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
