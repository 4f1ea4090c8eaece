"""The verifier against the real lab servers: tampering behind the copier's back is caught and
named, the GX suite fails, waivers are explicit, and the whole test corpus is proven after a copy.

Tampering uses direct IMAP sessions to the destination (never the copier or the ledger)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import psycopg2
import pytest
from integration.test_copier import put, run

from lab import corpus, users
from lab.connections import imap_uri
from mailshift import cli
from mailshift.protocols.endpoint import parse_endpoint
from mailshift.protocols.imap.append import OutgoingMessage, multiappend
from mailshift.rules import states
from mailshift.verify import (
    WaiverError,
    create_waiver,
    proof_state,
    revoke_waiver,
    verify_building,
    verify_mailbox,
)
from support.mail import add_mailbox, fresh_database, imap, pop3_uidls, unique_login

pytestmark = pytest.mark.integration
SERVERS = {"mailshift_src_a": "src-a", "mailshift_src_b": "src-b", "mailshift_dest": "dest"}


@pytest.fixture(scope="module")
def inv():
    return corpus.generate_inventory(42, "test")


@pytest.fixture
def dsn(lab_config):
    with fresh_database(lab_config) as dsn:
        yield dsn


@pytest.fixture
def db(dsn):
    conn = psycopg2.connect(dsn)
    yield conn
    conn.close()


def resolver(cfg):
    return lambda conn_id: parse_endpoint(imap_uri(cfg, SERVERS[conn_id]))


def ledger(db, mailbox_id):
    """{(src folder name, src_uid): (dest folder, dest_uid, state)}"""
    with db, db.cursor() as cur:
        cur.execute("SELECT f.src_name, m.src_uid, f.dest_name, m.dest_uid, m.state FROM message m"
                    " JOIN folder f ON f.id = m.folder_id WHERE m.mailbox_id = %s", (mailbox_id,))
        return {(a, b): (c, d, e) for a, b, c, d, e in cur.fetchall()}


def building_of(db, mailbox_id):
    with db, db.cursor() as cur:
        cur.execute("SELECT h.building_id FROM mailbox m JOIN household h ON h.id = m.household_id WHERE m.id = %s",
                    (mailbox_id,))
        return cur.fetchone()[0]


def kinds(findings):
    return sorted(f.kind for f in findings if f.blocking)


def test_tampering_is_caught_and_named(lab_config, db, dsn, inv, tmp_path):
    cfg = lab_config
    showcase = next(m for m in inv.mailboxes if m.showcase and m.source_system == "src-a")
    mb = add_mailbox(db, cfg, "src-a", unique_login("v"), "imap")
    put(cfg, "src-a", mb.source_login, list(corpus.mailbox_messages(inv, showcase)))
    assert run(db, cfg, mb).refused == 0
    clean = verify_mailbox(db, mb.id, resolver(cfg))
    assert clean.state == "proven" and clean.findings == [] and clean.matched == clean.src_count > 100

    led = ledger(db, mb.id)
    inbox = sorted(uid for (f, uid), (_, _, s) in led.items() if f == "INBOX" and s == states.COPIED)
    projects = sorted(uid for (f, uid), _ in led.items() if f == "Projects")
    deleted_src, altered_src, dup_src, flag_src = inbox[0], projects[0], inbox[1], inbox[2]
    with imap(cfg, "dest", mb.dest_login) as c:
        # 1. delete one message
        c.select_folder("INBOX")
        c.delete_messages([led[("INBOX", deleted_src)][1]])
        c.expunge()
        # 2. duplicate one (a second APPEND of the same bytes, flags and date)
        d = c.fetch([led[("INBOX", dup_src)][1]], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[led[("INBOX", dup_src)][1]]
        dup = multiappend(c, "INBOX", [OutgoingMessage(tuple(f.decode() for f in d[b"FLAGS"] if f != b"\\Recent"),
                                                       d[b"INTERNALDATE"], d[b"BODY[]"])])
        # 3. a stray message from nowhere
        stray = multiappend(c, "INBOX", [OutgoingMessage((), dt.datetime(2024, 2, 2, tzinfo=dt.UTC),
                                                         b"Subject: stray\r\nMessage-ID: <stray@x>\r\n\r\nhello\r\n")])
        # 4. change one flag
        flag_dest = led[("INBOX", flag_src)][1]
        had = c.get_flags([flag_dest])[flag_dest]
        (c.remove_flags if b"\\Flagged" in had else c.add_flags)([flag_dest], [b"\\Flagged"])
        # 5. alter one: same headers, one body byte changed, same flags and date
        c.select_folder("Projects")
        pdest = led[("Projects", altered_src)][1]
        d = c.fetch([pdest], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[pdest]
        body = d[b"BODY[]"]
        cut = body.index(b"\r\n\r\n") + 4
        changed = body[:cut] + (b"X" if body[cut:cut + 1] != b"X" else b"Y") + body[cut + 1:]
        assert len(changed) == len(body) and changed != body
        altered = multiappend(c, "Projects", [OutgoingMessage(tuple(f.decode() for f in d[b"FLAGS"] if f != b"\\Recent"),
                                                              d[b"INTERNALDATE"], changed)])
        c.delete_messages([pdest])
        c.expunge()

    v = verify_building(db, building_of(db, mb.id), resolver(cfg), reports=tmp_path, dsn=dsn)
    mv = v.mailboxes[0]
    assert mv.state == "not_proven" and not v.proven and not v.gx_success
    by = {f.kind: f for f in mv.findings}
    assert kinds(mv.findings) == ["digest_mismatch", "duplicate_at_dest", "flags_mismatch", "missing_at_dest",
                                  "unexpected_at_dest"], [f.label() for f in mv.findings]
    assert (by["missing_at_dest"].src_folder, by["missing_at_dest"].src_uid,
            by["missing_at_dest"].dest_uid) == ("INBOX", deleted_src, led[("INBOX", deleted_src)][1])
    assert (by["duplicate_at_dest"].src_uid, by["duplicate_at_dest"].dest_uid) == (dup_src, dup.uids[0])
    assert (by["unexpected_at_dest"].src_uid, by["unexpected_at_dest"].dest_uid,
            by["unexpected_at_dest"].dest_folder) == (None, stray.uids[0], "INBOX")
    assert (by["flags_mismatch"].src_uid, by["flags_mismatch"].dest_uid) == (flag_src, flag_dest)
    assert "\\Flagged" in by["flags_mismatch"].detail
    assert (by["digest_mismatch"].src_folder, by["digest_mismatch"].src_uid,
            by["digest_mismatch"].dest_uid) == ("Projects", altered_src, altered.uids[0])
    assert by["digest_mismatch"].dest_sha256 == hashlib.sha256(changed).digest()
    # every finding is in PostgreSQL, and the GX suite names what failed
    with db, db.cursor() as cur:
        cur.execute("SELECT kind, src_uid, dest_uid, src_folder FROM reconciliation_finding f JOIN reconciliation r"
                    " ON r.id = f.reconciliation_id WHERE r.verify_run_id = %s ORDER BY kind", (v.verify_run_id,))
        assert [r[0] for r in cur.fetchall()] == kinds(mv.findings)
        cur.execute("SELECT success, failed, result FROM gx_validation WHERE verify_run_id = %s", (v.verify_run_id,))
        success, failed, result = cur.fetchone()
    failing = {r["expectation_config"]["kwargs"].get("column") or r["expectation_config"]["kwargs"].get("column_A")
               for r in result["results"] if not r["success"]}
    assert not success and {"missing_open", "duplicated_open", "altered_open", "unexpected_open", "flags_open",
                            "src_count_net"} <= failing, failing
    page = (tmp_path / building_of(db, mb.id) / "latest.html").read_text()
    assert "NOT PROVEN" in page and "duplicate_at_dest" in page and str(stray.uids[0]) in page

    # waivers: explicit, named, reasoned; each one covers only what it names
    with pytest.raises(WaiverError, match="reason"):
        create_waiver(db, mb.id, "tanaka", "  ", whole_mailbox=True)
    with pytest.raises(WaiverError, match="four eyes"):
        create_waiver(db, mb.id, "tanaka", "r", whole_mailbox=True, requested_by="tanaka")
    fid = {}
    with db, db.cursor() as cur:
        cur.execute("SELECT kind, f.id FROM reconciliation_finding f JOIN reconciliation r ON r.id = f.reconciliation_id"
                    " WHERE r.verify_run_id = %s", (v.verify_run_id,))
        fid = dict(cur.fetchall())
    ws = [create_waiver(db, mb.id, "tanaka", f"audit case {k}", finding_id=fid[k], requested_by="sato")
          for k in ("missing_at_dest", "duplicate_at_dest", "unexpected_at_dest", "digest_mismatch")]
    st = proof_state(db, mb.id)
    assert st.state == "not_proven" and len(st.reasons) == 1 and "flags_mismatch" in st.reasons[0].detail
    wflag = create_waiver(db, mb.id, "tanaka", "customer re-flagged", folder="INBOX", src_uid=flag_src)
    assert proof_state(db, mb.id).state == "waived"
    v2 = verify_building(db, building_of(db, mb.id), resolver(cfg), reports=tmp_path, dsn=dsn)
    assert v2.gx_success and v2.proven and v2.mailboxes[0].state == "waived" and v2.mailboxes[0].waived == 5
    page = (tmp_path / building_of(db, mb.id) / "latest.html").read_text()
    assert "PROVEN WITH WAIVERS" in page and "customer re-flagged" in page and "tanaka" in page
    revoke_waiver(db, wflag.id, "suzuki")
    st = proof_state(db, mb.id)
    assert st.state == "not_proven" and "flags_mismatch" in st.reasons[0].detail
    assert any("revoked by suzuki" in w for w in st.waivers) and len(ws) == 4


def test_pop3_uidl_removed_is_caught(lab_config, db, dsn, inv, tmp_path):
    cfg = lab_config
    pop = next(m for m in inv.mailboxes if m.protocol == "pop3" and m.source_system == "src-b")
    mb = add_mailbox(db, cfg, "src-b", unique_login("v"), "pop3", spec={"uidl_strategy": "x-uidl-header"})
    put(cfg, "src-b", mb.source_login, list(corpus.mailbox_messages(inv, pop)))
    run(db, cfg, mb, uidl_strategy="x-uidl-header")
    legacy = pop3_uidls(cfg, "src-b", mb.source_login)
    assert pop3_uidls(cfg, "dest", mb.dest_login) == legacy
    ok = verify_mailbox(db, mb.id, resolver(cfg))
    assert ok.state == "proven" and ok.counts["transformed"] == len(legacy) and ok.counts["uidl_mismatch"] == 0

    # remove the X-UIDL line of one destination message (so its UIDL becomes the server's own)
    led = ledger(db, mb.id)
    src_uid = sorted(uid for (_, uid) in led)[3]
    dest_uid = led[("INBOX", src_uid)][1]
    with imap(cfg, "dest", mb.dest_login) as c:
        c.select_folder("INBOX")
        d = c.fetch([dest_uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[dest_uid]
        body = d[b"BODY[]"]
        assert body.startswith(b"X-UIDL: ")
        stripped = body[body.index(b"\r\n") + 2:]
        multiappend(c, "INBOX", [OutgoingMessage(tuple(f.decode() for f in d[b"FLAGS"] if f != b"\\Recent"),
                                                 d[b"INTERNALDATE"], stripped)])
        c.delete_messages([dest_uid])
        c.expunge()
    removed = legacy[3]
    assert removed not in pop3_uidls(cfg, "dest", mb.dest_login)

    v = verify_building(db, building_of(db, mb.id), resolver(cfg), reports=tmp_path, dsn=dsn)
    mv = v.mailboxes[0]
    assert not v.gx_success and mv.state == "not_proven"
    uidl = [f for f in mv.findings if f.kind == "uidl_mismatch"]
    assert any(f.pop3_uidl == removed and f.src_uid == src_uid for f in uidl), [f.label() for f in uidl]
    altered = [f for f in mv.findings if f.kind == "digest_mismatch"]
    assert len(altered) == 1 and altered[0].src_uid == src_uid and "X-UIDL" in altered[0].detail
    assert "missing_at_dest" not in kinds(mv.findings)
    page = (tmp_path / building_of(db, mb.id) / "latest.html").read_text()
    assert removed in page and "uidl_mismatch" in page


def test_expunged_at_source_is_reported_not_blocking(lab_config, db, inv):
    cfg = lab_config
    mb = add_mailbox(db, cfg, "src-a", unique_login("v"), "imap")
    msgs = [corpus.Message("INBOX", f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode(), (),
                           dt.datetime(2023, 1, 1 + i, tzinfo=dt.UTC)) for i in range(4)]
    put(cfg, "src-a", mb.source_login, msgs)
    run(db, cfg, mb)
    with imap(cfg, "src-a", mb.source_login) as c:
        c.select_folder("INBOX")
        c.delete_messages([c.search("ALL")[0]])
        c.expunge()
    v = verify_mailbox(db, mb.id, resolver(cfg))       # before any delta pass: ledger still says copied
    assert v.state == "proven" and [f.kind for f in v.findings] == ["expunged_at_source"]
    assert v.counts["expunged_kept"] == 1 and v.src_count == 3 and v.dest_count == 4
    run(db, cfg, mb, pass_kind="delta")                 # now ledger state 4
    v = verify_mailbox(db, mb.id, resolver(cfg), mode="sample")
    assert v.state == "proven" and [f.kind for f in v.findings] == ["expunged_at_source"]


def _load_corpus(db, cfg, inv):
    """The test corpus's buildings, households and mailboxes, with fresh unique logins."""
    out = []
    with db, db.cursor() as cur:
        for s in inv.systems:
            server = cfg.servers[s.lab_server]
            cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, pop3_port, tls, max_connections,"
                        " airflow_conn_id) VALUES (%s, 'dovecot', '127.0.0.1', %s, %s, 'none', 8, %s)"
                        " ON CONFLICT DO NOTHING", (s.id, server.imap_port, server.pop3_port,
                                                    "mailshift_" + s.lab_server.replace("-", "_")))
        for d in inv.domains:
            cur.execute("INSERT INTO domain (name) VALUES (%s) ON CONFLICT DO NOTHING", (d,))
        for b in inv.buildings:
            cur.execute("INSERT INTO building (id, name, domain, source_system, spec) VALUES (%s, %s, %s, %s, %s)",
                        (b.id, b.name, b.domain, b.source_system, json.dumps(b.spec_override or {})))
        for h in inv.households:
            cur.execute("INSERT INTO household (id, building_id) VALUES (%s, %s)", (h.id, h.building_id))
        for m in inv.mailboxes:
            login = unique_login("c")
            addr = f"{login}@{m.address.split('@')[1]}"
            cur.execute("INSERT INTO mailbox (household_id, address, source_login, dest_login, protocol)"
                        " VALUES (%s, %s, %s, %s, %s) RETURNING id", (m.household_id, addr, login, addr, m.protocol))
            server = next(s.lab_server for s in inv.systems if s.id == m.source_system)
            out.append((cur.fetchone()[0], m, server, login, addr))
    return out


def test_whole_test_corpus_is_proven_after_a_copy(lab_config, db, dsn, inv, tmp_path):
    from support.mail import LabMailbox

    cfg = lab_config
    rows = _load_corpus(db, cfg, inv)
    for mid, m, server, login, addr in rows:
        users.ensure_users(cfg, server, [(login, None, None)])
        users.ensure_users(cfg, "dest", [(addr, None, None)])
        put(cfg, server, login, list(corpus.mailbox_messages(inv, m)))
        spec = next(b.spec_override or {} for b in inv.buildings if b.id == m.building_id)
        run(db, cfg, LabMailbox(mid, addr, server, login, addr, m.protocol),
            uidl_strategy=spec.get("uidl_strategy", "none"), folder_map=spec.get("folder_map"))
    with db, db.cursor() as cur:
        cur.execute("SELECT m.address, f.src_name, g.src_uid FROM message g JOIN folder f ON f.id = g.folder_id"
                    " JOIN mailbox m ON m.id = g.mailbox_id WHERE g.state <> 1")
        unsettled = cur.fetchall()
    for b in inv.buildings:
        v = verify_building(db, b.id, resolver(cfg), reports=tmp_path, dsn=dsn)
        page = (tmp_path / b.id / "latest.html").read_text()
        blocked = {a for a, _, _ in unsettled}
        for mv in v.mailboxes:
            if mv.address in blocked:     # refused by the destination: blocks until waived
                assert mv.state == "not_proven" and all("missing_at_dest" in r for r in mv.reasons)
                create_waiver(db, mv.mailbox_id, "tanaka", "over the size limit; customer sent it by other means",
                              whole_mailbox=True)
            else:
                assert mv.state == "proven", mv.reasons
                assert mv.matched == mv.src_count and not [f for f in mv.findings if f.blocking]
        if any(mv.address in blocked for mv in v.mailboxes):
            assert not v.gx_success
            v = verify_building(db, b.id, resolver(cfg), reports=tmp_path, dsn=dsn)
            page = (tmp_path / b.id / "latest.html").read_text()
            assert "PROVEN WITH WAIVERS" in page and "over the size limit" in page
        assert v.gx_success and v.proven and not v.errors, v.gx_result["statistics"]
        assert "Verdict: <span class='ok'>" in page and "NOT PROVEN" not in page
        assert len(v.mailboxes) == sum(1 for m in inv.mailboxes if m.building_id == b.id)


def test_cli_verify_and_waive(lab_config, db, dsn, monkeypatch, capsys, tmp_path):
    cfg = lab_config
    for conn_id, server in SERVERS.items():
        monkeypatch.setenv("AIRFLOW_CONN_" + conn_id.upper(), imap_uri(cfg, server))
    mb = add_mailbox(db, cfg, "src-a", unique_login("v"), "imap")
    put(cfg, "src-a", mb.source_login, [corpus.Message("INBOX", b"Subject: a\r\n\r\nx\r\n", (),
                                                       dt.datetime(2023, 1, 1, tzinfo=dt.UTC))])
    run(db, cfg, mb)
    bad = [(["verify"], "exactly one of MAILBOX"),
           (["verify", mb.address, "--building", "B1"], "exactly one of MAILBOX"),
           (["verify", "nobody@nowhere"], "no mailbox"),
           (["verify", "--building", "NOPE"], "no building"),
           (["verify", mb.address, "--sample-rate", "2"], "sample-rate"),
           (["waive", mb.address, "--reason", "x", "--whole-mailbox"], "--by NAME is required"),
           (["waive", mb.address, "--by", "tanaka", "--whole-mailbox"], "needs a reason"),
           (["waive", mb.address, "--by", "tanaka", "--reason", "r"], "exactly one target"),
           (["waive", mb.address, "--by", "tanaka", "--reason", "r", "--folder", "Nope", "--uid", "1"],
            "no source folder"),
           (["waive", mb.address, "--by", "tanaka", "--reason", "r", "--folder", "INBOX", "--uid", "999"],
            "no source UID 999"),
           (["waive", "--revoke", "12345", "--by", "tanaka"], "no waiver #12345")]
    for argv, words in bad:
        assert cli.main(["--db", dsn] + argv) == 2, argv
        assert words in capsys.readouterr().err, argv
    assert cli.main(["--db", dsn, "verify", mb.address]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "proven"
    assert cli.main(["--db", dsn, "verify", "--building", building_of(db, mb.id), "--mode", "sample",
                     "--reports-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["proven"] and out["gx_success"] and out["report"].startswith(str(tmp_path))
    with imap(cfg, "dest", mb.dest_login) as c:
        c.select_folder("INBOX")
        c.delete_messages(c.search("ALL"))
        c.expunge()
    assert cli.main(["--db", dsn, "verify", str(mb.id)]) == 1     # the check ran and said no: not proven
    assert "missing_at_dest" in capsys.readouterr().out
    assert cli.main(["--db", dsn, "waive", mb.address, "--by", "tanaka", "--reason", "test message",
                     "--folder", "INBOX", "--uid", "1"]) == 0
    assert "recorded waiver #" in capsys.readouterr().out
    assert proof_state(db, mb.id).state == "waived"
    assert cli.main(["--db", dsn, "waive", mb.address, "--list"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["approved_by"] == "tanaka"
