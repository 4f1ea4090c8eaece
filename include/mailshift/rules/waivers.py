"""What lets a finding stand, the one definition: a named person's waiver (`covers` /
`apply_waivers`: the verifier, the proof state, the gate and the reports all call them), or
the building spec's `accepted_alterations` for an altered message (`accept_alterations`, applied
by the verifier when it records the finding).

Waiver scopes: one source message (folder + source UID), one source folder, one whole mailbox,
or one destination message (a stray or duplicate: destination folder, UIDVALIDITY, UID). Only
unrevoked waivers cover findings, and only blocking findings need one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Waiver:
    id: int
    mailbox_id: int
    scope: str
    folder_id: int | None
    src_folder: str | None
    src_uid: int | None
    dest_folder: str | None
    dest_uidvalidity: int | None
    dest_uid: int | None
    reason: str
    requested_by: str | None
    approved_by: str
    approved_at: object
    revoked_at: object = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def describe(self) -> str:
        what = {"mailbox": "whole mailbox",
                "folder": f"folder {self.src_folder!r}",
                "message": f"folder {self.src_folder!r} source UID {self.src_uid}",
                "dest_message": f"destination {self.dest_folder!r} UID {self.dest_uid} "
                                f"(UIDVALIDITY {self.dest_uidvalidity})"}[self.scope]
        return f"waiver #{self.id} ({what}) by {self.approved_by}: {self.reason}"


def covers(w: Waiver, f) -> bool:
    """Does active waiver `w` cover finding `f` (a matching.Finding or a row with the same fields)?"""
    if not w.active:
        return False
    if w.scope == "mailbox":
        return True
    if w.scope == "folder":
        return f.folder_id is not None and f.folder_id == w.folder_id
    if w.scope == "message":
        return f.folder_id == w.folder_id and f.src_uid == w.src_uid and f.src_uid is not None
    if w.scope == "dest_message":
        return (f.dest_uid == w.dest_uid and f.dest_folder == w.dest_folder
                and f.dest_uidvalidity == w.dest_uidvalidity and f.src_uid is None)
    return False


def apply_waivers(findings, waivers: list[Waiver]) -> int:
    """Set `waiver_id` on each blocking finding an active waiver covers (most specific first)."""
    rank = {"message": 0, "dest_message": 0, "folder": 1, "mailbox": 2}
    active = sorted((w for w in waivers if w.active), key=lambda w: (rank[w.scope], w.id))
    n = 0
    for f in findings:
        f.waiver_id = None
        if not f.blocking:
            continue
        for w in active:
            if covers(w, f):
                f.waiver_id = w.id
                n += 1
                break
    return n


def accept_alterations(findings, accepted, building: str) -> dict[str, int]:
    """Let the building spec's accepted alteration classes stand; returns {class: messages}.

    An altered message (a `digest_mismatch` finding) stops blocking only when its class is named
    in the spec's `accepted_alterations`, the verifier classified the bytes both servers serve now
    as that class (`alteration_class`) and the copier recorded the same class for it at copy time
    (ledger state altered: `copy_class`). Anything else keeps blocking, with the reason added.
    The finding is kept (non-blocking, `accepted`, the spec named in its detail), counted in the
    proof and shown in the report: an accepted alteration is visible, never silent."""
    wanted = set(accepted or ())
    counts: dict[str, int] = {}
    for f in findings:
        cls = f.alteration_class
        if f.kind != "digest_mismatch" or not f.blocking or cls is None or not wanted:
            continue
        if cls not in wanted:
            f.detail += (f"; class {cls} is not in building {building}'s accepted_alterations "
                         f"({', '.join(sorted(wanted))})")
        elif f.copy_class != cls:
            seen = f"class {f.copy_class}" if f.copy_class else "no alteration"
            f.detail += (f"; class {cls} is accepted by building {building}'s spec, but the copier recorded "
                         f"{seen} for this message at copy time: not accepted")
        else:
            f.blocking, f.accepted = False, True
            f.detail = (f"accepted alteration ({cls}) by building {building}'s spec accepted_alterations: "
                        + f.detail)
            counts[cls] = counts.get(cls, 0) + 1
    return counts


def check_request(approved_by: str, reason: str, requested_by: str | None, *, finding_id=None, folder=None,
                  src_uid=None, dest_folder=None, dest_uid=None, whole_mailbox=False) -> None:
    """What every waiver needs before anything is looked up: a named approver, a reason, four
    eyes when a requester is named, and exactly one target."""
    from mailshift.errors import WaiverError

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
