"""BIND9 for the lab: authoritative for lab.mailshift.test, RFC 2136 updates with TSIG."""
from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

from . import proc

BIND_USER = "bind"


class Bind:
    def __init__(self, root: Path, port: int, zone: str, key_name: str, algorithm: str,
                 secret: str, run_dir: Path, host: str = "127.0.0.1"):
        self.dir = root / "bind"
        self.conf = self.dir / "named.conf"
        self.keyfile = self.dir / "tsig.key"
        self.zone_file = self.dir / "zones" / f"{zone}.zone"
        self.port, self.zone, self.host = port, zone, host
        self.key_name, self.algorithm, self.secret = key_name, algorithm, secret
        self.pidfile = run_dir / "named.pid"
        self.log = self.dir / "log" / "named-stdout.log"

    def prepare(self) -> bool:
        as_root = os.geteuid() == 0
        uid = pwd.getpwnam(BIND_USER).pw_uid if as_root else os.geteuid()
        gid = grp.getgrnam(BIND_USER).gr_gid if as_root else os.getegid()
        self.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("zones", "log", "work"):  # named writes journals, logs, managed keys here
            d = self.dir / sub
            d.mkdir(exist_ok=True)
            if as_root:
                os.chown(d, uid, gid)
        key = (f'key "{self.key_name}" {{\n  algorithm {self.algorithm};\n'
               f'  secret "{self.secret}";\n}};\n')
        fd = os.open(self.keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        if not self.zone_file.exists():  # written once; later state lives in the journal
            self.zone_file.write_text(proc.render_template("zone.db", {"ZONE": self.zone}))
        text = proc.render_template("named.conf", {
            "ZONE": self.zone, "BIND_DIR": self.dir, "PORT": self.port,
            "KEY_NAME": self.key_name})
        old = self.conf.read_text() if self.conf.exists() else None
        if old != text:
            self.conf.write_text(text)
        for f in (self.conf, self.keyfile, self.zone_file):
            if as_root:
                os.chown(f, 0 if f != self.zone_file else uid, gid)
            os.chmod(f, 0o640 if f != self.zone_file else 0o644)
        r = subprocess.run(["named-checkconf", "-z", str(self.conf)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError(f"named-checkconf failed:\n{r.stdout}{r.stderr}")
        return old != text

    def running_pid(self) -> int | None:
        return proc.pid_matches(self.pidfile, [str(self.conf)])

    def start(self) -> str:
        self.prepare()
        pid = self.running_pid()
        if pid:
            return f"already running (pid {pid})"
        self.pidfile.unlink(missing_ok=True)
        if proc.port_listening(self.host, self.port) or \
                proc.port_listening(self.host, self.port, "udp"):
            raise RuntimeError(f"port {self.port} is in use by another process")
        argv = ["/usr/sbin/named", "-f", "-4", "-n", "2", "-c", str(self.conf)]
        if os.geteuid() == 0:
            argv[1:1] = ["-u", BIND_USER]
        pid = proc.spawn(argv, self.log, self.pidfile, cwd=str(self.dir))
        if not proc.wait_port(self.host, self.port, timeout=30, pid=pid):
            raise RuntimeError(f"named did not start; see {self.log} and "
                               f"{self.dir / 'log' / 'named.log'}")
        return f"started (pid {pid})"

    def stop(self) -> str:
        return proc.stop_service(self.running_pid(), self.pidfile)
