"""Private PostgreSQL 15 cluster for the lab (never the system cluster)."""
from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

from . import proc

PG_BIN = Path(os.environ.get("MAILSHIFT_LAB_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
ADMIN_ROLE = "postgres"
APP_ROLE = "mailshift"
APP_DB = "mailshift"


def _as_root() -> bool:
    return os.geteuid() == 0


def _run_as_pg(argv: list[str], **kw) -> subprocess.CompletedProcess:
    if _as_root():
        argv = ["runuser", "-u", PG_USER, "--"] + argv
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def _traversable_by_pg(path: Path) -> bool:
    if not _as_root():
        return True
    r = subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-x", str(path)],
                       capture_output=True)
    return r.returncode == 0


def choose_dir(root: Path) -> tuple[Path, str | None]:
    """<lab>/pg, or /var/tmp/mailshift-lab-<hash>/pg if the postgres user cannot reach <lab>."""
    if _traversable_by_pg(root):
        return root / "pg", None
    h = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    alt = Path(f"/var/tmp/mailshift-lab-{h}/pg")
    return alt, (f"postgres user cannot traverse to {root}; "
                 f"PostgreSQL data directory placed in {alt}")


class Postgres:
    def __init__(self, pg_dir: Path, port: int, run_dir: Path, admin_password: str,
                 app_password: str, host: str = "127.0.0.1"):
        self.dir = pg_dir
        self.data = pg_dir / "data"
        self.sock = pg_dir / "sock"
        self.log = pg_dir / "log" / "postgres.log"
        self.port = port
        self.host = host
        self.pidfile = run_dir / "postgres.pid"
        self.admin_password = admin_password
        self.app_password = app_password

    # DSNs -----------------------------------------------------------------------------------
    @property
    def admin_dsn(self) -> str:
        return (f"postgresql://{ADMIN_ROLE}:{quote(self.admin_password, safe='')}"
                f"@{self.host}:{self.port}/postgres")

    @property
    def dsn(self) -> str:
        return (f"postgresql://{APP_ROLE}:{quote(self.app_password, safe='')}"
                f"@{self.host}:{self.port}/{APP_DB}")

    # lifecycle ------------------------------------------------------------------------------
    def _chown(self, *paths: Path) -> None:
        if _as_root():
            pw = pwd.getpwnam(PG_USER)
            for p in paths:
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def ensure_initdb(self) -> None:
        for d in (self.dir, self.sock, self.log.parent):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        os.chmod(self.sock, 0o700)
        self._chown(self.dir, self.sock, self.log.parent)
        if not (self.data / "PG_VERSION").exists():
            if self.data.exists():
                shutil.rmtree(self.data)  # half-initialised: start over
            pwfile = self.dir / ".pwfile"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.admin_password + "\n")
            self._chown(pwfile)
            try:
                _run_as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", ADMIN_ROLE,
                            f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale",
                            "--auth-local=trust", "--auth-host=scram-sha-256"])
            finally:
                pwfile.unlink(missing_ok=True)
            with open(self.data / "postgresql.conf", "a") as f:
                f.write("\ninclude = 'lab.conf'\n")
        # regenerated at every up (port base may change while stopped)
        (self.data / "lab.conf").write_text(
            "# written by `python -m lab up`; lab only, tuned for tests, NOT durable\n"
            f"port = {self.port}\n"
            f"listen_addresses = '{self.host}'\n"
            f"unix_socket_directories = '{self.sock}'\n"
            "max_connections = 200\n"
            "shared_buffers = 128MB\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
            "wal_level = minimal\n"
            "max_wal_senders = 0\n"
            "log_min_duration_statement = -1\n"
            "log_line_prefix = '%m [%p] %q%u@%d '\n"
        )
        (self.data / "pg_hba.conf").write_text(
            "# lab only: unix socket (dir mode 700, owner postgres) trusted, TCP needs a password\n"
            "local all all trust\n"
            f"host all all {self.host}/32 scram-sha-256\n"
        )
        self._chown(self.data / "lab.conf", self.data / "pg_hba.conf")

    def running_pid(self) -> int | None:
        pid = proc.read_pid(self.data / "postmaster.pid")
        if pid and proc.alive(pid) and proc.mentions(proc.cmdline(pid), [str(self.data)]):
            return pid
        return None

    def start(self) -> str:
        pid = self.running_pid()
        if pid:
            proc.write_pid(self.pidfile, pid)
            return f"already running (pid {pid})"
        self.ensure_initdb()
        if proc.port_listening(self.host, self.port):
            raise RuntimeError(f"port {self.port} is in use by another process")
        # pg_ctl removes a stale postmaster.pid itself when the pid is not a postgres
        _run_as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                    "-w", "-t", "60", "start"])
        pid = self.running_pid()
        if not pid:
            raise RuntimeError(f"postgres did not start, see {self.log}")
        proc.write_pid(self.pidfile, pid)
        self.ensure_roles()
        return f"started (pid {pid})"

    def psql(self, sql: str, db: str = "postgres") -> str:
        argv = [str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.sock), "-p", str(self.port), "-U", ADMIN_ROLE, "-d", db, "-c", sql]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def ensure_roles(self) -> None:
        pw = self.app_password.replace("'", "''")
        self.psql(f"""DO $$BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} LOGIN CREATEDB;
              END IF;
            END$$;
            ALTER ROLE {APP_ROLE} LOGIN CREATEDB PASSWORD '{pw}';""")
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{APP_DB}'").strip():
            self.psql(f"CREATE DATABASE {APP_DB} OWNER {APP_ROLE}")

    def stop(self) -> str:
        pid = self.running_pid()
        if not pid:
            self.pidfile.unlink(missing_ok=True)
            return "not running"
        kids = proc.descendants(pid)
        try:
            _run_as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                        "-t", "30", "stop"])
        except subprocess.CalledProcessError:
            proc.terminate(pid, sig=9)
        proc.kill9([k for k in kids if proc.alive(k)])
        self.pidfile.unlink(missing_ok=True)
        return f"stopped (pid {pid})"
