"""Real Dovecot rawlogs in the lab: switch a lab user's `rawlog_dir` on (userdb extra field), so
every POP3/IMAP session of that user leaves `<date>-<time>.<pid>.<n>.in/.out` files."""
from __future__ import annotations

import email.message
import os
import poplib
import pwd
from pathlib import Path

from lab import users
from lab.config import LabConfig
from support.mail import imap


def enable_rawlog(cfg: LabConfig, server: str, login: str, root: Path) -> Path:
    """rawlog_dir = root/<login> for this lab user (the directory is created for the mail user)."""
    d = root / login
    d.mkdir(parents=True, exist_ok=True)
    mail = pwd.getpwnam("mail")
    for x in (root, d):
        os.chown(x, mail.pw_uid, mail.pw_gid)
    path = Path(cfg.servers[server].passwd_file)
    with users._locked(path):
        entries = users.read_passwd(path)
        extra = [x for x in entries[login][7].split() if not x.startswith("userdb_rawlog_dir=")]
        entries[login][7] = " ".join(extra + [f"userdb_rawlog_dir={d}"])
        users.write_passwd(path, entries, users.HEADER)
    users.wait_visible()
    return d


def seed(cfg: LabConfig, server: str, login: str, n: int) -> None:
    """n small messages in the INBOX (IMAP APPEND as the master user)."""
    with imap(cfg, server, login) as c:
        for i in range(n):
            m = email.message.EmailMessage()
            m["From"], m["To"], m["Subject"] = "a@lab.test", f"{login}@lab.test", f"m{i}"
            m.set_content(f"message {i}\n")
            c.append("INBOX", m.as_bytes())


def pop3_session(cfg: LabConfig, server: str, login: str, password: str, *, apop=False,
                 last=False, uidl=False, retr=(), dele=()) -> None:
    """One real POP3 session of a customer's mail program."""
    s = cfg.servers[server]
    c = poplib.POP3(s.host, s.pop3_port, timeout=30)
    if apop:
        c.apop(login, password)
    else:
        c.user(login)
        c.pass_(password)
    c.stat()
    if last:
        c._shortcmd("LAST")
    if uidl:
        c.uidl()
    for i in retr:
        c.retr(i)
    for i in dele:
        c.dele(i)
    c.quit()
