"""Streaming parsers for legacy POP3 server logs, and the per-login usage they add up to.
No database: `mailshift.customers.audit.run_pop3_audit` maps logins to mailboxes and stores it.

Formats (auto-detected per line, so a concatenation of both works):
- Dovecot 2.x (`dovecot`): syslog (`Nov 26 04:45:33 host dovecot: pop3-login: Login: ...`) or
  Dovecot's own log file (`2026-11-26T04:45:33 pop3-login: Info: Login: ...`):
  `pop3-login: Login: user=<u>, method=APOP, rip=1.2.3.4, lip=..., mpid=N, session=<..>` and
  `pop3(u)<pid><session>: Disconnected: Logged out top=0/0, retr=1/2048, del=0/1, size=2048`
  (the default `pop3_logout_format`; extra `key=value` fields are kept).
- Courier pop3d (`courier`): `courierpop3login: LOGIN, user=u, ip=[::ffff:1.2.3.4],
  port=[1234]` (older builds add `, protocol=POP3`) and `courierpop3login: LOGOUT, user=u,
  ip=[..], port=[..], top=0, retr=2, rcvd=40, sent=9999, time=3` (`pop3d:` / `pop3d-ssl:`
  prefixes too).

- Dovecot rawlog (`rawlog`, `mailshift.customers.rawlog`): `rawlog_dir = .../%u` writes one
  `<date>-<time>.<pid>.<n>.in` / `.out` pair per session; the `.in` file holds every command the
  client sent (LAST, UIDL, RETR, DELE; APOP/USER with a pre-login rawlog). The login is the
  directory name. Files (`*.in`; `*.out` are skipped) and directories (searched) are accepted.

What each source can tell (`facts()`: yes / no / unknown, with the evidence and the source):
| | APOP | LAST | leave on server (RETR without DELE) | UIDL |
|---|---|---|---|---|
| Dovecot log | method=APOP | cannot tell | retr=n, del=0 with messages left | cannot tell |
| Courier log | only if `method=` is logged | cannot tell | cannot tell (no DELE count) | cannot tell |
| Dovecot rawlog | APOP (pre-login rawlog) | LAST | RETR/TOP and no DELE | UIDL |
A fact is `no` only when a source that can tell saw the login and saw no use; when no source
can tell it stays `unknown` (never a silent "no").
Lines that look like POP3 lines of a known format but do not parse are `malformed`: counted,
the first `sample_size` kept with their line numbers, never fatal. Lines of other services are
`ignored`. Memory is bounded by the number of distinct logins, not by the log size: the file
is read line by line (bytes, decoded leniently), gzip/xz/bz2 by suffix.
"""
from __future__ import annotations

import bz2
import datetime as _dt
import gc
import gzip
import io
import lzma
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mailshift.customers import rawlog

YES, NO, UNKNOWN = "yes", "no", "unknown"
RAWLOG = "dovecot rawlog"
FACTS = ("apop", "last", "leave_on_server", "uidl")


class Fact(NamedTuple):
    """One three-valued audit fact: its value, what decided it, and the log source."""
    value: str       # yes | no | unknown
    evidence: str
    source: str


SOURCE_NAMES = {"dovecot": "dovecot log", "courier": "courier log", "rawlog": RAWLOG}


def _printable(raw: bytes) -> str:
    """A log line for a sample: control characters (NUL cannot be stored) shown escaped."""
    text = raw.decode("utf-8", "replace").rstrip()
    return "".join(c if c.isprintable() or c == "\t" else f"\\x{ord(c):02x}" for c in text)


def _counts(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "-"


MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# timestamps: ISO (Dovecot log_timestamp / rsyslog high precision) or classic syslog
_TS_ISO = re.compile(rb"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})")
_TS_SYSLOG = re.compile(rb"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}:\d{2}:\d{2})")

_DC_LOGIN = re.compile(
    rb"pop3-login: (?:Info: )?Login: user=<(?P<user>[^>]*)>, method=(?P<method>[A-Za-z0-9_-]+)"
    rb"(?:, rip=(?P<rip>[^,\s]+))?")
_DC_LOGOUT = re.compile(
    rb"pop3\((?P<user>[^)]*)\)(?:<[^>]*>)*: (?:Info: )?Disconnected(?::| for| in)? ?(?P<rest>.*)$")
_DC_KV = re.compile(rb"([a-z_]+)=([^,\s]*)")
_DC_PAIR = re.compile(rb"^(\d+)/(\d+)$")
_DC_COUNTERS = re.compile(rb"top=(\d+)/\d+, retr=(\d+)/\d+, del=(\d+)/(\d+)")

_CO_LINE = re.compile(rb"(?:courierpop3login|pop3d|pop3d-ssl|courier-pop3d)(?:\[\d+\])?: "
                      rb"(?P<ev>LOGIN|LOGOUT|DISCONNECTED|TIMEOUT), (?P<rest>.*)$")
_CO_KV = re.compile(rb"([a-z]+)=(\[[^\]]*\]|[^,\s]*)")


@dataclass
class Pop3Usage:
    """What the log says about one login."""
    login: str
    logins: int = 0
    apop_logins: int = 0
    methods: dict = field(default_factory=dict)
    sessions: int = 0                  # logouts seen
    retr_sessions: int = 0             # sessions that downloaded (RETR/TOP) something
    keep_sessions: int = 0             # ... and deleted nothing although messages were there
    last_cmds: int | None = None       # None: the format cannot tell
    uidl_cmds: int | None = None
    first_login: _dt.datetime | None = None
    last_login: _dt.datetime | None = None
    clients: dict = field(default_factory=dict)
    ips: dict = field(default_factory=dict)
    formats: set = field(default_factory=set)
    method_logins: int = 0             # logins whose method the log records
    method_sources: set = field(default_factory=set)
    dele_sources: set = field(default_factory=set)   # sources with DELE counts for this login
    blind_dl_sessions: int = 0         # downloading sessions whose log has no DELE count
    raw_sessions: int = 0              # POP3 rawlog sessions (post-login commands seen)
    raw_auth_sessions: int = 0         # rawlog sessions with the login command (pre-login)
    raw_apop: int = 0
    raw_last: int = 0
    raw_uidl: int = 0

    @property
    def leave_on_server(self) -> bool:
        """At least one session downloaded without deleting (the client keeps mail on the
        server; after a UIDL change it downloads everything again)."""
        return self.keep_sessions > 0

    def _sources(self) -> str:
        return ", ".join(sorted(SOURCE_NAMES.get(f, f) for f in self.formats))

    def facts(self) -> dict[str, Fact]:
        """APOP, LAST, leave-on-server and UIDL use: yes / no / unknown, evidence, source."""
        return {"apop": self._apop(), "last": self._raw_cmd("LAST", self.raw_last),
                "leave_on_server": self._leave(), "uidl": self._raw_cmd("UIDL", self.raw_uidl)}

    def _apop(self) -> Fact:
        src = ", ".join(sorted(self.method_sources)) or "logs"
        if self.apop_logins or self.raw_apop:
            return Fact(YES, f"{self.apop_logins + self.raw_apop} APOP logins "
                        f"({self.logins} logins logged)", src if self.apop_logins else RAWLOG)
        if self.logins and self.method_logins == self.logins:
            return Fact(NO, f"{self.logins} logins, methods {_counts(self.methods)}", src)
        if self.raw_auth_sessions:
            return Fact(NO, f"{self.raw_auth_sessions} rawlog sessions logged in without APOP",
                        RAWLOG)
        return Fact(UNKNOWN, f"{self.logins - self.method_logins} of {self.logins} logins logged "
                    "without the login method" if self.logins else "no login seen",
                    self._sources())

    def _raw_cmd(self, cmd: str, n: int) -> Fact:
        if n:
            return Fact(YES, f"{cmd} in {n} of {self.raw_sessions} rawlog sessions", RAWLOG)
        if self.raw_sessions:
            return Fact(NO, f"{self.raw_sessions} rawlog sessions, none sent {cmd}", RAWLOG)
        return Fact(UNKNOWN, f"the logs read do not record POP3 commands ({cmd}); give the "
                    "Dovecot rawlog files of this login", self._sources())

    def _leave(self) -> Fact:
        src = ", ".join(sorted(self.dele_sources))
        if self.keep_sessions:
            return Fact(YES, f"{self.keep_sessions} of {self.retr_sessions} downloading sessions "
                        "deleted nothing", src)
        if self.retr_sessions and not self.blind_dl_sessions:
            return Fact(NO, f"each of {self.retr_sessions} downloading sessions deleted", src)
        if self.retr_sessions:
            return Fact(UNKNOWN, f"{self.retr_sessions} sessions deleted, {self.blind_dl_sessions}"
                        " more downloaded in a log without DELE counts",
                        self._sources())
        return Fact(UNKNOWN, f"{self.blind_dl_sessions} downloading sessions in a log without DELE "
                    "counts" if self.blind_dl_sessions else
                    f"no downloading session in the logs read ({self.sessions} sessions)",
                    self._sources())

    def findings(self) -> list[tuple[str, str]]:
        """(kind, detail) per fact that is yes (`pop3_<fact>`) or unknown (`pop3_<fact>_unknown`);
        UIDL use is a fact only (it matters with leave-on-server, which is a finding)."""
        out = []
        for name, f in self.facts().items():
            if name == "uidl" or f.value == NO:
                continue
            out.append((f"pop3_{name}" if f.value == YES else f"pop3_{name}_unknown",
                        f"{f.evidence} [{f.source}]" if f.source else f.evidence))
        return out

    def as_dict(self) -> dict:
        return {"login": self.login, "logins": self.logins, "apop_logins": self.apop_logins,
                "methods": dict(self.methods), "sessions": self.sessions,
                "retr_sessions": self.retr_sessions, "keep_sessions": self.keep_sessions,
                "leave_on_server": self.leave_on_server, "last_cmds": self.last_cmds,
                "uidl_cmds": self.uidl_cmds,
                "first_login": self.first_login.isoformat() if self.first_login else None,
                "last_login": self.last_login.isoformat() if self.last_login else None,
                "clients": dict(self.clients),
                "ips": dict(sorted(self.ips.items(), key=lambda kv: -kv[1])[:5]),
                "formats": sorted(self.formats),
                "facts": {k: f._asdict() for k, f in self.facts().items()}}


@dataclass
class FileStats:
    """What one input file gave: lines, events, ignored and malformed lines."""
    kind: str            # log | rawlog | rawlog-out | rawlog-imap
    lines: int = 0
    events: int = 0
    ignored: int = 0
    malformed: int = 0


@dataclass
class ParseResult:
    usage: dict[str, Pop3Usage] = field(default_factory=dict)
    lines: int = 0
    events: int = 0
    ignored: int = 0
    malformed: int = 0
    malformed_samples: list[tuple[str, int, str]] = field(default_factory=list)
    bytes: int = 0
    by_format: Counter = field(default_factory=Counter)
    by_file: dict[str, FileStats] = field(default_factory=dict)

    def get(self, login: str) -> Pop3Usage:
        u = self.usage.get(login)
        if u is None:
            u = self.usage[login] = Pop3Usage(login)
        return u


_MONTHS_B = {k.encode(): v for k, v in MONTHS.items()}


def _timestamp(line: bytes, year: int) -> _dt.datetime | None:
    # fast path: classic syslog "Mon dd hh:mm:ss"
    mon = _MONTHS_B.get(line[:3])
    if mon and line[15:16] == b" " and line[9:10] == b":" and line[12:13] == b":":
        try:
            return _dt.datetime(year, mon, int(line[4:6]), int(line[7:9]), int(line[10:12]),
                                int(line[13:15]))
        except ValueError:
            return None
    m = _TS_ISO.match(line)
    if m:
        try:
            return _dt.datetime.fromisoformat(f"{m.group(1).decode()}T{m.group(2).decode()}")
        except ValueError:
            return None
    m = _TS_SYSLOG.match(line)
    if m and m.group(1).decode() in MONTHS:
        try:
            h, mi, s = (int(x) for x in m.group(3).split(b":"))
            return _dt.datetime(year, MONTHS[m.group(1).decode()], int(m.group(2)), h, mi, s)
        except ValueError:
            return None
    return None


def _open(path: Path):
    s = path.suffix
    if s == ".gz":
        return gzip.open(path, "rb")
    if s == ".xz":
        return lzma.open(path, "rb")
    if s == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb", buffering=1 << 20)


class Pop3LogParser:
    """Feed lines (bytes) with `feed`; read `result`. One instance per audit (several files)."""

    def __init__(self, *, year: int | None = None, sample_size: int = 20,
                 normalize_login=str.lower):
        self.year = year or _dt.date.today().year
        self.sample_size = sample_size
        self.norm = normalize_login
        self.result = ParseResult()
        self._file = "-"
        self._stats: FileStats | None = None
        self._ts_cache: dict[bytes, _dt.datetime | None] = {}

    def _bad(self, lineno: int, line: bytes, why: str) -> None:
        r = self.result
        r.malformed += 1
        if self._stats is not None:
            self._stats.malformed += 1
        if len(r.malformed_samples) < self.sample_size:
            r.malformed_samples.append(
                (f"{self._file}:{lineno}", lineno,
                 f"{why}: {_printable(line[:300])}"))

    def feed(self, line: bytes, lineno: int = 0) -> None:
        r = self.result
        r.lines += 1
        r.bytes += len(line)
        if b"pop3" not in line:
            r.ignored += 1
            return
        if b"pop3-login:" in line or b"pop3(" in line:
            self._dovecot(line, lineno)
        elif b"courierpop3login" in line or b"pop3d" in line:
            self._courier(line, lineno)
        else:
            r.ignored += 1

    def _dovecot(self, line: bytes, lineno: int) -> None:
        r = self.result
        if b"pop3-login:" in line:
            if b" Login: " not in line:
                r.ignored += 1  # aborted logins, auth failures: not usage
                return
            m = _DC_LOGIN.search(line)
            ts = self._ts(line)
            if not m or not m.group("user") or ts is None:
                return self._bad(lineno, line, "dovecot login line")
            u = self.get(m.group("user"), "dovecot")
            method = m.group("method").decode("ascii", "replace").upper()
            u.logins += 1
            u.method_logins += 1
            u.method_sources.add("dovecot log")
            u.methods[method] = u.methods.get(method, 0) + 1
            if method == "APOP":
                u.apop_logins += 1
            if m.group("rip"):
                ip = m.group("rip").decode("ascii", "replace")
                u.ips[ip] = u.ips.get(ip, 0) + 1
            self._seen(u, ts)
            r.events += 1
            r.by_format["dovecot"] += 1
            return
        m = _DC_LOGOUT.search(line)
        if not m:
            r.ignored += 1  # other pop3(user) lines: mail_log events, errors
            return
        rest = m.group("rest")
        c = _DC_COUNTERS.search(rest)
        if c is None:  # non-default pop3_logout_format: key=value in any order
            kv = dict(_DC_KV.findall(rest))
            if b"retr" not in kv or b"del" not in kv:
                return self._bad(lineno, line, "dovecot logout line")
            retr, dele = _DC_PAIR.match(kv[b"retr"]), _DC_PAIR.match(kv[b"del"])
            top = _DC_PAIR.match(kv.get(b"top", b"0/0"))
            if not retr or not dele or not top:
                return self._bad(lineno, line, "dovecot logout counters")
            n_retr, n_del, n_msgs = (int(retr.group(1)) + int(top.group(1)),
                                     int(dele.group(1)), int(dele.group(2)))
        else:
            n_retr, n_del, n_msgs = int(c[1]) + int(c[2]), int(c[3]), int(c[4])
        u = self.get(m.group("user"), "dovecot")
        u.dele_sources.add("dovecot log")
        self._session(u, n_retr, n_del, n_msgs)
        r.events += 1
        r.by_format["dovecot"] += 1

    def _courier(self, line: bytes, lineno: int) -> None:
        r = self.result
        m = _CO_LINE.search(line)
        if not m:
            r.ignored += 1  # Connection, LOGIN FAILED, Disconnected without user, ...
            return
        ev = m.group("ev")
        kv = {k: v.strip(b"[]") for k, v in _CO_KV.findall(m.group("rest"))}
        ts = self._ts(line)
        user = kv.get(b"user")
        if not user or ts is None:
            return self._bad(lineno, line, f"courier {ev.decode()} line")
        if ev == b"LOGIN":
            u = self.get(user, "courier")
            u.logins += 1
            if b"method" in kv:   # most Courier builds do not log it: APOP stays unknown
                u.method_logins += 1
                u.method_sources.add("courier log")
            method = kv.get(b"method", b"UNLOGGED").decode("ascii", "replace").upper()
            u.methods[method] = u.methods.get(method, 0) + 1
            if method == "APOP":
                u.apop_logins += 1
            if kv.get(b"ip"):
                ip = kv[b"ip"].decode("ascii", "replace")
                ip = ip[7:] if ip.startswith("::ffff:") else ip
                u.ips[ip] = u.ips.get(ip, 0) + 1
            self._seen(u, ts)
        else:
            try:
                retr = int(kv.get(b"retr", b"0")) + int(kv.get(b"top", b"0"))
            except ValueError:
                return self._bad(lineno, line, "courier counters")
            if b"retr" not in kv:
                return self._bad(lineno, line, "courier LOGOUT without retr")
            u = self.get(user, "courier")
            # Courier does not log DELE: a session that downloaded counts as "kept" only when
            # the log says so (no such field): leave-on-server stays unknown for Courier
            self._session(u, retr, None, None)
        r.events += 1
        r.by_format["courier"] += 1

    def _ts(self, line: bytes) -> _dt.datetime | None:
        key = line[:19]
        c = self._ts_cache
        if key in c:
            return c[key]
        if len(c) > 100_000:
            c.clear()
        ts = c[key] = _timestamp(line, self.year)
        return ts

    def get(self, raw_user: bytes, fmt: str) -> Pop3Usage:
        u = self.result.get(self.norm(raw_user.decode("utf-8", "replace")))
        u.formats.add(fmt)
        return u

    @staticmethod
    def _seen(u: Pop3Usage, ts: _dt.datetime) -> None:
        if u.first_login is None or ts < u.first_login:
            u.first_login = ts
        if u.last_login is None or ts > u.last_login:
            u.last_login = ts

    @staticmethod
    def _session(u: Pop3Usage, retr: int, dele: int | None, msgs: int | None) -> None:
        u.sessions += 1
        if retr > 0 and dele is None:
            u.blind_dl_sessions += 1
        if retr > 0 and dele is not None:
            u.retr_sessions += 1
            if dele == 0 and (msgs or 0) > 0:
                u.keep_sessions += 1

    def feed_file(self, path: str | Path) -> None:
        """One input: a log file, a Dovecot rawlog file (`*.in`; `*.out` are skipped) or a
        directory (every file under it, rawlog or log). Counts per file in result.by_file."""
        path = Path(path)
        if path.is_dir():
            for f in sorted(x for x in path.rglob("*") if x.is_file()):
                self.feed_file(f)
            return
        if rawlog.is_rawlog(path):
            self._file = str(path)
            self._stats = st = self.result.by_file[str(path)] = FileStats("rawlog")
            try:
                rawlog.feed_session(self, path, st)
            finally:
                self._stats = None
            return
        self._file = str(path)
        self._stats = st = self.result.by_file[str(path)] = FileStats("log")
        before = (self.result.lines, self.result.events, self.result.ignored)
        # the cyclic GC would rescan the growing per-login table over and over (half the
        # time on a 5 GB log); nothing here makes reference cycles
        was = gc.isenabled()
        gc.disable()
        try:
            with _open(path) as f:
                if not isinstance(f, io.BufferedReader) and not hasattr(f, "readline"):
                    f = io.BufferedReader(f)
                feed = self.feed
                for lineno, line in enumerate(f, 1):
                    feed(line, lineno)
        finally:
            if was:
                gc.enable()
            self._stats = None
        st.lines, st.events, st.ignored = (a - b for a, b in zip(
            (self.result.lines, self.result.events, self.result.ignored), before, strict=True))

    def bad_line(self, lineno: int, line: bytes, why: str) -> None:
        """Count a malformed line of the current file (used by the rawlog reader too)."""
        self._bad(lineno, line, why)


def parse_files(paths, **kw) -> ParseResult:
    p = Pop3LogParser(**kw)
    for path in paths:
        p.feed_file(path)
    return p.result


def parse_lines(lines, **kw) -> ParseResult:
    p = Pop3LogParser(**kw)
    for i, line in enumerate(lines, 1):
        p.feed(line if isinstance(line, bytes) else line.encode(), i)
    return p.result
