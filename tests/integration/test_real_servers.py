"""Issue #13 against real non-Dovecot servers (Cyrus IMAP 3.6 from Debian, `lab.cyrus`):
per-mailbox passwords for a legacy server without a master user, identity proof of every
session, and the copier + verifier end to end. Every check reads the servers directly."""

from __future__ import annotations

import datetime as dt

import pytest

from mailshift.copy.copy_one import copy_one
from mailshift.errors import CredentialsError, IdentityMismatch
from mailshift.protocols.imap.append import OutgoingMessage, multiappend
from mailshift.protocols.imap.session import fetch_range, open_session
from mailshift.protocols.pop3 import read_uidls
from mailshift.verify import verify_mailbox
from support import realservers as rs
from support.mail import ledger_states

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fresh_probes")]

WHEN = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=9)))


def message(i: int, extra: bytes = b"") -> bytes:
    return (b"From: a@example.net\r\nTo: b@example.net\r\nSubject: m" + str(i).encode() + b"\r\n"
            + b"Message-ID: <m" + str(i).encode() + b"@example.net>\r\n" + extra + b"\r\nbody " + str(i).encode()
            + b"\r\n")


def fill(cfg, mb, folders: dict[str, list[bytes]]) -> None:
    with rs.imap(cfg, mb.source, mb.source_login, mb.source_password) as c:
        for folder, raws in folders.items():
            if folder != "INBOX":
                c.create_folder(folder)
                c.subscribe_folder(folder)
            for raw in raws:
                assert multiappend(c, folder, [OutgoingMessage((b"\\Seen",), WHEN, raw)]).ok


def resolver(cfg, tmp_path, mb, dest_auth="user", **dest_extra):
    src_cred = rs.write_credentials(tmp_path / "src.credentials", {mb.source_login: mb.source_password})
    dst_cred = rs.write_credentials(tmp_path / "dest.credentials", {mb.dest_login: mb.dest_password})
    eps = {rs.conn_id(mb.source): rs.endpoint(cfg, mb.source, "user", src_cred),
           "mailshift_dest": rs.endpoint(cfg, "cyrus-dest", dest_auth, dst_cred if dest_auth == "user" else None,
                                         **dest_extra)}
    return eps.__getitem__


def test_per_mailbox_passwords_copy_and_prove(lab_config, db, tmp_path):
    """Legacy Cyrus without any master user -> Cyrus destination, each side logged in with the
    mailbox's own password from a 0600 credentials file; the verifier proves it the same way."""
    cfg = lab_config
    mb = rs.add_mailbox(db, cfg, "cyrus-legacy")
    fill(cfg, mb, {"INBOX": [message(1), message(2, b"X-Raw: \xe6\x97\xa5\xe6\x9c\xac\r\n")],
                   "Projects": [message(3)], "Projects/2024": [message(4), message(5)]})
    resolve = resolver(cfg, tmp_path, mb)
    summary = copy_one(db, mb.id, "prestage", resolve=resolve)
    assert (summary.copied, summary.refused) == (5, 0)
    assert ledger_states(db, mb.id) == {1: 5}
    src = rs.snapshot(cfg, mb.source, mb.source_login, mb.source_password)
    dst = rs.snapshot(cfg, "cyrus-dest", mb.dest_login, mb.dest_password)
    for folder, items in src.items():
        assert dst[folder] == items, folder
    verdict = verify_mailbox(db, mb.id, resolve)
    assert verdict.state == "proven", verdict.as_dict()
    again = copy_one(db, mb.id, "delta", resolve=resolve)
    assert (again.copied, again.already) == (0, 5)


def test_credentials_file_readable_by_others_is_refused(lab_config, db, tmp_path):
    cfg = lab_config
    mb = rs.add_mailbox(db, cfg, "cyrus-legacy")
    path = rs.write_credentials(tmp_path / "loose.credentials", {mb.source_login: mb.source_password}, mode=0o644)
    ep = rs.endpoint(cfg, mb.source, "user", path)
    with pytest.raises(CredentialsError, match=r"mode 0644, readable by group or others: refused; run `chmod 600"):
        open_session(ep, mb.source_login)
    path.chmod(0o600)
    rs.write_credentials(path, {"someone-else": "x"})
    with pytest.raises(CredentialsError, match=f"no password for {mb.source_login} in {path}"):
        open_session(ep, mb.source_login)


def test_authzid_the_server_does_not_check_is_refused_before_any_byte(lab_config, db, tmp_path):
    """cyrus-dest grants its admin SASL PLAIN authzid for ANY name (even one that does not exist:
    it creates the mailbox). The probe catches it: copy, verify and POP3 all refuse with
    IdentityMismatch, and nothing reaches the ledger as copied or proven."""
    cfg = lab_config
    mb = rs.add_mailbox(db, cfg, "cyrus-legacy")
    fill(cfg, mb, {"INBOX": [message(1)]})
    resolve = resolver(cfg, tmp_path, mb, dest_auth="authzid")
    with pytest.raises(IdentityMismatch, match="accepted a SASL PLAIN with authorization identity for the "
                                               "non-existent mailbox 'mailshift-identity-probe-"):
        copy_one(db, mb.id, "prestage", resolve=resolve)
    assert ledger_states(db, mb.id) == {}
    with pytest.raises(IdentityMismatch):
        verify_mailbox(db, mb.id, resolve)
    with db, db.cursor() as cur:
        cur.execute("SELECT count(*) FROM proof WHERE mailbox_id = %s", (mb.id,))
        assert cur.fetchone()[0] == 0
    with pytest.raises(IdentityMismatch, match="^POP3 127.0.0.1:"):
        read_uidls(resolve("mailshift_dest"), mb.dest_login)
    # the destination mailbox was never touched: no APPEND, no folder
    assert rs.snapshot(cfg, "cyrus-dest", mb.dest_login, mb.dest_password) == {"INBOX": {}}


def src_a_to_cyrus(cfg, tmp_path, mb):
    from lab.connections import imap_uri
    from mailshift.protocols.endpoint import parse_endpoint

    dst_cred = rs.write_credentials(tmp_path / "dest.credentials", {mb.dest_login: mb.dest_password})
    eps = {"mailshift_src_a": parse_endpoint(imap_uri(cfg, "src-a")),
           "mailshift_dest": rs.endpoint(cfg, "cyrus-dest", "user", dst_cred)}
    return eps.__getitem__


def test_folders_the_destination_refuses_stay_folder_level(lab_config, db, tmp_path):
    """Dovecot (src-a) holds `{brace}`, `quote"d`, `back\\slash`, `per%cent`; Cyrus refuses to
    CREATE each. Each refusal is recorded with Cyrus's words, the other folders copy, the proof is
    blocked, and a rerun does the same without a traceback."""
    cfg = lab_config
    mb = rs.add_mailbox(db, cfg, "src-a")
    bad = ["{brace}", 'quote"d', "back\\slash", "per%cent"]
    fill(cfg, mb, {"INBOX": [message(1)], "Good": [message(2)], **{name: [message(10 + i)] for i, name in enumerate(bad)}})
    resolve = src_a_to_cyrus(cfg, tmp_path, mb)
    for kind in ("prestage", "delta"):
        summary = copy_one(db, mb.id, kind, resolve=resolve)
        refused = {r["folder"]: r for r in summary.folders_refused}
        assert sorted(refused) == sorted(bad)
        assert all(r["command"] == "CREATE" and r["reason"] == "create failed: Invalid mailbox name"
                   for r in refused.values())
        assert summary.copied == (2 if kind == "prestage" else 0)
    with db, db.cursor() as cur:
        cur.execute("SELECT src_name, state, detail FROM folder WHERE mailbox_id = %s AND state = 'unmappable'",
                    (mb.id,))
        rows = {r[0]: r[2] for r in cur.fetchall()}
    assert sorted(rows) == sorted(bad)
    assert rows["per%cent"] == "destination refused CREATE 'per%cent': create failed: Invalid mailbox name"
    dst = rs.snapshot(cfg, "cyrus-dest", mb.dest_login, mb.dest_password)
    assert sum(dst["INBOX"].values()) == 1 and sum(dst["Good"].values()) == 1
    verdict = verify_mailbox(db, mb.id, resolve)
    assert (verdict.state, verdict.verdict) == ("not_proven", "failed")
    blocking = {f.src_folder for f in verdict.findings if f.blocking}
    assert blocking >= set(bad) and "Good" not in blocking and "INBOX" not in blocking


def test_collision_is_refused_before_anything_is_written(lab_config, db, tmp_path):
    """The building spec's folder_map sends `Old` onto `Keep`, which also exists at the source:
    refused before any folder is created or message appended."""
    from mailshift.errors import FolderCollision

    cfg = lab_config
    mb = rs.add_mailbox(db, cfg, "src-a", spec={"folder_map": {"Old": "Keep"}})
    fill(cfg, mb, {"INBOX": [message(1)], "Old": [message(2)], "Keep": [message(3)]})
    resolve = src_a_to_cyrus(cfg, tmp_path, mb)
    with pytest.raises(FolderCollision, match=r"'Keep', 'Old' -> 'Keep'|'Old', 'Keep' -> 'Keep'"):
        copy_one(db, mb.id, "prestage", resolve=resolve)
    assert ledger_states(db, mb.id) == {}
    assert rs.snapshot(cfg, "cyrus-dest", mb.dest_login, mb.dest_password) == {"INBOX": {}}


def test_stale_x_uidl_is_replaced_not_stacked(lab_config, db):
    """A POP3 mailbox whose message already carries `X-UIDL: stale-from-old-client` (an old POP3
    client stored it): the destination gets exactly one X-UIDL, the legacy UIDL; the ledger keeps
    the removed bytes and offset; the proof reverses exactly that and proves the mailbox; the
    destination's POP3 UIDLs equal the legacy ones."""
    from lab.connections import imap_uri
    from mailshift.protocols.endpoint import parse_endpoint
    from support.mail import add_mailbox, imap, pop3_uidls, unique_login

    cfg = lab_config
    mb = add_mailbox(db, cfg, "src-a", unique_login("xu"), "pop3", spec={"uidl_strategy": "x-uidl-header"})
    stale = b"X-UIDL: stale-from-old-client\r\n"
    raws = [message(1, stale), message(2), b"X-UIDL: leading-stale\r\n" + message(3)]
    with imap(cfg, "src-a", mb.source_login) as c:
        assert multiappend(c, "INBOX", [OutgoingMessage((), WHEN, r) for r in raws]).ok
    eps = {"mailshift_src_a": parse_endpoint(imap_uri(cfg, "src-a")), "mailshift_dest": parse_endpoint(imap_uri(cfg, "dest"))}
    summary = copy_one(db, mb.id, "prestage", resolve=eps.__getitem__)
    assert summary.copied == 3
    legacy = pop3_uidls(cfg, "src-a", mb.source_login)
    with imap(cfg, "dest", mb.dest_login) as c:
        c.select_folder("INBOX", readonly=True)
        bodies = [d[b"BODY[]"] for _, d in sorted(fetch_range(c, "1:*", ["BODY.PEEK[]"]).items())]
    for body, uidl in zip(bodies, legacy, strict=True):
        head = body.split(b"\r\n\r\n", 1)[0]
        assert head.lower().count(b"x-uidl:") == 1 and body.startswith(b"X-UIDL: " + uidl.encode() + b"\r\n")
    assert b"stale" not in b"".join(bodies)
    assert sorted(pop3_uidls(cfg, "dest", mb.dest_login)) == sorted(legacy)
    with db, db.cursor() as cur:
        cur.execute("SELECT transform_detail FROM message WHERE mailbox_id = %s ORDER BY src_uid", (mb.id,))
        details = [r[0] for r in cur.fetchall()]
    offset = message(1).index(b"\r\n\r\n") + 2
    assert details == [{"removed": [[offset, stale.hex()]]}, None, {"removed": [[0, b"X-UIDL: leading-stale\r\n".hex()]]}]
    from mailshift.store.verification import read_ledger  # what the verifier reverses: the declaration

    _folders, rows, _as_of = read_ledger(db, mb.id)
    assert [r[10] for r in sorted(rows, key=lambda r: r[1])] == details
    verdict = verify_mailbox(db, mb.id, eps.__getitem__)
    assert verdict.state == "proven", verdict.reasons


def test_uidvalidity_change_never_counts_twice(lab_config, db, tmp_path):
    """Cyrus rebuilds a folder (deleted and created again: new UIDVALIDITY) between passes, with
    one message fewer and one new. The ledger moves what it finds again to the new epoch: status,
    the ledger and the proof agree with the servers (4 real messages, 4 copied, none twice)."""
    from mailshift.store.lookup import status_report

    cfg = lab_config
    mb = rs.add_mailbox(db, cfg, "cyrus-legacy")
    fill(cfg, mb, {"INBOX": [message(1)], "Box": [message(2), message(3), message(4)]})
    resolve = resolver(cfg, tmp_path, mb)
    assert copy_one(db, mb.id, "prestage", resolve=resolve).copied == 4
    with rs.imap(cfg, mb.source, mb.source_login, mb.source_password) as c:
        before = c.select_folder("Box", readonly=True)[b"UIDVALIDITY"]
        c.close_folder()
        c.delete_folder("Box")
    fill(cfg, mb, {"Box": [message(2), message(3), message(5)]})   # 4 is gone, 5 is new
    with rs.imap(cfg, mb.source, mb.source_login, mb.source_password) as c:
        assert c.select_folder("Box", readonly=True)[b"UIDVALIDITY"] != before
    for kind in ("delta", "final"):
        summary = copy_one(db, mb.id, kind, resolve=resolve)
        assert summary.copied == (1 if kind == "delta" else 0)
    assert ledger_states(db, mb.id) == {1: 4, 4: 1}       # 4 copied now at the source, 1 expunged since
    assert status_report(db)["messages"]["copied"]["count"] == 4
    dst = rs.snapshot(cfg, "cyrus-dest", mb.dest_login, mb.dest_password)
    assert sum(dst["Box"].values()) == 4                   # 2, 3, 4 (kept) and 5: nothing appended twice
    verdict = verify_mailbox(db, mb.id, resolve)
    assert verdict.state == "proven", verdict.reasons
    assert verdict.src_count == 4


def test_exports_name_the_destination_login(tmp_path):
    """systems.yaml `dest_login` rule per system, and an optional dest_login column that wins."""
    from mailshift.errors import InventoryError
    from mailshift.inventory.load import parse_exports

    (tmp_path / "systems.yaml").write_text(
        "systems:\n"
        "  - {id: legacy, kind: cyrus, imap_host: 127.0.0.1, imap_port: 143, tls: none, max_connections: 4,\n"
        "     airflow_conn_id: mailshift_legacy, export_format: alpha, dest_login: '{local_part}.{domain}'}\n")
    header = "building_id,building_name,domain,household_id,contact_name,address,login,protocol,quota_mb"
    (tmp_path / "legacy.csv").write_text(
        header + ",dest_login\n"
        "B1,Bldg,real.mailshift.test,H1,A,Taro@Real.Mailshift.Test,c100,imap,,\n"
        "B1,Bldg,real.mailshift.test,H2,B,hanako@real.mailshift.test,c101,pop3,,u-77\n")
    parsed = parse_exports(tmp_path)
    assert [m["dest_login"] for m in parsed.mailboxes] == ["taro.real.mailshift.test", "u-77"]
    (tmp_path / "systems.yaml").write_text((tmp_path / "systems.yaml").read_text().replace(
        "'{local_part}.{domain}'", "'{user}'"))
    with pytest.raises(InventoryError, match=r"systems.yaml:3: systems.0.dest_login: dest_login '\{user\}'"):
        parse_exports(tmp_path)


def test_preflight_refuses_a_connection_that_is_not_the_declared_server(lab_config, db, tmp_path):
    from mailshift.copy.preflight import preflight_building

    cfg = lab_config
    mb = rs.add_mailbox(db, cfg, "cyrus-legacy")
    resolve = resolver(cfg, tmp_path, mb)
    results = preflight_building(db, mb.building, resolve, "mailshift_dest")
    assert [r.ok for r in results] == [True], results[0].problems
    legacy = cfg.cyrus["cyrus-legacy"]
    wrong = {rs.conn_id(mb.source): rs.endpoint(cfg, "cyrus-dest", "user"), "mailshift_dest": resolve("mailshift_dest")}
    with pytest.raises(IdentityMismatch, match=rf"source system 'cyrus-legacy': systems.yaml and its connection "
                                               rf"disagree \(port {legacy['imap_port']} != "
                                               rf"{cfg.cyrus['cyrus-dest']['imap_port']}\): fix the connection"):
        preflight_building(db, mb.building, wrong.__getitem__, "mailshift_dest")


def test_destination_alteration_is_recorded_at_copy_time(lab_config, db, tmp_path):
    """Cyrus (munge8bit, its default) stores a raw 8-bit header byte as `X` and still says OK
    with an APPENDUID. The copier reads every stored message back: that message becomes state 5
    `altered` with its class and byte-level evidence, never `copied`; the others are copied; the
    proof does not pass."""
    cfg = lab_config
    mb = rs.add_mailbox(db, cfg, "src-a")
    raw8 = message(2, "Subject2: 日本語\r\n".encode())
    fill(cfg, mb, {"INBOX": [message(1), raw8, message(3)]})
    resolve = src_a_to_cyrus(cfg, tmp_path, mb)
    summary = copy_one(db, mb.id, "prestage", resolve=resolve)
    assert (summary.copied, summary.altered, summary.stored_checked) == (2, 1, 3)
    assert summary.alterations[0]["class"] == "header_bytes_replaced"
    assert ledger_states(db, mb.id) == {1: 2, 5: 1}
    with db, db.cursor() as cur:
        cur.execute("SELECT dest_uid, detail FROM message WHERE mailbox_id = %s AND state = 5", (mb.id,))
        dest_uid, detail = cur.fetchone()
    offset = raw8.index("日".encode())
    assert dest_uid is not None
    assert detail.startswith(f"header_bytes_replaced: stored {len(raw8)} bytes sha256 ")
    assert f"appended {len(raw8)} bytes; first difference at byte {offset}: appended e697a5e69cace8aa9e" in detail
    assert "stored 585858585858585858" in detail and "9 byte(s) differ" in detail
    again = copy_one(db, mb.id, "delta", resolve=resolve)    # not appended a second time
    assert (again.copied, again.altered) == (0, 0)
    assert sum(rs.snapshot(cfg, "cyrus-dest", mb.dest_login, mb.dest_password)["INBOX"].values()) == 3
    assert verify_mailbox(db, mb.id, resolve).state == "not_proven"


def test_pop3_only_legacy_mailbox_is_copied_and_proven_with_its_uidls(lab_config, db, tmp_path):
    """cyrus-pop offers no IMAP at all. The copier reads it with UIDL, LIST and RETR only (the
    mailbox's own password), appends into the destination INBOX with X-UIDL, the same ledger
    records every UIDL, the destination serves the legacy UIDLs, the source keeps every message,
    and the proof re-reads the source over POP3."""
    from lab.connections import imap_uri
    from lab.cyrus import deliver_lmtp
    from mailshift.protocols.endpoint import parse_endpoint
    from support.mail import pop3_uidls

    cfg = lab_config
    mb = rs.add_mailbox(db, cfg, "cyrus-pop", dest="dest", protocol="pop3", spec={"uidl_strategy": "x-uidl-header"})
    raws = [message(1), message(2, b"X-UIDL: stale\r\n"), message(3, b"Date: Tue, 7 May 2024 10:00:00 +0900\r\n")]
    deliver_lmtp(cfg.cyrus["cyrus-pop"], mb.source_login, raws)
    legacy = rs.pop3_uidls(cfg, "cyrus-pop", mb.source_login, mb.source_password)
    assert len(legacy) == 3
    cred = rs.write_credentials(tmp_path / "pop.credentials", {mb.source_login: mb.source_password})
    eps = {rs.conn_id("cyrus-pop"): rs.endpoint(cfg, "cyrus-pop", "user", cred),
           "mailshift_dest": parse_endpoint(imap_uri(cfg, "dest"))}
    assert not eps[rs.conn_id("cyrus-pop")].imap
    summary = copy_one(db, mb.id, "prestage", resolve=eps.__getitem__)
    assert (summary.copied, summary.refused, summary.altered, summary.stored_checked) == (3, 0, 0, 3)
    assert sorted(pop3_uidls(cfg, "dest", mb.dest_login)) == sorted(legacy)
    assert rs.pop3_uidls(cfg, "cyrus-pop", mb.source_login, mb.source_password) == legacy   # nothing deleted
    with db, db.cursor() as cur:
        cur.execute("SELECT f.src_uidvalidity, m.pop3_uidl, m.state FROM message m JOIN folder f ON f.id = m.folder_id"
                    " WHERE m.mailbox_id = %s", (mb.id,))
        rows = cur.fetchall()
    assert sorted(r[1] for r in rows) == sorted(legacy) and {(r[0], r[2]) for r in rows} == {(0, 1)}
    again = copy_one(db, mb.id, "delta", resolve=eps.__getitem__)
    assert (again.copied, again.already) == (0, 3)
    verdict = verify_mailbox(db, mb.id, eps.__getitem__)
    assert verdict.state == "proven", verdict.reasons
    assert verdict.src_count == 3
