"""POP3 log parsers on real-format excerpts (Dovecot 2.3 own log + syslog, Courier pop3d)."""
import datetime as dt
import gzip
from pathlib import Path

from mailshift.customers import pop3logs

FIX = Path(__file__).parents[1] / "fixtures" / "pop3logs"


def test_dovecot_excerpt_exact():
    r = pop3logs.parse_files([FIX / "dovecot.log"], year=2025)
    assert r.lines == 16
    assert r.malformed == 2  # empty user=<>, retr=garbage
    assert [s[1] for s in r.malformed_samples] == [14, 15]
    assert set(r.usage) == {"poptest2", "hanako..takahashi", "sato.ichiro"}
    p = r.usage["poptest2"]
    assert (p.logins, p.apop_logins, p.sessions, p.retr_sessions, p.keep_sessions) == (2, 1, 2, 2, 2)
    assert dict(p.methods) == {"PLAIN": 1, "APOP": 1}
    assert p.last_login == dt.datetime(2026, 11, 26, 4, 46, 11)
    assert p.last_cmds is None  # Dovecot's log cannot tell
    h = r.usage["hanako..takahashi"]  # login case folded
    assert (h.logins, h.apop_logins, h.retr_sessions, h.keep_sessions) == (1, 1, 1, 0)
    assert h.ips == {"203.0.113.7": 1}
    assert h.last_login == dt.datetime(2025, 11, 25, 21, 3, 7)
    s = r.usage["sato.ichiro"]
    assert (s.logins, s.apop_logins, s.sessions, s.retr_sessions, s.keep_sessions) == (2, 0, 2, 1, 1)
    assert s.last_login == dt.datetime(2025, 11, 26, 7, 15, 2)
    got = {k: [f[0] for f in u.findings()] for k, u in r.usage.items()}
    # the normal log never shows LAST: unknown, never "no"
    assert got == {"poptest2": ["pop3_apop", "pop3_last_unknown", "pop3_leave_on_server"],
                   "hanako..takahashi": ["pop3_apop", "pop3_last_unknown"],
                   "sato.ichiro": ["pop3_last_unknown", "pop3_leave_on_server"]}
    f = s.facts()
    assert f["apop"] == ("no", "2 logins, methods PLAIN=2", "dovecot log")
    assert f["leave_on_server"].value == "yes" and f["uidl"].value == "unknown"
    assert h.facts()["leave_on_server"] == ("no", "each of 1 downloading sessions deleted",
                                            "dovecot log")


def test_courier_excerpt_exact():
    r = pop3logs.parse_files([FIX / "courier.log"], year=2025)
    assert r.lines == 9
    assert r.malformed == 2  # LOGOUT without user, impossible time
    assert set(r.usage) == {"takahashi.misaki.", "suzuki"}
    t = r.usage["takahashi.misaki."]
    assert (t.logins, t.sessions, t.apop_logins) == (1, 1, 0)
    assert t.ips == {"203.0.113.50": 1}
    assert t.retr_sessions == 0  # Courier logs no DELE: leave-on-server unknown
    facts = t.facts()
    assert {k: f.value for k, f in facts.items()} == {
        "apop": "unknown", "last": "unknown", "leave_on_server": "unknown", "uidl": "unknown"}
    assert facts["leave_on_server"].source == "courier log"
    assert "without DELE counts" in facts["leave_on_server"].evidence
    assert [k for k, _ in t.findings()] == ["pop3_apop_unknown", "pop3_last_unknown",
                                            "pop3_leave_on_server_unknown"]
    assert r.usage["suzuki"].logins == 1
    assert r.by_format == {"courier": 4}


def test_mixed_and_gzip(tmp_path):
    data = (FIX / "dovecot.log").read_bytes() + (FIX / "courier.log").read_bytes()
    gz = tmp_path / "all.log.gz"
    with gzip.open(gz, "wb") as f:
        f.write(data)
    r = pop3logs.parse_files([gz], year=2025)
    assert r.lines == 25 and r.malformed == 4 and len(r.usage) == 5


def test_garbage_never_fatal():
    lines = [b"\xff\xfe pop3-login: Login: user=<x", b"", b"pop3(", b"courierpop3login: LOGIN, user=",
             "Nov 26 07:22:00 h dovecot: pop3(ユーザ)<1><s>: Disconnected: Logged out top=0/0, retr=1/1, del=0/1".encode()]
    r = pop3logs.parse_lines(lines, year=2025)
    assert r.lines == 5 and r.malformed >= 2
    assert "ユーザ" in r.usage


RAW = FIX / "rawlog"   # real Dovecot 2.3 rawlog_dir output (lab src-a, pop3_enable_last = yes)


def test_rawlog_directory_gives_last_uidl_and_dele():
    r = pop3logs.parse_files([RAW], year=2026)
    k, d = r.usage["keeper"].facts(), r.usage["deleter"].facts()
    assert k["last"] == ("yes", "LAST in 1 of 1 rawlog sessions", "dovecot rawlog")
    assert k["uidl"].value == "yes" and k["leave_on_server"].value == "yes"
    assert d["last"] == ("no", "1 rawlog sessions, none sent LAST", "dovecot rawlog")
    assert d["leave_on_server"].value == "no" and d["uidl"].value == "yes"
    assert k["apop"].value == "unknown"     # post-login rawlog: the login is not in it
    kinds = {f.kind for f in r.by_file.values()}
    assert kinds == {"rawlog", "rawlog-out"} and r.malformed == 0
    assert r.usage["keeper"].last_cmds == 1


def test_rawlog_plus_normal_log_combine(tmp_path):
    """The normal log decides APOP, the rawlog LAST: one usage, each fact from its source."""
    log = tmp_path / "dovecot.log"
    log.write_text("2026-12-06T23:07:54 pop3-login: Info: Login: user=<keeper>, method=APOP, "
                   "rip=127.0.0.1, lip=127.0.0.1, mpid=1, session=<a>\n")
    r = pop3logs.parse_files([log, next((RAW / "keeper").glob("*.in"))])
    f = r.usage["keeper"].facts()
    assert f["apop"].value == "yes" and f["apop"].source == "dovecot log"
    assert f["last"].source == "dovecot rawlog"


def test_rawlog_malformed_and_imap_sessions(tmp_path):
    d = tmp_path / "u1"
    d.mkdir()
    (d / "20260101-000000.1.1.in").write_bytes(b"1.5 x\r\n1796598474.1 UIDL\r\n\xff\xfe junk\r\n")
    (d / "20260101-000000.2.1.in").write_bytes(b"1796598474.1 a1 CAPABILITY\r\n")
    r = pop3logs.parse_files([tmp_path])
    st = r.by_file[str(d / "20260101-000000.1.1.in")]
    assert (st.kind, st.malformed, st.lines) == ("rawlog", 2, 1)
    assert r.by_file[str(d / "20260101-000000.2.1.in")].kind == "rawlog-imap"
    assert r.usage["u1"].facts()["uidl"].value == "yes"
    assert all("\x00" not in s[2] for s in r.malformed_samples)
