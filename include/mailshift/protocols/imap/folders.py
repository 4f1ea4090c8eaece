"""Translate folder names from a source server's namespace to the destination's.

Servers disagree on the shape of a mailbox tree: Dovecot commonly uses separator "/" with no
prefix, Courier and Cyrus put every folder under "INBOX." with separator ".". We reduce a
source name to its logical path (a list of components, INBOX kept apart), apply the building's
folder map and the special-use mapping (Sent/Drafts/Trash/Junk), and rebuild the name in the
destination's namespace. A component that contains the destination's separator cannot be held
as is: it is renamed (declared, recorded on the folder row), never dropped.

Names are Python str here; imapclient does the modified UTF-7 encoding on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

SPECIAL_USES = ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive")

# Names legacy systems used for special folders, by role (compared case-insensitively).
_WELL_KNOWN = {
    "\\Sent": ("sent", "sent items", "sent messages", "sent mail", "送信済み", "送信済みアイテム", "送信箱"),
    "\\Drafts": ("drafts", "draft", "下書き"),
    "\\Trash": ("trash", "deleted items", "deleted messages", "ゴミ箱", "ごみ箱", "削除済みアイテム"),
    "\\Junk": ("junk", "spam", "junk e-mail", "bulk mail", "迷惑メール"),
    "\\Archive": ("archive", "archives", "アーカイブ"),
}

#: What replaces a destination separator found inside a source folder name component.
SEPARATOR_SUBSTITUTE = "_"


@dataclass(frozen=True)
class Namespace:
    """The personal namespace of a server: prefix (e.g. "INBOX.") and hierarchy separator."""

    prefix: str
    separator: str


@dataclass(frozen=True)
class FolderPlan:
    """Where one source folder goes, and why if its name had to change."""

    src_name: str
    dest_name: str
    special_use: str | None
    note: str | None = None


def namespace_of(client) -> Namespace:
    """Read the personal namespace from the server (RFC 2342), falling back to LIST's separator."""
    try:
        ns = client.namespace()
        if ns.personal:
            prefix, sep = ns.personal[0]
            return Namespace(prefix=_text(prefix or ""), separator=_text(sep or "/"))
    except Exception:  # a server without NAMESPACE: the delimiter LIST reports is the truth
        pass
    folders = client.list_folders("", "")
    sep = folders[0][1] if folders else b"/"
    return Namespace(prefix="", separator=_text(sep or b"/"))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def logical_path(src_name: str, ns: Namespace) -> tuple[str, ...]:
    """Components of a folder name, independent of prefix and separator. INBOX is ("INBOX",)."""
    if src_name.upper() == "INBOX":
        return ("INBOX",)
    name = src_name
    if ns.prefix and name.startswith(ns.prefix):
        name = name[len(ns.prefix):]
    parts = tuple(name.split(ns.separator)) if ns.separator else (name,)
    if parts and parts[0].upper() == "INBOX":
        parts = ("INBOX",) + parts[1:]
    return parts


def special_use_of(src_name: str, ns: Namespace, flags: tuple = ()) -> str | None:
    """The role of a folder: from its SPECIAL-USE flag, else from a well-known top-level name."""
    for flag in flags:
        flag = _text(flag)
        if flag in SPECIAL_USES:
            return flag
    parts = logical_path(src_name, ns)
    if len(parts) != 1:
        return None
    low = parts[0].lower()
    for role, names in _WELL_KNOWN.items():
        if low in names:
            return role
    return None


def plan_folder(
    src_name: str,
    src_ns: Namespace,
    dest_ns: Namespace,
    src_flags: tuple = (),
    dest_special: dict[str, str] | None = None,
    folder_map: dict[str, str] | None = None,
) -> FolderPlan:
    """Decide the destination name of one source folder.

    `dest_special` maps a role (e.g. "\\Sent") to the destination's folder holding it;
    `folder_map` is the building spec's override, keyed and valued by logical paths joined
    with "/" (e.g. {"Sent Items": "Sent", "Old/2019": "Archive/2019"}).
    """
    parts = logical_path(src_name, src_ns)
    logical = "/".join(parts)
    role = special_use_of(src_name, src_ns, src_flags)
    notes = []
    if folder_map and logical in folder_map:
        parts = tuple(folder_map[logical].split("/"))
        notes.append(f"folder_map: {logical} -> {folder_map[logical]}")
        role = None
    elif role and dest_special and role in dest_special:
        target = dest_special[role]
        target_parts = logical_path(target, dest_ns)
        if target_parts != parts:
            notes.append(f"special-use {role}: {logical} -> {'/'.join(target_parts)}")
        parts = target_parts
    if parts == ("INBOX",):
        return FolderPlan(src_name, "INBOX", None, "; ".join(notes) or None)
    safe = []
    for part in parts:
        if dest_ns.separator and dest_ns.separator in part:
            fixed = part.replace(dest_ns.separator, SEPARATOR_SUBSTITUTE)
            notes.append(f"renamed component {part!r} -> {fixed!r}: destination separator "
                         f"{dest_ns.separator!r} cannot appear in a name")
            part = fixed
        safe.append(part)
    if safe[0] == "INBOX" and dest_ns.prefix.upper().startswith("INBOX"):
        safe = safe[1:] or ["INBOX"]
    dest_name = dest_ns.prefix + dest_ns.separator.join(safe)
    return FolderPlan(src_name, dest_name, role, "; ".join(notes) or None)
