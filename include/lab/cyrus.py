"""Cyrus IMAP 3.6 (Debian's cyrus-imapd / cyrus-pop3d): real non-Dovecot servers in the lab.

Three instances, each its own `master -C imapd.conf -M cyrus.conf` with its own config, spool,
sasldb and sockets under `<lab>/<name>/` (nothing in /etc or /var is used):

- `cyrus-legacy`: a legacy source with IMAP and POP3 and **no master user** (no `admins`, no
  proxy servers): mailshift can only log in as each mailbox with its own password
  (`auth=user` + the per-mailbox credentials file). INBOX is created at the first login.
- `cyrus-pop`: a legacy source that offers **only POP3** (no IMAP listener at all); mail
  arrives through its LMTP socket (`deliver_lmtp`).
- `cyrus-dest`: a destination provider with an admin (`cyradmin`) that may act for any user
  with SASL PLAIN and an authorization identity. Cyrus accepts that authzid for *any* name,
  existing or not, and creates the mailbox at login (`autocreate_quota`): mailshift's identity
  probe therefore refuses `auth=authzid` on it, and it is used with `auth=user`.

Users are SASL users in `<name>/sasldb2` (`saslpasswd2 -f`), realm = the instance's servername.
"""
from __future__ import annotations

import os
import pwd
import smtplib
import subprocess
from pathlib import Path

from . import proc

CYRUS_USER = "cyrus"
MASTER = "/usr/lib/cyrus/bin/master"
# imapd and pop3d conflict with Dovecot's packages: the Makefile unpacks them here (CYRUS_ROOT)
CYRUS_ROOT = Path(os.environ.get("MAILSHIFT_LAB_CYRUS_ROOT", "/opt/mailshift-lab/cyrus"))


def service_bin(name: str) -> str:
    """Absolute path of a Cyrus service binary: the unpacked copy, else the installed one."""
    for d in (CYRUS_ROOT / "usr/lib/cyrus/bin", Path("/usr/lib/cyrus/bin")):
        if (d / name).is_file():
            return str(d / name)
    raise FileNotFoundError(f"Cyrus {name} not found under {CYRUS_ROOT} or /usr/lib/cyrus/bin: run `make lab-up` as root")
SASLPASSWD = "/usr/sbin/saslpasswd2"
HOST = "127.0.0.1"

# name -> shape; ports are offsets from the lab's port base
CYRUS_SHAPES = {
    "cyrus-legacy": {"role": "source", "imap": 61, "pop3": 62, "admin": None, "lmtp": False},
    "cyrus-pop": {"role": "source", "imap": None, "pop3": 64, "admin": None, "lmtp": True},
    "cyrus-dest": {"role": "dest", "imap": 65, "pop3": 66, "admin": "cyradmin", "lmtp": False},
}
CYRUS_NAMES = tuple(CYRUS_SHAPES)


def cyrus_state(root: Path, base: int, admin_password: str) -> dict:
    """The lab.json entries (`cyrus` section) of the three instances."""
    out = {}
    for name, sh in CYRUS_SHAPES.items():
        out[name] = {
            "name": name, "host": HOST, "role": sh["role"],
            "imap_port": base + sh["imap"] if sh["imap"] else None,
            "pop3_port": base + sh["pop3"],
            "admin_user": sh["admin"], "admin_password": admin_password if sh["admin"] else None,
            "dir": str(root / name), "servername": name.replace("-", ""),
            "lmtp_socket": str(root / name / "run" / "lmtp") if sh["lmtp"] else None,
            "separator": "/", "prefix": "",
        }
    return out


class Cyrus:
    def __init__(self, info: dict, run_dir: Path):
        self.info = info
        self.dir = Path(info["dir"])
        self.conf = self.dir / "imapd.conf"
        self.cyrus_conf = self.dir / "cyrus.conf"
        self.sasldb = self.dir / "sasldb2"
        self.pidfile = run_dir / f"{info['name']}.pid"
        self.log = self.dir / "log" / "master.log"

    def render(self) -> tuple[str, str]:
        i, d = self.info, self.dir
        lines = [
            f"configdirectory: {d / 'conf'}",
            f"partition-default: {d / 'spool'}",
            f"servername: {i['servername']}",
            "allowplaintext: yes",
            "sasl_pwcheck_method: auxprop",
            "sasl_auxprop_plugin: sasldb",
            f"sasl_sasldb_path: {self.sasldb}",
            "sasl_mech_list: PLAIN LOGIN",
            "unixhierarchysep: yes",
            "altnamespace: yes",
            "virtdomains: off",
            f"lmtpsocket: {d / 'run' / 'lmtp'}",
            f"idlesocket: {d / 'run' / 'idle'}",
            f"notifysocket: {d / 'run' / 'notify'}",
            f"syslog_prefix: lab-{i['name']}",
            "autocreate_quota: 0",
            "autocreate_post: yes",
            "popminpoll: 0",
            "lmtp_downcase_rcpt: yes",
        ]
        if i["admin_user"]:
            lines.append(f"admins: {i['admin_user']}")
        services = []
        if i["imap_port"]:
            services.append(f'  imap cmd="{service_bin("imapd")} -C {self.conf}" listen="{HOST}:{i["imap_port"]}" prefork=0')
        services.append(f'  pop3 cmd="{service_bin("pop3d")} -C {self.conf}" listen="{HOST}:{i["pop3_port"]}" prefork=0')
        if i["lmtp_socket"]:
            services.append(f'  lmtp cmd="lmtpd -C {self.conf}" listen="{i["lmtp_socket"]}" prefork=0')
        cyrus = "\n".join([
            "START {", f'  recover cmd="ctl_cyrusdb -r -C {self.conf}"', "}",
            "SERVICES {", *services, "}", "EVENTS {", "}", "DAEMON {", "}", ""])
        return "\n".join(lines) + "\n", cyrus

    def prepare(self) -> None:
        cy = pwd.getpwnam(CYRUS_USER)
        for sub in ("", "conf", "spool", "run", "log", "conf/proc", "conf/lock", "conf/user",
                    "conf/quota", "conf/sieve", "conf/socket"):
            p = self.dir / sub
            p.mkdir(parents=True, exist_ok=True)
            os.chown(p, cy.pw_uid, cy.pw_gid)
        imapd, cyrus = self.render()
        self.conf.write_text(imapd)
        self.cyrus_conf.write_text(cyrus)
        if self.info["admin_user"]:
            self.set_password(self.info["admin_user"], self.info["admin_password"])
        elif not self.sasldb.exists():
            self.sasldb.touch()
        os.chown(self.sasldb, cy.pw_uid, cy.pw_gid)
        os.chmod(self.sasldb, 0o640)

    def set_password(self, login: str, password: str) -> None:
        subprocess.run([SASLPASSWD, "-p", "-c", "-f", str(self.sasldb), "-u", self.info["servername"], login],
                       input=password.encode(), check=True, capture_output=True)
        cy = pwd.getpwnam(CYRUS_USER)
        os.chown(self.sasldb, cy.pw_uid, cy.pw_gid)

    def remove_user(self, login: str) -> None:
        subprocess.run([SASLPASSWD, "-d", "-f", str(self.sasldb), "-u", self.info["servername"], login],
                       capture_output=True)

    def ports(self) -> list[int]:
        return [p for p in (self.info["imap_port"], self.info["pop3_port"]) if p]

    def running_pid(self) -> int | None:
        return proc.pid_matches(self.pidfile, [str(self.conf)])

    def start(self) -> str:
        self.prepare()
        pid = self.running_pid()
        if pid:
            return f"already running (pid {pid})"
        self.pidfile.unlink(missing_ok=True)
        for port in self.ports():
            if proc.port_listening(HOST, port):
                raise RuntimeError(f"{self.info['name']}: port {port} is in use by another process")
        pid = proc.spawn([MASTER, "-C", str(self.conf), "-M", str(self.cyrus_conf),
                          "-p", str(self.dir / "run" / "master.pid"), "-D"], self.log, self.pidfile)
        for port in self.ports():
            if not proc.wait_port(HOST, port, timeout=30, pid=pid):
                raise RuntimeError(f"cyrus {self.info['name']} did not open port {port}; see {self.log}")
        return f"started (pid {pid})"

    def stop(self) -> str:
        return proc.stop_service(self.running_pid(), self.pidfile)


def deliver_lmtp(info: dict, login: str, messages: list[bytes], sender: str = "seed@lab.test") -> None:
    """Deliver raw messages to `login`'s INBOX through the instance's LMTP socket (cyrus-pop)."""
    lmtp = smtplib.LMTP(info["lmtp_socket"])
    try:
        for raw in messages:
            lmtp.sendmail(sender, [login], raw)
    finally:
        lmtp.quit()
