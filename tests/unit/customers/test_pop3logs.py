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
    assert got == {"poptest2": ["pop3_apop", "pop3_leave_on_server"],
                   "hanako..takahashi": ["pop3_apop"],
                   "sato.ichiro": ["pop3_leave_on_server"]}


def test_courier_excerpt_exact():
    r = pop3logs.parse_files([FIX / "courier.log"], year=2025)
    assert r.lines == 9
    assert r.malformed == 2  # LOGOUT without user, impossible time
    assert set(r.usage) == {"takahashi.misaki.", "suzuki"}
    t = r.usage["takahashi.misaki."]
    assert (t.logins, t.sessions, t.apop_logins) == (1, 1, 0)
    assert t.ips == {"203.0.113.50": 1}
    assert t.retr_sessions == 0  # Courier logs no DELE: leave-on-server unknown
    assert t.findings() == []
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
