"""Process helpers for the lab: pidfiles, spawning daemons, port checks, /proc scans."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def write_pid(pidfile: Path, pid: int) -> None:
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, pidfile)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    st = _state(pid)
    return bool(st) and st not in ("Z", "X")


def mentions(args: list[str], paths: list[str]) -> bool:
    for a in args:
        for p in paths:
            if a == p or (p + "/") in a or a.endswith("=" + p):
                return True
    return False


def pid_matches(pidfile: Path, paths: list[str]) -> int | None:
    """The pid in pidfile if that process is alive and its command line mentions one of paths."""
    pid = read_pid(pidfile)
    if pid and alive(pid) and mentions(cmdline(pid), paths):
        return pid
    return None


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in all_pids():
        pp = ppid(p)
        if pp is not None:
            children.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def ancestors(pid: int) -> set[int]:
    out = set()
    while pid and pid not in out:
        out.add(pid)
        pid = ppid(pid) or 0
    return out


def processes_mentioning(paths: list[str]) -> list[tuple[int, list[str]]]:
    mine = ancestors(os.getpid())
    found = []
    for p in all_pids():
        if p in mine or not alive(p):
            continue
        args = cmdline(p)
        if args and mentions(args, paths):
            found.append((p, args))
    return found


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_listening(host: str, port: int, proto: str = "tcp") -> bool:
    """Is something listening on host:port (or a wildcard address)? Read from /proc/net so
    that checks do not open connections (they would show up in the servers' logs)."""
    want = {"127.0.0.1": "0100007F"}.get(host)
    wild4, wild6 = "00000000", "00000000000000000000000000000000"
    for fname in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            lines = Path(fname).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            addr, p = f[1].split(":")
            state = f[3]
            if int(p, 16) != port:
                continue
            if proto == "tcp" and state != "0A":
                continue
            if addr in (want, wild4, wild6) or addr.endswith("0100007F") or want is None:
                return True
    return False


def wait_port(host: str, port: int, timeout: float = 30.0, pid: int | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_listening(host, port):
            return True
        if pid is not None and not alive(pid):
            return False
        time.sleep(0.1)
    return False


def spawn(argv: list[str], log: Path, pidfile: Path, env: dict | None = None,
          cwd: str | None = None) -> int:
    """Start a foreground daemon detached from us (own session), stdout/stderr to log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env, cwd=cwd, close_fds=True)
    write_pid(pidfile, p.pid)
    return p.pid


def terminate(pid: int, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
    """Send sig, wait for exit (reaping if it is our child); True if it is gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def kill9(pids: list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)


TEMPLATES = Path(__file__).with_name("templates")


def render_template(name: str, values: dict) -> str:
    """Replace @KEY@ placeholders in templates/<name>; refuse to leave any unrendered."""
    import re

    text = (TEMPLATES / name).read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise RuntimeError(f"unrendered placeholders in {name}: {sorted(set(left))}")
    return text


def stop_service(pid: int | None, pidfile: Path, timeout: float = 15.0) -> str:
    """Stop a lab daemon and everything it forked: SIGTERM, SIGKILL after `timeout`, then any
    child still alive; the pidfile goes in every case. Returns the status line `down` prints."""
    if not pid:
        pidfile.unlink(missing_ok=True)
        return "not running"
    kids = descendants(pid)
    if not terminate(pid, timeout=timeout):
        kill9([pid])
    kill9([k for k in kids if alive(k)])
    pidfile.unlink(missing_ok=True)
    return f"stopped (pid {pid})"
