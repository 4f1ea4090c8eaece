"""Dovecot rawlog files: what the normal log lacks (LAST, UIDL, RETR/DELE per session, APOP with
a pre-login rawlog). No database; fed into a `pop3logs.Pop3LogParser`.

Dovecot 2.3 with `rawlog_dir = /var/log/dovecot/rawlog/%u` (or the userdb field `rawlog_dir`)
writes, per session, `<YYYYMMDD>-<HHMMSS>.<pid>.<n>.in` (what the client sent) and `.out` (what
the server answered; `rawlog_dir = ~/dovecot.rawlog`: the login is the home's name); each line starts with a Unix timestamp (`1796598128.066762 LAST`). The
login is the name of the directory holding the files. Only `.in` files are read; `.out` files
are counted as skipped. A session whose first command carries an IMAP tag is an IMAP session
(ignored). A line that is not a POP3 command is malformed (counted per file, sampled).
"""
from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^\d{8}-\d{6}(?:\.\d+)*\.(in|out)$")
_TS = re.compile(rb"^\d{9,11}(?:\.\d+)? ")
POP3_VERBS = frozenset({b"USER", b"PASS", b"APOP", b"AUTH", b"STAT", b"LIST", b"RETR", b"DELE",
                        b"NOOP", b"RSET", b"QUIT", b"TOP", b"UIDL", b"LAST", b"CAPA", b"STLS",
                        b"UTF8", b"XCLIENT"})
_IMAP_TAGGED = re.compile(rb"^[A-Za-z0-9.]+ (?:CAPABILITY|LOGIN|AUTHENTICATE|ID|STARTTLS|ENABLE|"
                          rb"SELECT|EXAMINE|NOOP|LIST|LSUB|NAMESPACE|STATUS|IDLE|FETCH|UID|"
                          rb"LOGOUT|GETQUOTAROOT|APPEND|CREATE|SEARCH|COMPRESS)\b", re.I)


def is_rawlog(path: Path) -> bool:
    """A Dovecot rawlog file by its name (`...in` / `...out`)."""
    return bool(_NAME.match(path.name)) or path.suffix in (".in", ".out")


def _commands(path: Path, parser):
    """(line number, raw line, verb) of the `.in` file; malformed lines reported to the parser.
    Raises _Imap when the session is IMAP."""
    in_auth = False
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            line = _TS.sub(b"", raw.rstrip(b"\r\n"), count=1)
            if not line:
                continue
            verb = line.split(b" ", 1)[0].upper()
            if verb in POP3_VERBS:
                in_auth = verb == b"AUTH"
                yield n, line, verb
            elif in_auth:       # SASL continuation lines after AUTH
                continue
            elif n == 1 and _IMAP_TAGGED.match(line):
                raise _Imap
            else:
                parser.bad_line(n, raw, "rawlog line is not a POP3 command")


class _Imap(Exception):
    pass


def feed_session(parser, path: Path, st) -> None:
    """Add one rawlog session to the parser's usage of the login named by the directory."""
    if path.suffix == ".out" or path.name.endswith(".out"):
        st.kind = "rawlog-out"
        return
    verbs: list[bytes] = []
    try:
        for _n, _line, verb in _commands(path, parser):
            verbs.append(verb)
            st.lines += 1
    except _Imap:
        st.kind = "rawlog-imap"
        return
    r = parser.result
    r.lines += st.lines + st.malformed
    if not verbs:
        return
    owner = path.parent.parent if path.parent.name == "dovecot.rawlog" else path.parent
    u = parser.get(owner.name.encode(), "rawlog")
    u.raw_sessions += 1
    if b"APOP" in verbs:
        u.raw_apop += 1
    if {b"APOP", b"USER", b"AUTH"} & set(verbs):
        u.raw_auth_sessions += 1
    u.raw_last += b"LAST" in verbs
    u.raw_uidl += b"UIDL" in verbs
    u.last_cmds = (u.last_cmds or 0) + verbs.count(b"LAST")
    u.uidl_cmds = (u.uidl_cmds or 0) + verbs.count(b"UIDL")
    if b"RETR" in verbs or b"TOP" in verbs:
        u.dele_sources.add("dovecot rawlog")
        u.retr_sessions += 1
        if b"DELE" not in verbs:
            u.keep_sessions += 1
    st.events = 1
    r.events += 1
    r.by_format["rawlog"] += 1
