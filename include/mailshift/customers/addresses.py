"""Address audit: local parts the new provider refuses (RFC 5321/5322 dot-atom only), quoted
forms, over-long addresses, duplicates after case folding; a proposed compliant address and a
rename record per finding. Pure logic: no database, no clock (the caller passes `today`).

Rules (the new provider accepts only `dot-atom "@" domain`, RFC 5322 3.2.3 / RFC 5321 4.1.2):
- `quoted`: the local part is a quoted string (`"john smith"@...`).
- `consecutive_dots`, `leading_dot`, `trailing_dot` (a dot right before `@`).
- `forbidden_chars`: characters outside atext (RFC 5322 3.2.3), e.g. space, `(),:;<>[\\]`,
  non-ASCII (the new provider does not offer SMTPUTF8 mailboxes).
- `local_too_long` (> 64 octets, RFC 5321 4.5.3.1.1), `address_too_long` (> 254 octets: 256
  for the path minus the angle brackets).
- `empty_local`, `bad_domain` (no `@` or an empty domain): reported, proposal from the login.
- `duplicate_casefold`: two mailboxes whose addresses are equal after case folding (the new
  provider folds case); the first by mailbox id keeps its address, the others are renamed.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field

ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                  "!#$%&'*+-/=?^_`{|}~")
MAX_LOCAL = 64
MAX_ADDRESS = 254
DEFAULT_ALIAS_DAYS = 180

KINDS = ("quoted", "consecutive_dots", "leading_dot", "trailing_dot", "forbidden_chars",
         "local_too_long", "address_too_long", "empty_local", "bad_domain",
         "duplicate_casefold")


@dataclass(frozen=True)
class MailboxAddress:
    mailbox_id: int
    address: str
    household_id: str = ""
    building_id: str = ""
    login: str = ""


@dataclass(frozen=True)
class AddressFinding:
    mailbox_id: int
    address: str
    kind: str
    detail: str
    proposed: str          # the compliant address proposed for this mailbox
    household_id: str = ""
    building_id: str = ""


@dataclass(frozen=True)
class Rename:
    mailbox_id: int
    old_address: str
    new_address: str
    alias_until: _dt.date   # the old address keeps delivering (alias) until this day
    reasons: tuple[str, ...]


@dataclass
class AddressAudit:
    findings: list[AddressFinding] = field(default_factory=list)
    renames: list[Rename] = field(default_factory=list)
    checked: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out


def split_address(address: str) -> tuple[str, str]:
    """(local, domain) split at the last `@` (a quoted local part may contain `@`)."""
    if "@" not in address:
        return address, ""
    local, domain = address.rsplit("@", 1)
    return local, domain


def is_dot_atom(local: str) -> bool:
    return bool(local) and all(a and set(a) <= ATEXT for a in local.split("."))


def check_local(local: str) -> list[tuple[str, str]]:
    """(kind, detail) problems of one local part (empty list: compliant)."""
    out: list[tuple[str, str]] = []
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        out.append(("quoted", f"quoted local part {local}"))
        return out
    if not local:
        return [("empty_local", "empty local part")]
    if ".." in local:
        out.append(("consecutive_dots", f"consecutive dots in {local!r}"))
    if local.startswith("."):
        out.append(("leading_dot", f"leading dot in {local!r}"))
    if local.endswith("."):
        out.append(("trailing_dot", f"dot before @ in {local!r}"))
    bad = sorted({c for c in local if c != "." and c not in ATEXT})
    if bad:
        out.append(("forbidden_chars", "characters outside atext: "
                    + " ".join(repr(c) for c in bad)))
    n = len(local.encode("utf-8"))
    if n > MAX_LOCAL:
        out.append(("local_too_long", f"local part is {n} octets (> {MAX_LOCAL})"))
    return out


def check_address(address: str) -> list[tuple[str, str]]:
    local, domain = split_address(address)
    out = check_local(local)
    if not domain or not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", domain) \
            or ".." in domain:
        out.append(("bad_domain", f"domain {domain!r} is not a host name"))
    n = len(address.encode("utf-8"))
    if n > MAX_ADDRESS:
        out.append(("address_too_long", f"address is {n} octets (> {MAX_ADDRESS})"))
    return out


def compliant_local(local: str, fallback: str = "user") -> str:
    """A dot-atom derived from a legacy local part: quotes dropped, forbidden characters and
    runs of them become one `-`, dots collapsed and trimmed, lower case, at most 64 octets."""
    s = local.strip()
    if len(s) >= 2 and s.startswith('"') and s.endswith('"'):
        s = s[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    s = s.lower()
    s = "".join(c if (c in ATEXT or c == ".") else "-" for c in s)
    s = re.sub(r"-{2,}", "-", s)
    s = re.sub(r"\.{2,}", ".", s).strip(".")
    s = re.sub(r"\.-+|-+\.", ".", s).strip("-.")
    if not s:
        s = compliant_local(fallback, "user") if fallback and fallback != local else "user"
    return s[:MAX_LOCAL].rstrip(".") or "user"


def _free(cand: str, mailbox_id: int, holders: dict[str, set[int]]) -> bool:
    return holders.get(cand.casefold(), set()) <= {mailbox_id}


def _unique(local: str, domain: str, mailbox_id: int, holders: dict[str, set[int]]) -> str:
    cand = f"{local}@{domain}"
    n = 2
    while not _free(cand, mailbox_id, holders) or len(cand) > MAX_ADDRESS:
        suffix = f"-{n}"
        cand = f"{local[:MAX_LOCAL - len(suffix)].rstrip('.')}{suffix}@{domain}"
        n += 1
    holders.setdefault(cand.casefold(), set()).add(mailbox_id)
    return cand


def _keep_previous(m: MailboxAddress, domain: str, previous: dict, holders: dict) -> str | None:
    """The mailbox's earlier target when it may stay: always once past `proposed` (approved,
    applied), else while it is compliant, on the same domain and held by no other mailbox."""
    prev = previous.get(m.mailbox_id)
    if prev is None:
        return None
    addr, status = prev
    if status not in ("proposed", "cancelled"):
        return addr
    if split_address(addr)[1].lower() == domain and not check_address(addr) \
            and _free(addr, m.mailbox_id, holders):
        holders.setdefault(addr.casefold(), set()).add(m.mailbox_id)
        return addr
    return None


def audit_addresses(mailboxes, *, today: _dt.date, alias_days: int = DEFAULT_ALIAS_DAYS,
                    existing: set[str] | None = None, holders: dict[str, set[int]] | None = None,
                    previous: dict[int, tuple[str, str]] | None = None) -> AddressAudit:
    """Audit an inventory (iterable of MailboxAddress). Deterministic: mailboxes are handled in
    mailbox id order. `existing`: addresses known elsewhere (other domains' inventories, the
    new provider's reserved names) that proposals must not collide with; `holders`: address ->
    the mailbox ids holding or planning it (addresses, destination logins, rename targets);
    `previous`: mailbox id -> (target, status) of earlier proposals, kept unless they now
    collide. A proposal never names an address another mailbox holds or plans."""
    mbs = sorted(mailboxes, key=lambda m: m.mailbox_id)
    res = AddressAudit(checked=len(mbs))
    held: dict[str, set[int]] = {k.casefold(): set(v) for k, v in (holders or {}).items()}
    for m in mbs:
        held.setdefault(m.address.casefold(), set()).add(m.mailbox_id)
    for a in existing or ():
        held.setdefault(a.casefold(), set()).add(-1)
    previous = previous or {}
    first_by_fold: dict[str, int] = {}
    alias_until = today + _dt.timedelta(days=alias_days)
    for m in mbs:
        problems = check_address(m.address)
        fold = m.address.casefold()
        if fold in first_by_fold:
            problems.append(("duplicate_casefold", f"same address as mailbox "
                             f"{first_by_fold[fold]} after case folding"))
        else:
            first_by_fold[fold] = m.mailbox_id
        if not problems:
            continue
        local, domain = split_address(m.address)
        domain = domain.lower()
        proposed = _keep_previous(m, domain, previous, held) or \
            _unique(compliant_local(local, m.login), domain, m.mailbox_id, held)
        for kind, detail in problems:
            res.findings.append(AddressFinding(m.mailbox_id, m.address, kind, detail, proposed,
                                               m.household_id, m.building_id))
        res.renames.append(Rename(m.mailbox_id, m.address, proposed, alias_until,
                                  tuple(k for k, _ in problems)))
    return res
