"""The inventory tables (source_system, domain, building, household, mailbox): the upsert of a
load, and the reads the copier, preflight, the CLI and the projection need.

A load is one transaction under an advisory lock, so two operators loading at once cannot
interleave; every upsert only touches rows whose values differ, so loading the same exports
again changes nothing and reports it (inserted / updated / unchanged per table).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import NamedTuple

LOAD_LOCK = "mailshift.inventory.load"

#: the columns each upsert writes besides the natural key (id, or address for a mailbox)
_SYSTEM_COLS = ["kind", "imap_host", "imap_port", "pop3_port", "tls", "max_connections", "airflow_conn_id",
                "export_format"]
_BUILDING_COLS = ["name", "domain", "source_system", "spec", "pinned_wave"]
_HOUSEHOLD_COLS = ["building_id", "contact_name", "phone", "postal_address"]
_MAILBOX_COLS = ["household_id", "source_login", "dest_login", "protocol", "quota_bytes"]


class MailboxRow(NamedTuple):
    """One mailbox with its building, source system and the Airflow connection of that system."""

    id: int
    address: str
    source_login: str
    dest_login: str
    protocol: str
    building_id: str
    source_system: str
    source_conn_id: str
    spec: dict


def _upsert(cur, table: str, key: list[str], cols: list[str], rows: list[tuple], *,
            jsonb: frozenset[str] = frozenset()) -> dict[str, int]:
    """INSERT .. ON CONFLICT DO UPDATE only where a value differs, so `updated_at` moves only
    for real changes and the counts say what a reload did."""
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


def _upsert_all(cur, parsed) -> dict[str, dict[str, int]]:
    """Every table of a parsed inventory, parents first (foreign keys)."""
    counts = {}
    counts["source_system"] = _upsert(
        cur, "source_system", ["id"], _SYSTEM_COLS,
        [(s["id"], s["kind"], s["imap_host"], s["imap_port"], s.get("pop3_port"), s["tls"],
          s["max_connections"], s["airflow_conn_id"], s["export_format"]) for s in parsed.systems])
    counts["domain"] = _upsert(cur, "domain", ["name"], ["mx_ttl"], sorted(parsed.domains.items()))
    counts["building"] = _upsert(
        cur, "building", ["id"], _BUILDING_COLS,
        [(bid, b["name"], b["domain"], b["source_system"],
          json.dumps(b["spec"], ensure_ascii=False, sort_keys=True), b["pinned_wave"])
         for bid, b in sorted(parsed.buildings.items())], jsonb=frozenset({"spec"}))
    counts["household"] = _upsert(
        cur, "household", ["id"], _HOUSEHOLD_COLS,
        [(hid, h["building_id"], h["contact_name"], h["phone"], h["postal_address"])
         for hid, h in sorted(parsed.households.items())])
    counts["mailbox"] = _upsert(
        cur, "mailbox", ["address"], _MAILBOX_COLS,
        [(m["address"], m["household_id"], m["source_login"], m["dest_login"], m["protocol"], m["quota_bytes"])
         for m in parsed.mailboxes])
    return counts


def _existing(cur, parsed) -> dict:
    """What is already loaded that a load must agree with: addresses equal case-insensitively,
    the households' buildings, the buildings (spec, pinned wave), systems that have buildings."""
    out: dict = {"addresses": {}, "households": {}, "buildings": {}}
    cur.execute("SELECT lower(address), id, address FROM mailbox WHERE lower(address) = ANY(%s)",
                ([m["address"].lower() for m in parsed.mailboxes],))
    for low, mid, addr in cur.fetchall():
        out["addresses"].setdefault(low, []).append((mid, addr))
    cur.execute("SELECT id, building_id FROM household WHERE id = ANY(%s)", (list(parsed.households),))
    out["households"] = dict(cur.fetchall())
    cur.execute("SELECT id, spec, pinned_wave FROM building")
    out["buildings"] = {r[0]: {"spec": r[1], "pinned_wave": r[2]} for r in cur.fetchall()}
    cur.execute("SELECT DISTINCT source_system FROM building")
    out["systems_with_buildings"] = {r[0] for r in cur.fetchall()}
    return out


def upsert_inventory(conn, parsed, check=None) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Write a validated inventory (`inventory.load.ParsedInventory`) in one transaction.
    `check(existing)` runs first, under the load lock, with what is already loaded (see
    `_existing`); it may adjust `parsed` or raise (nothing is written).

    Returns the counts per table and the addresses in the database that the exports no longer
    list: they are reported, never deleted (a mailbox with a ledger is evidence)."""
    old_autocommit = conn.autocommit
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOAD_LOCK,))
            if check is not None:
                check(_existing(cur, parsed))
            counts = _upsert_all(cur, parsed)
            cur.execute("SELECT address FROM mailbox WHERE NOT (address = ANY(%s)) ORDER BY address",
                        ([m["address"] for m in parsed.mailboxes],))
            not_in_exports = [a for (a,) in cur.fetchall()]
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = old_autocommit
    return counts, not_in_exports


def find_mailbox(conn, address_or_id: str | int) -> MailboxRow | None:
    """One mailbox by id (an int or a string of digits) or by address (case-insensitive)."""
    by_id = isinstance(address_or_id, int) or str(address_or_id).isdigit()
    where, key = ("m.id = %s", int(address_or_id)) if by_id else ("lower(m.address) = lower(%s)", address_or_id)
    # the view mailbox_scope does not carry logins, spec or the connection id: the plain join does
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT m.id, m.address, m.source_login, m.dest_login, m.protocol, b.id, s.id,"
            " coalesce(s.airflow_conn_id, 'mailshift_' || replace(s.id, '-', '_')), b.spec"
            " FROM mailbox m JOIN household h ON h.id = m.household_id JOIN building b ON b.id = h.building_id"
            f" JOIN source_system s ON s.id = b.source_system WHERE {where}",
            (key,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return MailboxRow(*row[:8], row[8] or {})


def building_mailbox_ids(conn, building_id: str) -> list[int]:
    """The mailboxes of one building, by id."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT mailbox_id FROM mailbox_scope WHERE building_id = %s ORDER BY mailbox_id",
                    (building_id,))
        return [r[0] for r in cur.fetchall()]


def building_source_systems(conn) -> dict[str, str]:
    """building id -> source system, for the projection's per-pool simulation."""
    with conn.cursor() as cur:
        cur.execute("SELECT id, source_system FROM building")
        return dict(cur.fetchall())


def mailbox_size_rows(conn) -> Iterator[tuple[str, str, int | None, int | None, int | None]]:
    """(building id, address, quota_bytes, messages, bytes) per mailbox, ordered by building and
    mailbox id; messages/bytes are what the ledger counted for a mailbox already copied (None
    otherwise), so a projection after the pilot uses real sizes. Streams: 500k rows."""
    # quota_bytes is not in the view mailbox_scope: the plain two-table join is also the cheaper one
    with conn.cursor() as cur:
        cur.execute("""
            SELECT h.building_id, m.address, m.quota_bytes, fp.msgs, fp.bytes
            FROM mailbox m JOIN household h ON h.id = m.household_id
            LEFT JOIN (SELECT mailbox_id, sum(n_copied + n_refused + n_failed + n_expunged) AS msgs,
                              sum(bytes_copied) AS bytes
                       FROM folder_progress GROUP BY mailbox_id) fp ON fp.mailbox_id = m.id
            ORDER BY h.building_id, m.id""")
        yield from cur
