"""`python -m lab up | down | status`: start, stop and check the local lab."""
from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import sys
from pathlib import Path

from . import proc
from .bind import Bind
from .config import (
    DEFAULT_PORT_BASE,
    DNS_OFFSET,
    DNS_ZONE,
    HOST,
    IMAP_OFFSET,
    IMAPS_OFFSET,
    LMTP_OFFSET,
    PG_OFFSET,
    POP3_OFFSET,
    SERVER_NAMES,
    SLACK_OFFSET,
    SMTP_OFFSET,
    TSIG_ALGORITHM,
    TSIG_KEY_NAME,
    LabConfig,
    lab_dir,
    port_base_from_env,
)
from .cyrus import CYRUS_NAMES, Cyrus, cyrus_state
from .dovecot import SHAPES, Dovecot
from .pg import Postgres, choose_dir
from .postfix import Postfix
from .tls import ensure_certs

INCLUDE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_MAX_CONN = {"src-a": 20, "src-b": 10, "dest": 100}
DEFAULT_MAX_MAIL_SIZE = 25 * 1024 * 1024


def _secret(n: int = 18) -> str:
    return secrets.token_urlsafe(n)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v else default


def build_state(root: Path) -> tuple[dict, list[str]]:
    """Load lab.json or create it: secrets are generated once and kept; ports and paths are
    recomputed (port base: $MAILSHIFT_LAB_PORT_BASE, else the stored one, else 14300)."""
    notes: list[str] = []
    path = root / "lab.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    sec = dict(old.get("secrets") or {})
    sec.setdefault("pg_admin_password", _secret())
    sec.setdefault("pg_app_password", _secret())
    sec.setdefault("dovecot_admin_password", _secret())
    sec.setdefault("default_user_password", _secret(12))
    sec.setdefault("tsig_secret", base64.b64encode(secrets.token_bytes(32)).decode())
    sec.setdefault("cyrus_admin_password", _secret())
    sec.setdefault("slack_token", "xoxb-lab-" + secrets.token_hex(16))

    base = port_base_from_env() or old.get("port_base") or DEFAULT_PORT_BASE
    pg_dir = Path(old["pg"]["dir"]) if old.get("pg", {}).get("dir") else None
    if pg_dir is None or not pg_dir.exists():
        pg_dir, note = choose_dir(root)
        if note:
            notes.append(note)
    pg = Postgres(pg_dir, base + PG_OFFSET, root / "run", sec["pg_admin_password"],
                  sec["pg_app_password"])
    tls = ensure_certs(root / "tls")

    servers = {}
    for name in SERVER_NAMES:
        shape = SHAPES[name]
        old_s = (old.get("servers") or {}).get(name, {})
        env_name = "MAILSHIFT_LAB_MAX_CONN_" + name.upper().replace("-", "_")
        servers[name] = {
            "name": name, "host": HOST,
            "imap_port": base + IMAP_OFFSET[name], "pop3_port": base + POP3_OFFSET[name],
            "imaps_port": base + IMAPS_OFFSET[name],
            "lmtp_port": base + LMTP_OFFSET[name],
            "admin_user": "admin", "admin_password": sec["dovecot_admin_password"],
            "separator": shape["separator"], "prefix": shape["prefix"],
            "mail_root": str(root / name / "mail"),
            "role": shape["role"],
            "max_connections": _env_int(env_name, old_s.get("max_connections")
                                        or DEFAULT_MAX_CONN[name]),
            "pop3_uidl_format": shape["uidl_format"],
            "max_mail_size": (_env_int("MAILSHIFT_LAB_MAX_MAIL_SIZE", old_s.get("max_mail_size")
                                       or DEFAULT_MAX_MAIL_SIZE) if name == "dest" else 0),
            "passwd_file": str(root / name / "passwd"),
            "config_file": str(root / name / "dovecot.conf"),
            "log_dir": str(root / name / "log"),
        }
    state = {
        "version": 1,
        "root": str(root),
        "port_base": base,
        "secrets": sec,
        "default_user_password": sec["default_user_password"],
        "pg": {"dsn": pg.dsn, "admin_dsn": pg.admin_dsn, "dir": str(pg_dir),
               "port": base + PG_OFFSET, "socket_dir": str(pg.sock)},
        "servers": servers,
        "dns": {"host": HOST, "port": base + DNS_OFFSET, "zone": DNS_ZONE,
                "tsig_key_name": TSIG_KEY_NAME, "tsig_algorithm": TSIG_ALGORITHM,
                "tsig_secret": sec["tsig_secret"]},
        "slack": {"base_url": f"http://{HOST}:{base + SLACK_OFFSET}/api/",
                  "port": base + SLACK_OFFSET, "token": sec["slack_token"]},
        "smtp": {"host": HOST, "port": base + SMTP_OFFSET},
        "tls": tls,
        "pids": str(root / "run"),
        "notes": notes or old.get("notes", []),
        "cyrus": cyrus_state(root, base, sec["cyrus_admin_password"]),
    }
    return state, notes


def write_state(root: Path, state: dict) -> None:
    _write_private(root / "lab.json", json.dumps(state, indent=2, sort_keys=True) + "\n")
    cfg = LabConfig.from_dict(state)
    env = {
        "MAILSHIFT_LAB_DIR": str(root),
        "MAILSHIFT_LAB_PORT_BASE": str(state["port_base"]),
        "MAILSHIFT_DB_URL": cfg.pg_dsn,
        "MAILSHIFT_LAB_PG_ADMIN_URL": cfg.pg_admin_dsn,
        "MAILSHIFT_LAB_CA_CERT": str(cfg.ca_cert),
        "MAILSHIFT_LAB_DNS_SERVER": f"{cfg.dns_host}:{cfg.dns_port}",
        "MAILSHIFT_LAB_DNS_ZONE": cfg.dns_zone,
        "MAILSHIFT_LAB_TSIG_KEY_NAME": cfg.tsig_key_name,
        "MAILSHIFT_LAB_TSIG_ALGORITHM": cfg.tsig_algorithm,
        "MAILSHIFT_LAB_TSIG_SECRET": cfg.tsig_secret,
        "MAILSHIFT_SLACK_BASE_URL": cfg.slack_base_url,
        "MAILSHIFT_SLACK_TOKEN": cfg.slack_token,
        "MAILSHIFT_SMTP": f"{cfg.smtp_host}:{cfg.smtp_port}",
        "MAILSHIFT_REPORTS_DIR": str(root / "reports"),
        "MAILSHIFT_SNAPSHOT_DIR": str(root / "snapshot"),
    }
    for name, s in cfg.servers.items():
        key = name.upper().replace("-", "_")
        env[f"MAILSHIFT_LAB_{key}_IMAP"] = f"{s.host}:{s.imap_port}"
        env[f"MAILSHIFT_LAB_{key}_POP3"] = f"{s.host}:{s.pop3_port}"
        env[f"MAILSHIFT_LAB_{key}_IMAPS"] = f"{s.host}:{s.imaps_port}"
    lines = ["# written by `python -m lab up`; lab-only secrets, do not commit"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    _write_private(root / "env", "\n".join(lines) + "\n")


class SlackStandin:
    def __init__(self, root: Path, port: int, run_dir: Path):
        self.root, self.port = root, port
        self.pidfile = run_dir / "slack-standin.pid"
        self.log = root / "slack" / "standin.log"

    def running_pid(self) -> int | None:
        return proc.pid_matches(self.pidfile, [str(self.root)])

    def start(self) -> str:
        pid = self.running_pid()
        if pid:
            return f"already running (pid {pid})"
        self.pidfile.unlink(missing_ok=True)
        if proc.port_listening(HOST, self.port):
            raise RuntimeError(f"port {self.port} is in use by another process")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(INCLUDE_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        pid = proc.spawn([sys.executable, "-m", "lab.slack_standin", "--lab-dir",
                          str(self.root), "--port", str(self.port)], self.log, self.pidfile,
                         env=env, cwd=str(self.root))
        if not proc.wait_port(HOST, self.port, timeout=15, pid=pid):
            raise RuntimeError(f"slack stand-in did not start; see {self.log}")
        return f"started (pid {pid})"

    def stop(self) -> str:
        return proc.stop_service(self.running_pid(), self.pidfile, timeout=10)


def services(root: Path, state: dict):
    """(name, ports, object) in start order."""
    sec, run = state["secrets"], root / "run"
    pg = Postgres(Path(state["pg"]["dir"]), state["pg"]["port"], run, sec["pg_admin_password"],
                  sec["pg_app_password"])
    out = [("postgres", [state["pg"]["port"]], pg)]
    for name in SERVER_NAMES:
        s = state["servers"][name]
        out.append((name, [s["imap_port"], s["pop3_port"], s["imaps_port"]]
                    + ([s["lmtp_port"]] if s.get("lmtp_port") else []),
                    Dovecot(name, root, s, state["tls"], s["admin_password"], run)))
    d = state["dns"]
    out.append(("bind9", [d["port"]], Bind(root, d["port"], d["zone"], d["tsig_key_name"],
                                           d["tsig_algorithm"], d["tsig_secret"], run)))
    out.append(("slack-standin", [state["slack"]["port"]],
                SlackStandin(root, state["slack"]["port"], run)))
    for name in CYRUS_NAMES if state.get("cyrus") else ():  # real non-Dovecot servers
        c = state["cyrus"][name]
        out.append((name, [p for p in (c["imap_port"], c["pop3_port"]) if p], Cyrus(c, run)))
    if state.get("smtp"):  # lab MTA after the Dovecots (it delivers to their LMTP listeners)
        out.append(("postfix", [state["smtp"]["port"]],
                    Postfix(root, state["smtp"]["port"], run,
                            {n: s["lmtp_port"] for n, s in state["servers"].items()
                             if s.get("lmtp_port")}, state["dns"]["zone"])))
    return out


def _prepare_root(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # daemons drop to postgres/mail/dovecot/bind: the lab dir itself must be traversable;
    # secrets inside are protected file by file (lab.json, env, keys: 600/640)
    os.chmod(root, 0o755)
    (root / "run").mkdir(exist_ok=True)
    gi = root / ".gitignore"
    if not gi.exists():
        gi.write_text("# lab state: never commit\n*\n")


def up(root: Path | None = None) -> int:
    root = root or lab_dir()
    _prepare_root(root)
    state, notes = build_state(root)
    for n in notes:
        print(f"note: {n}")
    write_state(root, state)
    failed = False
    for name, ports, svc in services(root, state):
        try:
            msg = svc.start()
        except Exception as e:  # keep going: status shows what is missing
            failed = True
            msg = f"FAILED: {e}"
        print(f"{name:14s} {'/'.join(map(str, ports)):18s} {msg}")
    print(f"lab dir {root}; env: source {root / 'env'}")
    return 1 if failed else 0


def _pg_paths(root: Path) -> list[str]:
    paths = [str(root)]
    try:
        state = json.loads((root / "lab.json").read_text())
        paths.append(state["pg"]["dir"])
    except (FileNotFoundError, KeyError, ValueError):
        pass
    return paths


def down(root: Path | None = None) -> int:
    root = root or lab_dir()
    path = root / "lab.json"
    rc = 0
    if path.exists():
        state = json.loads(path.read_text())
        for name, _ports, svc in reversed(services(root, state)):
            try:
                msg = svc.stop()
            except Exception as e:
                rc = 1
                msg = f"FAILED: {e}"
            print(f"{name:14s} {msg}")
    # nothing whose command line mentions the lab may survive
    leftovers = proc.processes_mentioning(_pg_paths(root))
    if leftovers:
        for pid, args in leftovers:
            print(f"leftover process {pid}: {' '.join(args)[:200]} -> kill -9")
            for k in proc.descendants(pid):
                proc.kill9([k])
        proc.kill9([p for p, _ in leftovers])
        still = proc.processes_mentioning(_pg_paths(root))
        if still:
            print(f"could not kill: {[p for p, _ in still]}")
            return 1
    for f in (root / "run").glob("*.pid") if (root / "run").exists() else []:
        f.unlink(missing_ok=True)
    print("lab is down" + (" (leftovers were killed)" if leftovers else ""))
    return rc


def status(root: Path | None = None) -> int:
    root = root or lab_dir()
    path = root / "lab.json"
    if not path.exists():
        print(f"lab not configured ({path} missing): all down")
        return 1
    state = json.loads(path.read_text())
    down_count = 0
    for name, ports, svc in services(root, state):
        pid = svc.running_pid()
        ok = bool(pid) and all(proc.port_listening(HOST, p) for p in ports)
        down_count += not ok
        ports_s = "/".join(map(str, ports))
        print(f"{name:14s} {'up' if ok else 'DOWN':5s} {HOST}:{ports_s:18s}"
              + (f" pid {pid}" if pid else ""))
    return 1 if down_count else 0
