"""Load the legacy inventory exports into the mailshift database.

Export directory layout:

    systems.yaml              source systems (+ optional domain list with mx_ttl)
    <system_id>.csv           one export per source system, format = the system's export_format
    defaults.yaml             optional: spec defaults for every building (partial spec)
    buildings/<id>.yaml       optional: per-building spec overrides (partial spec)

`parse_exports(dir)` reads and validates everything (no database) and raises `InventoryError`
listing every problem as `file:line: field: problem [record]`. `load_inventory(conn, dir)`
does the same, then upserts every row in one transaction; loading the same exports again
changes nothing (mailbox ids are kept: the natural key is the address).
Non-RFC-5322 addresses (consecutive dots, dot before '@', ...) are real legacy data and load;
the audit flags them. Whitespace around an address, an empty address or one without '@' are
errors.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

from mailshift.errors import InventoryError  # noqa: F401  (raised here)
from mailshift.inventory import exports, spec
from mailshift.inventory.exports import Issue
from mailshift.store import inventory as inventory_store

SYSTEMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["systems"],
    "properties": {
        "systems": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["id", "kind", "imap_host", "imap_port", "tls", "max_connections",
                             "airflow_conn_id", "export_format"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
                    "kind": {"type": "string", "minLength": 1},
                    "imap_host": {"type": "string", "minLength": 1},
                    "imap_port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "pop3_port": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535},
                    "tls": {"enum": ["none", "starttls", "imaps"]},
                    "max_connections": {"type": "integer", "minimum": 1},
                    "airflow_conn_id": {"type": "string", "minLength": 1},
                    "export_format": {"enum": sorted(exports.FORMATS)},
                    "encoding": {"enum": list(exports.ENCODINGS)},
                    # the destination login of this system's mailboxes when the export has no
                    # dest_login column (or leaves it empty): address | local_part | login, or a
                    # template of {address} {local_part} {domain} {login}; default: address
                    "dest_login": {"type": "string", "minLength": 1},
                },
            },
        },
        "new_buildings": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "domains": {
            "type": "array",
            "items": {
                "type": "object", "additionalProperties": False, "required": ["name"],
                "properties": {"name": {"type": "string"},
                               "mx_ttl": {"type": ["integer", "null"], "minimum": 0}},
            },
        },
    },
}

HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")
LOGIN_BAD = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass
class ParsedInventory:
    systems: list[dict]
    domains: dict[str, int | None]
    buildings: dict[str, dict]  # id -> name, domain, source_system, spec, pinned_wave
    households: dict[str, dict]  # id -> building_id, contact_name, phone, postal_address
    mailboxes: list[dict]  # household_id, address, source_login, dest_login, protocol, quota_bytes
    origins: dict = field(default_factory=dict)  # ("mailbox"|"household"|"building", key) -> (file, line, record)
    declared_new: set = field(default_factory=set)  # systems.yaml new_buildings
    overridden: set = field(default_factory=set)  # buildings with their own buildings/<id>.yaml


@dataclass
class LoadReport:
    export_dir: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> inserted/updated/unchanged
    not_in_exports: list[str] = field(default_factory=list)  # addresses in the DB but not in the exports
    spec_changes: list[str] = field(default_factory=list)  # every building spec change, and specs kept

    @property
    def changed(self) -> int:
        return sum(c["inserted"] + c["updated"] for c in self.counts.values())

    def __str__(self) -> str:
        parts = [f"{t}: +{c['inserted']} ~{c['updated']} ={c['unchanged']}" for t, c in self.counts.items()]
        s = "inventory loaded from " + self.export_dir + ": " + ", ".join(parts)
        if self.not_in_exports:
            s += f"; {len(self.not_in_exports)} mailbox(es) in the database are not in the exports"
        if self.spec_changes:
            s += "\nbuilding specs:\n" + "\n".join("  " + c for c in self.spec_changes)
        return s


# ---------------------------------------------------------------------------------------------
# parsing + validation


def _yaml_line(root, path) -> int:
    _, node = spec._node_at(root, path)
    return spec._line(node)


def _read_yaml(p: Path, fname: str, issues: list[Issue]) -> tuple[bool, object, object]:
    """(readable, node tree for line numbers, document); not readable after recording why."""
    try:
        text = p.read_bytes().decode("utf-8")
        return True, yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        issues.append(Issue(fname, 1, "-", f"undecodable bytes for utf-8 at byte {exc.start}"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        issues.append(Issue(fname, mark.line + 1 if mark else 1, "-", f"invalid YAML: {exc}"))
    return False, None, None


def _schema_issues(doc, root, fname: str, issues: list[Issue]) -> bool:
    """Record every schema violation of systems.yaml with its line; True if there were any."""
    errs = list(jsonschema.Draft202012Validator(SYSTEMS_SCHEMA).iter_errors(doc))
    for e in errs:
        path = list(e.absolute_path)
        rec = ""
        if len(path) >= 2 and path[0] == "systems" and isinstance(doc, dict):
            try:
                rec = f"system {doc['systems'][path[1]].get('id', '?')}"
            except Exception:  # noqa: BLE001
                rec = ""
        if e.validator == "additionalProperties":
            allowed = set(e.schema.get("properties", {}))
            for extra in sorted(k for k in e.instance if k not in allowed):
                kn, _ = spec._node_at(root, path + [extra])
                issues.append(Issue(fname, spec._line(kn), spec._field(path + [extra]), "unknown key", rec))
            continue
        fld = spec._field(path)
        if e.validator == "required":
            m = re.search(r"'([^']+)' is a required property", e.message)
            fld = spec._field(path + [m.group(1)]) if m else fld
        issues.append(Issue(fname, _yaml_line(root, path), fld, e.message[:160], rec))
    return bool(errs)


def _read_systems(d: Path, issues: list[Issue]) -> tuple[list[dict], dict[str, int | None] | None]:
    """The source systems (each with `_line` for later messages) and the declared domains
    (None when systems.yaml lists none: then the exports define them)."""
    fname = "systems.yaml"
    p = d / fname
    if not p.exists():
        issues.append(Issue(fname, 0, "-", "missing file"))
        return [], None
    readable, root, doc = _read_yaml(p, fname, issues)
    if not readable or _schema_issues(doc, root, fname, issues):
        return [], None
    seen: set[str] = set()
    for i, s in enumerate(doc["systems"]):
        if s["id"] in seen:
            issues.append(Issue(fname, _yaml_line(root, ["systems", i, "id"]), f"systems.{i}.id",
                                f"duplicate source system id {s['id']!r}"))
        seen.add(s["id"])
        s.setdefault("pop3_port", None)
        problem = dest_login_problem(s.get("dest_login", "address"))
        if problem:
            issues.append(Issue(fname, _yaml_line(root, ["systems", i, "dest_login"]), f"systems.{i}.dest_login",
                                problem))
    systems = [dict(s) for s in doc["systems"]]
    for i, s in enumerate(systems):
        s["_line"] = _yaml_line(root, ["systems", i, "id"])
    domains = None
    if "domains" in doc:
        domains = {}
        for i, dd in enumerate(doc["domains"]):
            name = dd["name"].strip().lower()
            if not HOSTNAME.match(name):
                issues.append(Issue(fname, _yaml_line(root, ["domains", i, "name"]), f"domains.{i}.name",
                                    f"not a valid domain name: {dd['name']!r}"))
            domains[name] = dd.get("mx_ttl")
    return systems, domains


DEST_LOGIN_RULES = ("address", "local_part", "login")
_TEMPLATE_FIELD = re.compile(r"{([^{}]*)}")


def dest_login_problem(rule: str) -> str | None:
    """Why a systems.yaml `dest_login` rule is unusable (None: fine)."""
    if rule in DEST_LOGIN_RULES:
        return None
    names = _TEMPLATE_FIELD.findall(rule)
    unknown = sorted(set(names) - {"address", "local_part", "domain", "login"})
    if not names or unknown or LOGIN_BAD.search(rule):
        return (f"dest_login {rule!r}: expected one of {', '.join(DEST_LOGIN_RULES)} or a template of "
                "{address} {local_part} {domain} {login}" + (f" (unknown {', '.join(unknown)})" if unknown else ""))
    return None


def dest_login_for(rule: str, address: str, login: str) -> str:
    """The destination login a rule gives (addresses and their parts lowercased, as the
    destination stores them; a source login is kept as it is)."""
    addr = address.strip().lower()
    local, _, domain = addr.rpartition("@")
    if rule == "address":
        return addr
    if rule == "local_part":
        return local
    if rule == "login":
        return login
    return rule.format(address=addr, local_part=local, domain=domain, login=login)


def _read_export_files(d: Path, systems: list[dict], issues: list[Issue]) -> list[tuple[str, exports.ExportRow]]:
    """(system id, row) of every export CSV, each in its system's format; a CSV of no known
    system and a system without a CSV are both errors (a forgotten export would lose mailboxes)."""
    sys_by_id = {s["id"]: s for s in systems}
    rows: list[tuple[str, exports.ExportRow]] = []
    for csv_path in sorted(d.glob("*.csv")):
        sid = csv_path.stem
        if sid not in sys_by_id:
            if systems:
                issues.append(Issue(csv_path.name, 1, "source_system",
                                    f"unknown source system {sid!r} (not in systems.yaml)"))
            continue
        fmt = sys_by_id[sid]["export_format"]
        for r in exports.parse(fmt, csv_path.read_bytes(), csv_path.name, issues,
                               sys_by_id[sid].get("encoding")):
            rows.append((sid, r))
    for i, s in enumerate(systems):
        if not (d / f"{s['id']}.csv").exists():
            issues.append(Issue("systems.yaml", s.get("_line", 1), f"systems.{i}.id",
                                f"no export file {s['id']}.csv for source system {s['id']!r}"))
    return rows


def _address_problem(a: str, domain: str, dom: str) -> str | None:
    """Why an exported address cannot be loaded (None: it can, RFC-conform or not)."""
    if a != a.strip():
        return f"leading or trailing whitespace in {a!r}"
    if "@" not in a:
        return f"missing '@' in {a!r}"
    if a.count("@") > 1:
        return f"more than one '@' in {a!r}"
    if re.search(r"\s", a):
        return f"whitespace inside {a!r}"
    if not a.isascii():
        return f"non-ASCII characters in {a!r}"
    local, adom = a.rsplit("@", 1)
    if not local:
        return f"empty local part in {a!r}"
    if domain and adom.lower() != dom:
        return f"domain of {a!r} is not the building's domain {domain!r}"
    return None


def _row_ok(r: exports.ExportRow, fmt: str, domain_list: dict | None, err) -> bool:
    """Check one row on its own (every problem reported, not only the first); False if it
    cannot be loaded."""
    ok = True
    for f in ("building_id", "building_name", "domain", "household_id", "contact_name", "address", "login"):
        if not getattr(r, f):
            err("room" if f == "household_id" and fmt == "beta" else f, "empty")
            ok = False
    if not r.protocol:
        ok = False  # already reported by the format parser
    dom = r.domain.lower()
    if r.domain and not HOSTNAME.match(dom):
        err("domain", f"not a valid domain name: {r.domain!r}")
        ok = False
    elif r.domain and domain_list is not None and dom not in domain_list:
        err("domain", f"unknown domain {r.domain!r} (not in systems.yaml domains)")
        ok = False
    problem = _address_problem(r.address, r.domain, dom) if r.address else None
    if problem:
        err("address", problem)
        ok = False
    if r.login and LOGIN_BAD.search(r.login):
        err("login", f"whitespace or control characters in login {r.login!r}")
        ok = False
    return ok


@dataclass
class _Collected:
    """What the rows add up to, with where each building/household was first seen."""

    domains: dict[str, int | None]
    buildings: dict[str, dict] = field(default_factory=dict)
    households: dict[str, dict] = field(default_factory=dict)
    mailboxes: list[dict] = field(default_factory=list)
    origins: dict = field(default_factory=dict)
    addr_seen: dict[str, exports.ExportRow] = field(default_factory=dict)
    login_seen: dict[tuple[str, str], exports.ExportRow] = field(default_factory=dict)


def _check_duplicates(acc: _Collected, sid: str, r: exports.ExportRow, err) -> None:
    """Addresses are unique case-insensitively; logins per source system."""
    key = r.address.lower()
    if key in acc.addr_seen:
        o = acc.addr_seen[key]
        err("address", f"duplicate address {r.address!r} (case-insensitive; also {o.file}:{o.line})")
    else:
        acc.addr_seen[key] = r
    lkey = (sid, r.login.lower())
    if lkey in acc.login_seen:
        o = acc.login_seen[lkey]
        err("login", f"duplicate login {r.login!r} on {sid} (also {o.file}:{o.line})")
    else:
        acc.login_seen[lkey] = r


def _merge_building(acc: _Collected, sid: str, r: exports.ExportRow, where: tuple, err) -> None:
    """A building is repeated on every row of its mailboxes: every repetition must agree."""
    dom = r.domain.lower()
    b = acc.buildings.get(r.building_id)
    if b is None:
        acc.buildings[r.building_id] = {"name": r.building_name, "domain": dom, "source_system": sid,
                                        "where": where}
        return
    ref = f"{b['where'][0]}:{b['where'][1]}"
    if b["source_system"] != sid:
        err("building_id", f"building {r.building_id} also exported by {b['source_system']} ({ref})")
    if b["name"] != r.building_name:
        err("building_name", f"conflicting name {r.building_name!r} for {r.building_id} "
                             f"({b['name']!r} at {ref})")
    if b["domain"] != dom:
        err("domain", f"conflicting domain {r.domain!r} for {r.building_id} ({b['domain']!r} at {ref})")


def _merge_household(acc: _Collected, r: exports.ExportRow, where: tuple, err) -> None:
    """A household belongs to one building and has one contact."""
    h = acc.households.get(r.household_id)
    if h is None:
        acc.households[r.household_id] = {"building_id": r.building_id, "contact_name": r.contact_name,
                                          "phone": r.phone, "postal_address": r.postal_address,
                                          "where": where}
        return
    ref = f"{h['where'][0]}:{h['where'][1]}"
    if h["building_id"] != r.building_id:
        err("household_id", f"household {r.household_id} is in two buildings: "
                            f"{h['building_id']} ({ref}) and {r.building_id}")
    elif h["contact_name"] != r.contact_name:
        err("contact_name", f"conflicting contact name for household {r.household_id} ({ref})")


def _collect_row(acc: _Collected, sid: str, r: exports.ExportRow, fmt: str, domain_list: dict | None,
                 issues: list[Issue], dest_rule: str = "address") -> None:
    """Validate one export row and add its building, household and mailbox."""
    rec = r.record()
    where = (r.file, r.line)

    def err(fld: str, problem: str) -> None:
        issues.append(Issue(where[0], where[1], fld, problem, rec))

    if not _row_ok(r, fmt, domain_list, err):
        return
    _check_duplicates(acc, sid, r, err)
    _merge_building(acc, sid, r, where, err)
    _merge_household(acc, r, where, err)
    if domain_list is None:
        acc.domains.setdefault(r.domain.lower(), None)
    for key in (("mailbox", r.address.lower()), ("household", r.household_id), ("building", r.building_id)):
        acc.origins.setdefault(key, (where[0], where[1], rec))
    acc.mailboxes.append({"household_id": r.household_id, "address": r.address, "source_login": r.login,
                          "dest_login": r.dest_login or dest_login_for(dest_rule, r.address, r.login),
                          "protocol": r.protocol,
                          "quota_bytes": None if r.quota_mb is None else r.quota_mb * 1024 * 1024})


def _read_defaults(d: Path, issues: list[Issue]) -> dict | None:
    """defaults.yaml: a partial spec for every building (no per-building keys allowed)."""
    if not (d / "defaults.yaml").exists():
        return None
    defaults, iss = spec.load_spec_file(d / "defaults.yaml", "defaults.yaml", "defaults")
    issues += iss
    for key in ("source_system", "pinned_wave"):
        if defaults and defaults.get(key) is not None:
            issues.append(Issue("defaults.yaml", 1, key, "not allowed in defaults", "defaults"))
    return defaults


def _check_override_system(p: Path, fname: str, rec: str, ss: str, exported_by: str, known: set[str],
                           issues: list[Issue]) -> None:
    """An override may name the source system only to agree with the export."""
    root = yaml.compose(p.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    line = _yaml_line(root, ["source_system"])
    if ss not in known:
        issues.append(Issue(fname, line, "source_system", f"unknown source system {ss!r}", rec))
    elif ss != exported_by:
        issues.append(Issue(fname, line, "source_system", f"{ss!r} but the building is exported by {exported_by!r}",
                            rec))


def _read_overrides(d: Path, buildings: dict[str, dict], systems: list[dict], systems_ok: bool,
                    issues: list[Issue]) -> dict[str, dict]:
    """buildings/<id>.yaml: per-building partial specs, each for a building some export lists."""
    overrides: dict[str, dict] = {}
    bdir = d / "buildings"
    if not bdir.is_dir():
        return overrides
    known = {s["id"] for s in systems}
    for p in sorted(bdir.iterdir()):
        fname = f"buildings/{p.name}"
        if p.suffix not in (".yaml", ".yml"):
            issues.append(Issue(fname, 0, "-", "not a .yaml file"))
            continue
        bid = p.stem
        rec = f"building {bid}"
        ov, iss = spec.load_spec_file(p, fname, rec)
        issues += iss
        if bid not in buildings:
            if systems_ok:  # else the exports could not be read: do not pile follow-on errors up
                issues.append(Issue(fname, 1, "building_id", f"unknown building {bid!r} (in no export)", rec))
            continue
        if ov is None:
            continue
        if ov.get("source_system") is not None:
            _check_override_system(p, fname, rec, ov["source_system"], buildings[bid]["source_system"], known, issues)
        overrides[bid] = ov
    return overrides


def _apply_specs(acc: _Collected, overrides: dict[str, dict], defaults: dict | None) -> None:
    """Each building's effective spec (override over defaults over DEFAULT_SPEC)."""
    for bid, b in acc.buildings.items():
        eff = spec.resolve(overrides.get(bid), defaults)
        eff["source_system"] = b["source_system"]
        b["spec"] = eff
        b["pinned_wave"] = eff.get("pinned_wave")
        b.pop("where", None)
    for h in acc.households.values():
        h.pop("where", None)


def parse_exports(export_dir) -> ParsedInventory:
    """Read and validate every file of an export directory. Raises InventoryError listing every
    problem at once, so an export is fixed in one round trip with the legacy system's owner."""
    d = Path(export_dir)
    if not d.is_dir():
        raise InventoryError([Issue(str(d), 0, "-", "export directory does not exist")])
    issues: list[Issue] = []
    systems, domain_list = _read_systems(d, issues)
    systems_ok = not issues
    formats = {s["id"]: s["export_format"] for s in systems}
    rules = {s["id"]: s.get("dest_login", "address") for s in systems}
    rules = {sid: "address" if dest_login_problem(rule) else rule for sid, rule in rules.items()}  # issue recorded
    acc = _Collected(domains=dict(domain_list or {}))
    for sid, r in _read_export_files(d, systems, issues):
        _collect_row(acc, sid, r, formats[sid], domain_list, issues, rules[sid])
    defaults = _read_defaults(d, issues)
    # a whole file in the wrong encoding is one issue: no follow-on "building in no export"
    exports_ok = systems_ok and not any(i.field == "encoding" for i in issues)
    overrides = _read_overrides(d, acc.buildings, systems, exports_ok, issues)
    if issues:
        raise InventoryError(issues)
    _apply_specs(acc, overrides, defaults)
    return ParsedInventory(systems=systems, domains=acc.domains, buildings=acc.buildings,
                           households=acc.households, mailboxes=acc.mailboxes, origins=acc.origins,
                           declared_new=_declared_new(d), overridden=set(overrides))


def _declared_new(d: Path) -> set[str]:
    """systems.yaml `new_buildings`: building ids a later load may add (already validated)."""
    doc = yaml.safe_load((d / "systems.yaml").read_text(encoding="utf-8")) or {}
    return {str(b) for b in doc.get("new_buildings") or ()}


# ---------------------------------------------------------------------------------------------
# the invariants against what is already loaded (first load or later, full or partial)


def _issue(parsed: ParsedInventory, kind: str, key: str, fld: str, problem: str) -> Issue:
    file, line, rec = parsed.origins.get((kind, key), ("-", 0, ""))
    return Issue(file, line, fld, problem, rec)


def _check_loaded(parsed: ParsedInventory, existing: dict) -> list[Issue]:
    """Case-insensitive address uniqueness over the whole inventory, a household stays in its
    building, a building the inventory lacks is an error unless declared new (or the first load
    of its source system, or it has its own buildings/<id>.yaml)."""
    issues = []
    for m in parsed.mailboxes:
        for mid, addr in existing["addresses"].get(m["address"].lower(), ()):
            if addr != m["address"]:
                issues.append(_issue(parsed, "mailbox", m["address"].lower(), "address",
                                     f"duplicate address {m['address']!r} (case-insensitive): mailbox "
                                     f"{mid} {addr!r} is already in the inventory"))
    for hid, h in parsed.households.items():
        was = existing["households"].get(hid)
        if was is not None and was != h["building_id"]:
            issues.append(_issue(parsed, "household", hid, "household_id",
                                 f"household {hid} belongs to building {was} in the inventory, not "
                                 f"{h['building_id']}"))
    loaded = existing["buildings"]
    for bid, b in parsed.buildings.items():
        if bid in loaded or bid in parsed.declared_new or bid in parsed.overridden \
                or b["source_system"] not in existing["systems_with_buildings"]:
            continue
        near = difflib.get_close_matches(bid, list(loaded), n=1)
        issues.append(_issue(parsed, "building", bid, "building_id",
                             f"unknown building {bid!r}: not in the inventory"
                             + (f" (did you mean {near[0]!r}?)" if near else "")
                             + "; if it is new, list it under new_buildings in systems.yaml"))
    return issues


def _keep_or_list_specs(parsed: ParsedInventory, existing: dict) -> list[str]:
    """A loaded building's spec changes only through its own buildings/<id>.yaml: without one
    the stored spec is kept; every change (and every reset avoided) is listed."""
    notes = []
    for bid, b in sorted(parsed.buildings.items()):
        old = existing["buildings"].get(bid)
        if old is None or old["spec"] == b["spec"]:
            continue
        if bid not in parsed.overridden:
            b["spec"], b["pinned_wave"] = old["spec"], old["pinned_wave"]
            notes.append(f"{bid}: spec kept as loaded (no buildings/{bid}.yaml in this load)")
            continue
        for key in sorted(set(old["spec"]) | set(b["spec"])):
            if old["spec"].get(key) != b["spec"].get(key):
                notes.append(f"{bid}: {key}: {old['spec'].get(key)!r} -> {b['spec'].get(key)!r} "
                             f"(buildings/{bid}.yaml)")
    return notes


# ---------------------------------------------------------------------------------------------
# database


def load_inventory(conn, export_dir) -> LoadReport:
    """Validate the exports (InventoryError on any problem, nothing written), then upsert all
    rows in one transaction. `conn` is a psycopg2 connection or a libpq DSN."""
    parsed = parse_exports(export_dir)
    own = isinstance(conn, str)
    if own:
        from mailshift.store import db

        conn = db.connect(conn)
    notes: list[str] = []

    def check(existing: dict) -> None:   # under the load lock, in the load's transaction
        issues = _check_loaded(parsed, existing)
        if issues:
            raise InventoryError(issues)
        notes.extend(_keep_or_list_specs(parsed, existing))

    try:
        counts, not_in_exports = inventory_store.upsert_inventory(conn, parsed, check=check)
    finally:
        if own:
            conn.close()
    return LoadReport(str(export_dir), counts, not_in_exports, notes)
