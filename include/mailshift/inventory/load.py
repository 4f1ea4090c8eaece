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

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

from mailshift.errors import InventoryError  # noqa: F401  (raised here)
from mailshift.inventory import exports, spec
from mailshift.inventory.exports import Issue

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
                },
            },
        },
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


@dataclass
class LoadReport:
    export_dir: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> inserted/updated/unchanged
    not_in_exports: list[str] = field(default_factory=list)  # addresses in the DB but not in the exports

    @property
    def changed(self) -> int:
        return sum(c["inserted"] + c["updated"] for c in self.counts.values())

    def __str__(self) -> str:
        parts = [f"{t}: +{c['inserted']} ~{c['updated']} ={c['unchanged']}" for t, c in self.counts.items()]
        s = "inventory loaded from " + self.export_dir + ": " + ", ".join(parts)
        if self.not_in_exports:
            s += f"; {len(self.not_in_exports)} mailbox(es) in the database are not in the exports"
        return s


# ---------------------------------------------------------------------------------------------
# parsing + validation


def _yaml_line(root, path) -> int:
    _, node = spec._node_at(root, path)
    return spec._line(node)


def _read_systems(d: Path, issues: list[Issue]) -> tuple[list[dict], dict[str, int | None] | None]:
    p = d / "systems.yaml"
    fname = "systems.yaml"
    if not p.exists():
        issues.append(Issue(fname, 0, "-", "missing file"))
        return [], None
    try:
        text = p.read_bytes().decode("utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        issues.append(Issue(fname, 1, "-", f"undecodable bytes for utf-8 at byte {exc.start}"))
        return [], None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        issues.append(Issue(fname, mark.line + 1 if mark else 1, "-", f"invalid YAML: {exc}"))
        return [], None
    v = jsonschema.Draft202012Validator(SYSTEMS_SCHEMA)
    errs = list(v.iter_errors(doc))
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
    if errs:
        return [], None
    seen: set[str] = set()
    for i, s in enumerate(doc["systems"]):
        if s["id"] in seen:
            issues.append(Issue(fname, _yaml_line(root, ["systems", i, "id"]), f"systems.{i}.id",
                                f"duplicate source system id {s['id']!r}"))
        seen.add(s["id"])
        s.setdefault("pop3_port", None)
    lines = {i: _yaml_line(root, ["systems", i, "id"]) for i in range(len(doc["systems"]))}
    systems = [dict(s) for s in doc["systems"]]
    for i, s in enumerate(systems):
        s["_line"] = lines[i]
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


def parse_exports(export_dir) -> ParsedInventory:
    """Read and validate every file of an export directory. Raises InventoryError."""
    d = Path(export_dir)
    issues: list[Issue] = []
    if not d.is_dir():
        raise InventoryError([Issue(str(d), 0, "-", "export directory does not exist")])
    n_before = len(issues)
    systems, domain_list = _read_systems(d, issues)
    systems_ok = len(issues) == n_before
    sys_by_id = {s["id"]: s for s in systems}

    # --- export CSVs -----------------------------------------------------------------------
    rows: list[tuple[str, exports.ExportRow]] = []  # (system id, row)
    for csv_path in sorted(d.glob("*.csv")):
        sid = csv_path.stem
        if sid not in sys_by_id:
            if systems:
                issues.append(Issue(csv_path.name, 1, "source_system",
                                    f"unknown source system {sid!r} (not in systems.yaml)"))
            continue
        fmt = sys_by_id[sid]["export_format"]
        for r in exports.parse(fmt, csv_path.read_bytes(), csv_path.name, issues):
            rows.append((sid, r))
    for i, s in enumerate(systems):
        if not (d / f"{s['id']}.csv").exists():
            issues.append(Issue("systems.yaml", s.get("_line", 1), f"systems.{i}.id",
                                f"no export file {s['id']}.csv for source system {s['id']!r}"))

    buildings: dict[str, dict] = {}
    households: dict[str, dict] = {}
    mailboxes: list[dict] = []
    domains: dict[str, int | None] = dict(domain_list or {})
    addr_seen: dict[str, exports.ExportRow] = {}
    login_seen: dict[tuple[str, str], exports.ExportRow] = {}

    for sid, r in rows:
        rec = r.record()
        where = (r.file, r.line)

        def err(fld: str, problem: str, where=where, rec=rec) -> None:
            issues.append(Issue(where[0], where[1], fld, problem, rec))

        required = ["building_id", "building_name", "domain", "household_id", "contact_name",
                    "address", "login"]
        missing = False
        for f in required:
            if not getattr(r, f):
                if f == "household_id" and sys_by_id[sid]["export_format"] == "beta":
                    err("room", "empty")
                else:
                    err(f, "empty")
                missing = True
        if not r.protocol:
            missing = True  # already reported by the format parser
        dom = r.domain.lower()
        if r.domain and not HOSTNAME.match(dom):
            err("domain", f"not a valid domain name: {r.domain!r}")
            missing = True
        elif r.domain and domain_list is not None and dom not in domain_list:
            err("domain", f"unknown domain {r.domain!r} (not in systems.yaml domains)")
            missing = True
        # address
        a = r.address
        if a:
            if a != a.strip():
                err("address", f"leading or trailing whitespace in {a!r}")
                missing = True
            elif "@" not in a:
                err("address", f"missing '@' in {a!r}")
                missing = True
            elif a.count("@") > 1:
                err("address", f"more than one '@' in {a!r}")
                missing = True
            elif re.search(r"\s", a):
                err("address", f"whitespace inside {a!r}")
                missing = True
            elif not a.isascii():
                err("address", f"non-ASCII characters in {a!r}")
                missing = True
            else:
                local, adom = a.rsplit("@", 1)
                if not local:
                    err("address", f"empty local part in {a!r}")
                    missing = True
                elif r.domain and adom.lower() != dom:
                    err("address", f"domain of {a!r} is not the building's domain {r.domain!r}")
                    missing = True
        if r.login and LOGIN_BAD.search(r.login):
            err("login", f"whitespace or control characters in login {r.login!r}")
            missing = True
        if missing:
            continue
        # duplicates
        key = a.lower()
        if key in addr_seen:
            o = addr_seen[key]
            err("address", f"duplicate address {a!r} (case-insensitive; also {o.file}:{o.line})")
        else:
            addr_seen[key] = r
        lkey = (sid, r.login.lower())
        if lkey in login_seen:
            o = login_seen[lkey]
            err("login", f"duplicate login {r.login!r} on {sid} (also {o.file}:{o.line})")
        else:
            login_seen[lkey] = r
        # building
        b = buildings.get(r.building_id)
        if b is None:
            buildings[r.building_id] = b = {"name": r.building_name, "domain": dom, "source_system": sid,
                                            "where": where}
        else:
            ref = f"{b['where'][0]}:{b['where'][1]}"
            if b["source_system"] != sid:
                err("building_id", f"building {r.building_id} also exported by {b['source_system']} ({ref})")
            if b["name"] != r.building_name:
                err("building_name", f"conflicting name {r.building_name!r} for {r.building_id} "
                                     f"({b['name']!r} at {ref})")
            if b["domain"] != dom:
                err("domain", f"conflicting domain {r.domain!r} for {r.building_id} ({b['domain']!r} at {ref})")
        # household
        h = households.get(r.household_id)
        if h is None:
            households[r.household_id] = {"building_id": r.building_id, "contact_name": r.contact_name,
                                          "phone": r.phone, "postal_address": r.postal_address,
                                          "where": where}
        else:
            ref = f"{h['where'][0]}:{h['where'][1]}"
            if h["building_id"] != r.building_id:
                err("household_id", f"household {r.household_id} is in two buildings: "
                                    f"{h['building_id']} ({ref}) and {r.building_id}")
            elif h["contact_name"] != r.contact_name:
                err("contact_name", f"conflicting contact name for household {r.household_id} ({ref})")
        if domain_list is None:
            domains.setdefault(dom, None)
        mailboxes.append({"household_id": r.household_id, "address": a, "source_login": r.login,
                          "dest_login": a.lower(), "protocol": r.protocol,
                          "quota_bytes": None if r.quota_mb is None else r.quota_mb * 1024 * 1024})

    # --- specs ------------------------------------------------------------------------------
    defaults = None
    if (d / "defaults.yaml").exists():
        defaults, iss = spec.load_spec_file(d / "defaults.yaml", "defaults.yaml", "defaults")
        issues += iss
        if defaults and defaults.get("source_system") is not None:
            issues.append(Issue("defaults.yaml", 1, "source_system", "not allowed in defaults", "defaults"))
        if defaults and defaults.get("pinned_wave") is not None:
            issues.append(Issue("defaults.yaml", 1, "pinned_wave", "not allowed in defaults", "defaults"))
    overrides: dict[str, dict] = {}
    bdir = d / "buildings"
    if bdir.is_dir():
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
                if not systems_ok:
                    continue  # exports could not be read: do not pile follow-on errors up
                issues.append(Issue(fname, 1, "building_id", f"unknown building {bid!r} (in no export)", rec))
                continue
            if ov is None:
                continue
            ss = ov.get("source_system")
            if ss is not None:
                root = yaml.compose(p.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
                line = _yaml_line(root, ["source_system"])
                if ss not in sys_by_id:
                    issues.append(Issue(fname, line, "source_system", f"unknown source system {ss!r}", rec))
                elif ss != buildings[bid]["source_system"]:
                    issues.append(Issue(fname, line, "source_system",
                                        f"{ss!r} but the building is exported by {buildings[bid]['source_system']!r}", rec))
            overrides[bid] = ov

    if issues:
        raise InventoryError(issues)

    for bid, b in buildings.items():
        eff = spec.resolve(overrides.get(bid), defaults)
        eff["source_system"] = b["source_system"]
        b["spec"] = eff
        b["pinned_wave"] = eff.get("pinned_wave")
        b.pop("where", None)
    for h in households.values():
        h.pop("where", None)
    return ParsedInventory(systems=systems, domains=domains, buildings=buildings,
                           households=households, mailboxes=mailboxes)


# ---------------------------------------------------------------------------------------------
# database


def _upsert(cur, table: str, key: list[str], cols: list[str], rows: list[tuple], *,
            jsonb: set[str] = frozenset()) -> dict[str, int]:
    from psycopg2.extras import execute_values

    counts = {"inserted": 0, "updated": 0, "unchanged": 0}
    if not rows:
        return counts
    allc = key + cols
    tmpl = "(" + ", ".join("%s::jsonb" if c in jsonb else "%s" for c in allc) + ")"
    sets = ", ".join([f"{c} = EXCLUDED.{c}" for c in cols] + ["updated_at = now()"])
    cmp_l = ", ".join(f"{table}.{c}" for c in cols)
    cmp_r = ", ".join(f"EXCLUDED.{c}" for c in cols)
    sql = (f"INSERT INTO {table} ({', '.join(allc)}) VALUES %s "
           f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets} "
           f"WHERE ({cmp_l}) IS DISTINCT FROM ({cmp_r}) RETURNING (xmax = 0)")
    res = execute_values(cur, sql, rows, template=tmpl, page_size=1000, fetch=True)
    ins = sum(1 for (x,) in res if x)
    counts["inserted"] = ins
    counts["updated"] = len(res) - ins
    counts["unchanged"] = len(rows) - len(res)
    return counts


def load_inventory(conn, export_dir) -> LoadReport:
    """Validate the exports (InventoryError on any problem, nothing written), then upsert all
    rows in one transaction. `conn` is a psycopg2 connection or a libpq DSN."""
    parsed = parse_exports(export_dir)
    own = False
    if isinstance(conn, str):
        import psycopg2

        conn = psycopg2.connect(conn)
        own = True
    report = LoadReport(str(export_dir))
    old_autocommit = conn.autocommit
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('mailshift.inventory.load'))")
            report.counts["source_system"] = _upsert(
                cur, "source_system", ["id"],
                ["kind", "imap_host", "imap_port", "pop3_port", "tls", "max_connections",
                 "airflow_conn_id", "export_format"],
                [(s["id"], s["kind"], s["imap_host"], s["imap_port"], s.get("pop3_port"), s["tls"],
                  s["max_connections"], s["airflow_conn_id"], s["export_format"]) for s in parsed.systems])
            report.counts["domain"] = _upsert(
                cur, "domain", ["name"], ["mx_ttl"], [(n, t) for n, t in sorted(parsed.domains.items())])
            report.counts["building"] = _upsert(
                cur, "building", ["id"], ["name", "domain", "source_system", "spec", "pinned_wave"],
                [(bid, b["name"], b["domain"], b["source_system"],
                  json.dumps(b["spec"], ensure_ascii=False, sort_keys=True), b["pinned_wave"])
                 for bid, b in sorted(parsed.buildings.items())], jsonb={"spec"})
            report.counts["household"] = _upsert(
                cur, "household", ["id"], ["building_id", "contact_name", "phone", "postal_address"],
                [(hid, h["building_id"], h["contact_name"], h["phone"], h["postal_address"])
                 for hid, h in sorted(parsed.households.items())])
            report.counts["mailbox"] = _upsert(
                cur, "mailbox", ["address"],
                ["household_id", "source_login", "dest_login", "protocol", "quota_bytes"],
                [(m["address"], m["household_id"], m["source_login"], m["dest_login"], m["protocol"],
                  m["quota_bytes"]) for m in parsed.mailboxes])
            cur.execute("SELECT address FROM mailbox WHERE NOT (address = ANY(%s)) ORDER BY address",
                        ([m["address"] for m in parsed.mailboxes],))
            report.not_in_exports = [a for (a,) in cur.fetchall()]
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = old_autocommit
        if own:
            conn.close()
    return report
