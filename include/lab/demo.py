"""`make demo`: the main job end to end on the built-in lab.

Resets the lab's mailshift database, generates the synthetic demo inventory and mail corpus,
loads the inventory from its legacy exports, puts the mail on the legacy servers, and then runs
mailshift the way an operator would. Each stage prints what it did; the run exits non-zero
when any stage fails or when the zero-loss proof does not hold.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psycopg2

SEED = 42
PROFILE = os.environ.get("MAILSHIFT_DEMO_PROFILE", "demo")


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def reset_database(cfg) -> str:
    """A clean `mailshift` database in the lab cluster, migrated to the current schema."""
    from mailshift.store import migrate

    dbname = cfg.pg_dsn.rsplit("/", 1)[1]
    admin = psycopg2.connect(cfg.pg_admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {dbname} OWNER mailshift")
    admin.close()
    applied = migrate.upgrade(cfg.pg_dsn)
    say(f"database {dbname} recreated; migrations applied: {', '.join(applied)}")
    return cfg.pg_dsn


DOMAIN = "lab.mailshift.test"
OPERATOR_REQUEST = "support desk (demo)"
OPERATOR_APPROVER = "Ops lead Sato (demo)"


def waive_refused(dsn: str) -> list[str]:
    """As an operator: waive each message the destination refused (over its size limit), by name."""
    from mailshift.cli import main as cli

    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            """SELECT f.id, m.address, f.kind, f.src_folder, f.src_uid FROM reconciliation_finding f
               JOIN mailbox m ON m.id = f.mailbox_id
               JOIN household h ON h.id = m.household_id JOIN building b ON b.id = h.building_id
               JOIN reconciliation r ON r.id = f.reconciliation_id
               WHERE b.domain = %s AND f.blocking AND f.waiver_id IS NULL
                 AND r.verify_run_id = (SELECT max(r2.verify_run_id) FROM reconciliation r2
                                        WHERE r2.mailbox_id = f.mailbox_id)""",
            (DOMAIN,))
        findings = cur.fetchall()
    conn.close()
    done = []
    for fid, address, kind, folder, uid in findings:
        rc = cli(["--db", dsn, "waive", address, "--finding", str(fid), "--by", OPERATOR_APPROVER,
                  "--requested-by", OPERATOR_REQUEST, "--reason",
                  "over the new provider's 25 MiB limit; customer gets it as a download link (ticket DEMO-1)"])
        if rc == 0:
            done.append(f"{address} {folder} uid {uid} ({kind})")
    return done


def notice_campaign(cfg, dsn: str, inv, exports: Path) -> None:
    """Months before the cutover, compressed: address audit, six email rounds through the lab MTA
    into the LEGACY mailboxes, letter and call lists for the contact centre, outcomes recorded."""
    import csv
    import io

    from lab.postfix import queue_ids, set_routes
    from mailshift.cli import main as cli

    set_routes(cfg, {m.address: (inv.system(m.source_system).lab_server, m.login) for m in inv.mailboxes})
    assert cli(["--db", dsn, "audit", "addresses", "--domain", DOMAIN]) == 0
    for n in range(1, 7):
        assert cli(["--db", dsn, "notices", "send", str(n), "--domain", DOMAIN,
                    "--smtp", f"{cfg.smtp_host}:{cfg.smtp_port}"]) == 0
    deadline = time.monotonic() + 180
    while queue_ids(cfg) and time.monotonic() < deadline:
        time.sleep(2)
    outcomes = io.StringIO()
    w = csv.writer(outcomes)
    w.writerow(["household_id", "channel", "outcome"])
    for channel, outcome in (("letters", "delivered"), ("calls", "reached")):
        out = exports.parent / f"{channel}.csv"
        assert cli(["--db", dsn, "notices", "export", channel, "--domain", DOMAIN, "--csv", str(out)]) == 0
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        say(f"contact centre list {out.name}: {len(rows)} affected household(s)")
        for r in rows:
            w.writerow([r["household_id"], channel[:-1], outcome])
    path = exports.parent / "outcomes.csv"
    path.write_text(outcomes.getvalue(), encoding="utf-8")
    assert cli(["--db", dsn, "notices", "record", str(path), "--by", "contact centre (demo)"]) == 0


def deliver_late(cfg, inv) -> str:
    """A mail that reaches the OLD server after the swap (DNS caches): the drain must catch it."""
    import datetime as dt

    from imapclient import IMAPClient

    from mailshift.protocols.imap.append import OutgoingMessage, multiappend

    mb = next(m for m in inv.mailboxes if m.address.lower().endswith("@" + DOMAIN) and m.protocol == "imap")
    server = cfg.servers[inv.system(mb.source_system).lab_server]
    c = IMAPClient(server.host, port=server.imap_port, ssl=False)
    c.login(server.master_login(mb.login), server.admin_password)
    raw = (b"From: late-sender@example.jp\r\nTo: " + mb.address.encode() + b"\r\nSubject: delivered to the old "
           b"MX after the swap\r\n\r\nThis mail was still routed to the legacy server.\r\n")
    assert multiappend(c, "INBOX", [OutgoingMessage((), dt.datetime.now(dt.UTC), raw)]).ok
    c.logout()
    return mb.address


def final_summary(cfg, dsn: str) -> bool:
    """The zero-loss proof per domain, in the product's own words (rules.proof), and the MX now served."""
    from lab.zone import current_mx
    from mailshift.rules import states
    from mailshift.rules.proof import proof_states, tally

    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            """WITH latest AS (SELECT DISTINCT ON (p.mailbox_id) p.* FROM proof p ORDER BY p.mailbox_id, p.id DESC)
               SELECT s.domain, coalesce(sum(l.src_messages), 0), coalesce(sum(l.matched), 0),
                      coalesce(sum(l.waived), 0)
               FROM mailbox_scope s LEFT JOIN latest l ON l.mailbox_id = s.mailbox_id
               GROUP BY s.domain ORDER BY s.domain""")
        rows = cur.fetchall()
        cur.execute("SELECT kind, status, old_rdata, new_rdata, approved_by, applied_at FROM dns_change"
                    " WHERE domain = %s ORDER BY id", (DOMAIN,))
        changes = cur.fetchall()
        cur.execute("SELECT count(*) FROM waiver WHERE revoked_at IS NULL")
        waivers = cur.fetchone()[0]
    final = tally(proof_states(conn, domain=DOMAIN, require_kind=states.FINAL))
    print("\n================ zero-loss proof ================")
    ok = True
    for domain, src, matched, waived in rows:
        t = tally(proof_states(conn, domain=domain))
        print(f"{domain}: {t['mailboxes']} mailboxes: {t[states.PROVEN]} {states.PROVEN}, {t[states.WAIVED]} "
              f"{states.WAIVED}, {t[states.NOT_PROVEN]} NOT proven"
              + (f" ({final['ok']} by the final proof)" if domain == DOMAIN else "")
              + f"; source messages {src}, matched exactly once {matched}, waived {waived}")
        if domain == DOMAIN:
            ok = ok and t[states.NOT_PROVEN] == 0 and final["ok"] == t["mailboxes"] and matched + waived >= src
    conn.close()
    print(f"waivers on record (each with a named approver): {waivers}")
    for kind, status, old, new, who, at in changes:
        print(f"dns_change {kind}: {status}; {old} -> {new}; approved by {who or '-'}; applied {at or '-'}")
    mx, ttl = current_mx(cfg)
    print(f"{DOMAIN} MX now served: {mx} (TTL {ttl})")
    print("=================================================")
    return ok and any("mx-new" in r for r in mx)


def client_settings_kit(cfg, dsn: str, building: str) -> str:
    """Thunderbird / Outlook / Apple files for one building's households; one household's dir."""
    from mailshift.customers import client_settings as cs
    from mailshift.store import db

    d = cfg.dest
    prof = cs.DestinationProfile("mailshift_dest", "Lab destination", cs.Server(d.host, d.imaps_port, "ssl"),
                                 cs.Server(cfg.smtp_host, cfg.smtp_port, "none"),
                                 cs.Server(d.host, d.pop3_port, "none"), d.prefix)
    conn = db.connect(dsn)
    try:
        kit = cs.export_kits(conn, Path(cfg.root) / "demo" / "client-settings", {"*": prof}, building=building)
    finally:
        conn.close()
    return str(kit["example"])


def main() -> int:
    from lab import corpus
    from lab.config import LabConfig
    from lab.connections import airflow_conn_env
    from lab.seed import seed_lab
    from mailshift.inventory.load import load_inventory
    from mailshift.store import db
    from mailshift.store.lookup import status_report

    cfg = LabConfig.load()
    os.environ.update(airflow_conn_env(cfg))
    os.environ["MAILSHIFT_DB_URL"] = cfg.pg_dsn
    started = time.monotonic()

    dsn = reset_database(cfg)
    inv = corpus.generate_inventory(SEED, PROFILE)
    exports = Path(cfg.root) / "demo" / "exports"
    corpus.write_exports(inv, exports, cfg)
    # The demo compresses the six months of notices into minutes: no lead time required.
    (exports / "defaults.yaml").write_text("notice_policy:\n  lead_days: 0\n", encoding="utf-8")
    conn = db.connect(dsn)
    report = load_inventory(conn, exports)
    say(str(report))
    seeded = seed_lab(cfg, inv)
    say(f"legacy servers seeded: {seeded['mailboxes']} mailboxes, {seeded['messages']} messages, "
        f"{seeded['bytes'] / 1e6:.1f} MB in {seeded['seconds']}s")

    # where the households' client-settings kits are published (an ISP's web server in production;
    # here the kit directory itself): every notice mail links to its household's kit
    kits = Path(cfg.root) / "demo" / "client-settings"
    os.environ.setdefault("MAILSHIFT_CLIENT_SETTINGS_URL", kits.as_uri())
    notice_campaign(cfg, dsn, inv, exports)
    say("customers told: six email rounds sent, letters and calls recorded")
    example = client_settings_kit(cfg, dsn, inv.buildings[0].id)
    say(f"client-settings kit of one household: {example} (its notice mails link to "
        f"{os.environ['MAILSHIFT_CLIENT_SETTINGS_URL'].rstrip('/')}/{Path(example).name}/)")

    from lab import zone
    from lab.airflow_home import ensure_metadata_db
    from lab.airflow_services import AirflowServices
    from mailshift.cli import main as cli

    snap = os.environ.get("MAILSHIFT_SNAPSHOT_DIR", str(Path(cfg.root) / "snapshot"))
    assert cli(["--db", dsn, "plan", "--pilot-buildings", "1", "--start", "2027-01-11", "--snapshot-dir", snap,
                "--brief"]) == 0
    # A short TTL to start from, so the demo does not wait an hour for the old TTL to expire.
    zone.reset_mx(cfg, ttl=30)
    safe = DOMAIN.replace(".", "_")
    # A clean Airflow metadata database: no run of an earlier demo may hold a DAG's only slot.
    with AirflowServices(cfg, ensure_metadata_db(cfg, fresh=True)) as af:
        say(f"Airflow is up: {af.base} (login: operator, password in .lab/airflow/passwords.json)")
        from mailshift.planning.snapshot import read_manifest

        waves = [w["number"] for w in read_manifest(snap)["waves"]]
        for dag_id in [f"mailshift_wave_{n}" for n in waves] + [f"mailshift_cutover_{safe}",
                                                                f"mailshift_lower_ttl_{safe}"]:
            af.wait_for_dag(dag_id)
        af.api("PATCH", f"/dags/mailshift_cutover_{safe}", {"is_paused": False})
        for b in _buildings(dsn):
            af.wait_for_dag(f"mailshift_building_{b}")
            af.api("PATCH", f"/dags/mailshift_building_{b}", {"is_paused": False})
        run = af.trigger(f"mailshift_lower_ttl_{safe}", {"ttl": 10})
        say(f"lower the MX TTL of {DOMAIN} to 10 s: {af.wait_for_run(f'mailshift_lower_ttl_{safe}', run)}")
        for n in waves:
            t = time.monotonic()
            run = af.trigger(f"mailshift_wave_{n}", {"pass_kind": "prestage"})
            state = af.wait_for_run(f"mailshift_wave_{n}", run, timeout=1800)
            say(f"wave {n}: {state} in {time.monotonic() - t:.0f}s")
        st = status_report(conn)
        say("ledger: " + ", ".join(f"{k} {v['count']}" for k, v in st["messages"].items() if v["count"]))
        waived = waive_refused(dsn)
        for w in waived:
            say(f"waived by {OPERATOR_APPROVER}: {w}")
        for b in _unproven_buildings(dsn, DOMAIN):
            run = af.trigger(f"mailshift_building_{b}", {"pass_kind": "delta"})
            say(f"building {b} re-run after the waiver: {af.wait_for_run(f'mailshift_building_{b}', run)}")
        run_id = _wait_for_asset_run(af, f"mailshift_cutover_{safe}")
        say(f"all buildings of {DOMAIN} proven: the cutover DAG started by their Asset events ({run_id})")
        af.respond(f"mailshift_cutover_{safe}", run_id, "approve_mx_swap", "Approve")
        say("MX swap approved through the Airflow API by the operator")
        _wait_for_task(af, f"mailshift_cutover_{safe}", run_id, "swap_mx")
        say(f"MX swapped; a late mail reaches the old server for {deliver_late(cfg, inv)}")
        state = af.wait_for_run(f"mailshift_cutover_{safe}", run_id, timeout=1800)
        say(f"cutover of {DOMAIN}: {state}")
    conn.close()
    ok = final_summary(cfg, dsn)
    say(f"done in {time.monotonic() - started:.0f}s")
    return 0 if ok and state == "success" else 1


def _buildings(dsn: str) -> list[str]:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM building ORDER BY id")
        out = [r[0] for r in cur.fetchall()]
    conn.close()
    return out


def _unproven_buildings(dsn: str, domain: str) -> list[str]:
    from mailshift.rules.proof import proof_states

    conn = psycopg2.connect(dsn)
    out = sorted({s.building_id for s in proof_states(conn, domain=domain) if not s.ok}
                 | _failed_building_runs(conn, domain))
    conn.close()
    return out


def _failed_building_runs(conn, domain: str) -> set[str]:
    """Buildings whose proof holds only with a waiver: their DAG must run again to emit the Asset."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT h.building_id FROM waiver w JOIN mailbox m ON m.id = w.mailbox_id"
                    " JOIN household h ON h.id = m.household_id JOIN building b ON b.id = h.building_id"
                    " WHERE b.domain = %s AND w.revoked_at IS NULL", (domain,))
        return {r[0] for r in cur.fetchall()}


def _wait_for_asset_run(af, dag_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = af.api("GET", f"/dags/{dag_id}/dagRuns?limit=5&order_by=-run_after")["dag_runs"]
        if runs:
            return runs[0]["dag_run_id"]
        time.sleep(3)
    raise TimeoutError(f"{dag_id} was not started by its Asset events")


def _wait_for_task(af, dag_id: str, run_id: str, task_id: str, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = af.task_states(dag_id, run_id).get((task_id, -1))
        if state == "success":
            return
        if state in ("failed", "upstream_failed", "skipped"):
            raise RuntimeError(f"{dag_id}.{task_id} ended {state}")
        time.sleep(3)
    raise TimeoutError(f"{dag_id}.{task_id} did not finish")


if __name__ == "__main__":
    sys.exit(main())
