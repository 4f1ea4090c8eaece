"""The three lab Dovecot 2.3 instances: two legacy-shaped sources and the destination."""
from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
from pathlib import Path

from . import proc
from .config import IMAP_OFFSET, MANAGESIEVE_OFFSET
from .users import HEADER, check_password, read_passwd, ssha256, write_passwd

MAIL_USER = "mail"  # Debian's system user (uid 8) owns all lab mail

# name -> shape. Sources emulate legacy servers; dest is "the new provider".
SHAPES = {
    "src-a": {  # legacy "Dovecot shape": "/" separator, no prefix
        "role": "source",
        "separator": "/", "prefix": "",
        "mail_location": "maildir:~/Maildir:LAYOUT=fs",
        "uidl_format": "%g",  # maildir base filename: not derivable from IMAP UID/UIDVALIDITY
        "mailboxes": {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash"},
        "auto": None,
    },
    "src-b": {  # legacy "Courier/Cyrus shape": INBOX. prefix, "." separator, Maildir++
        "role": "source",
        "separator": ".", "prefix": "INBOX.",
        "mail_location": "maildir:~/Maildir",
        "uidl_format": "%f",  # maildir file name (Courier-like UIDL)
        "mailboxes": {},
        "auto": None,
    },
    "dest": {
        "role": "dest",
        "separator": "/", "prefix": "",
        "mail_location": "sdbox:~/sdbox",
        "uidl_format": "%08Xu%08Xv",
        "mailboxes": {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
                      "Junk": "\\Junk"},
        "auto": "subscribe",
    },
}


def _sieve(s: dict) -> dict:
    """dest only: Pigeonhole Sieve at LMTP delivery and ManageSieve on base+41."""
    port = int(s["imap_port"]) - IMAP_OFFSET["dest"] + MANAGESIEVE_OFFSET
    return {"EXTRA_PROTOCOLS": " sieve", "LMTP_PLUGINS": "sieve",
            "SIEVE_SERVICE": "service managesieve-login {\n  inet_listener sieve {\n"
                             f"    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"}


class Dovecot:
    def __init__(self, name: str, root: Path, server: dict, tls: dict, admin_password: str,
                 run_dir: Path, default_quota_bytes: int = 1 << 30):
        self.name = name
        self.root = root
        self.dir = root / name
        self.server = server            # ServerInfo fields (dict)
        self.shape = SHAPES[name]
        self.tls = tls
        self.admin_password = admin_password
        self.conf = Path(server["config_file"])
        self.passwd = Path(server["passwd_file"])
        self.master_file = self.dir / "master-users"
        self.pidfile = run_dir / f"dovecot-{name}.pid"
        self.log = Path(server["log_dir"]) / "dovecot.log"
        self.stdout_log = Path(server["log_dir"]) / "dovecot-stdout.log"
        self.default_quota_bytes = default_quota_bytes

    def render(self) -> str:
        s, sh = self.server, self.shape
        mb_lines = []
        for mbox, use in sh["mailboxes"].items():
            mb_lines.append(f"  mailbox {mbox} {{\n    special_use = {use}")
            if sh["auto"]:
                mb_lines.append(f"    auto = {sh['auto']}")
            mb_lines.append("  }")
        mail = pwd.getpwnam(MAIL_USER)
        if sh["role"] == "source":
            mechs = "plain login apop cram-md5"
            pop3_extra = "  pop3_enable_last = yes"
            mail_plugins, imap_plugins, plugin_extra, imap_extra = "", "", "", ""
            sieve = {"EXTRA_PROTOCOLS": "", "LMTP_PLUGINS": "", "SIEVE_SERVICE": ""}
        else:
            mechs = "plain login"
            pop3_extra = "  pop3_reuse_xuidl = yes"
            sieve = _sieve(s)
            mail_plugins, imap_plugins = "quota", "imap_quota"
            # Dovecot 2.3 enforces quota_max_mail_size but has no APPENDLIMIT support of its
            # own: advertise the same number as an extra capability (RFC 7889 server-wide form)
            imap_extra = f"  imap_capability = +APPENDLIMIT={s['max_mail_size']}"
            plugin_extra = "\n".join([
                "  quota = count:User quota",
                "  quota_vsizes = yes",
                f"  quota_rule = *:storage={self.default_quota_bytes}B",
                "  quota_grace = 0%%",
                f"  quota_max_mail_size = {s['max_mail_size']}B",
                "  sieve = file:~/sieve;active=~/.dovecot.sieve",
            ])
        return proc.render_template("dovecot.conf", {
            "NAME": self.name, "ROLE": sh["role"],
            "BASE_DIR": self.dir / "run", "STATE_DIR": self.dir / "state",
            "LOG_DIR": s["log_dir"],
            "SSL_CERT": self.tls["server_cert"], "SSL_KEY": self.tls["server_key"],
            "AUTH_MECHS": mechs,
            "MASTER_FILE": self.master_file, "PASSWD_FILE": self.passwd,
            "MAIL_UID": mail.pw_uid, "MAIL_GID": mail.pw_gid,
            "MAIL_ROOT": s["mail_root"], "MAIL_LOCATION": sh["mail_location"],
            "MAIL_PLUGINS": mail_plugins, "IMAP_PLUGINS": imap_plugins, "IMAP_EXTRA": imap_extra,
            "SEPARATOR": sh["separator"], "PREFIX": sh["prefix"],
            "MAILBOXES": "\n".join(mb_lines),
            "UIDL_FORMAT": sh["uidl_format"], "POP3_EXTRA": pop3_extra,
            "PLUGIN_EXTRA": plugin_extra,
            "IMAP_PORT": s["imap_port"], "IMAPS_PORT": s["imaps_port"],
            "POP3_PORT": s["pop3_port"],
            "LMTP_PORT": s.get("lmtp_port") or 0,
            "LMTP_USERNAME_FORMAT": "%Ln" if sh["role"] == "source" else "%Lu",
            "IMAP_PROCESS_LIMIT": s["max_connections"],
            "POP3_PROCESS_LIMIT": max(s["max_connections"], 10),
            **sieve,
        })

    def prepare(self) -> bool:
        """Write dirs, config, master and user files. True if the config text changed."""
        mail = pwd.getpwnam(MAIL_USER)
        dovecot_gid = grp.getgrnam("dovecot").gr_gid
        for d in (self.dir, self.dir / "run", self.dir / "state", Path(self.server["log_dir"])):
            d.mkdir(parents=True, exist_ok=True)
        mail_root = Path(self.server["mail_root"])
        mail_root.mkdir(parents=True, exist_ok=True)
        os.chown(mail_root, mail.pw_uid, mail.pw_gid)
        os.chmod(mail_root, 0o750)
        # master user file: rewrite only when the password no longer matches
        entries = read_passwd(self.master_file)
        admin = self.server["admin_user"]
        if admin not in entries or not check_password(entries[admin][1], self.admin_password) \
                or len(entries) != 1:
            write_passwd(self.master_file,
                         {admin: [admin, ssha256(self.admin_password), "", "", "", "", "", ""]},
                         "# lab master user (master=yes passdb)\n")
        if not self.passwd.exists():
            write_passwd(self.passwd, {}, HEADER)
        for f in (self.master_file, self.passwd):
            os.chown(f, 0, dovecot_gid)
            os.chmod(f, 0o640)
        text = self.render()
        old = self.conf.read_text() if self.conf.exists() else None
        if old != text:
            self.conf.write_text(text)
            r = subprocess.run(["doveconf", "-c", str(self.conf), "-n"], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise RuntimeError(f"doveconf rejected {self.conf}:\n{r.stderr}")
        return old != text

    def running_pid(self) -> int | None:
        return proc.pid_matches(self.pidfile, [str(self.conf)])

    def start(self) -> str:
        changed = self.prepare()
        pid = self.running_pid()
        if pid:
            if changed:
                os.kill(pid, signal.SIGHUP)
                return f"already running (pid {pid}), config changed: reloaded"
            return f"already running (pid {pid})"
        self.pidfile.unlink(missing_ok=True)
        # a master left behind by a crashed lab (pidfile lost) still holds the ports
        master_pid = proc.read_pid(self.dir / "run" / "master.pid")
        if master_pid and proc.alive(master_pid) and \
                proc.mentions(proc.cmdline(master_pid), [str(self.conf)]):
            proc.write_pid(self.pidfile, master_pid)
            return f"adopted running master (pid {master_pid})"
        s = self.server
        for port in (s["imap_port"], s["pop3_port"], s["imaps_port"]):
            if proc.port_listening(s["host"], port):
                raise RuntimeError(f"{self.name}: port {port} is in use by another process")
        pid = proc.spawn(["/usr/sbin/dovecot", "-F", "-c", str(self.conf)], self.stdout_log,
                         self.pidfile)
        for port in (s["imap_port"], s["pop3_port"], s["imaps_port"]):
            if not proc.wait_port(s["host"], port, timeout=30, pid=pid):
                raise RuntimeError(f"dovecot {self.name} did not open port {port}; "
                                   f"see {self.log} and {self.stdout_log}")
        return f"started (pid {pid})"

    def stop(self) -> str:
        return proc.stop_service(self.running_pid(), self.pidfile)
