"""POP3 log audit throughput: generate a large legacy POP3 log (Dovecot syslog + Courier lines,
~1 % noise from other services, 1 malformed line in 10,000) and stream it through
`mailshift.customers.pop3logs`; print lines/s, MB/s and the peak RSS as JSON.

    .venv/bin/python bench/audit_bench.py --size-gb 2 [--path /var/tmp/pop3-bench.log]
        [--users 200000] [--keep]

The file is generated once (reused when it exists with the same size). Peak RSS is the process
maximum (ru_maxrss), so it includes the interpreter and the per-login usage table, which grows
with the number of distinct logins, not with the file size.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include")]

from mailshift.customers import pop3logs  # noqa: E402


def block(rng: random.Random, users: int, lines: int) -> bytes:
    out = []
    for i in range(lines // 2):
        u = f"user{rng.randrange(users):06d}"
        day, hh, mm, ss = rng.randrange(1, 29), rng.randrange(24), rng.randrange(60), rng.randrange(60)
        ts = f"Nov {day:2d} {hh:02d}:{mm:02d}:{ss:02d}"
        pid = rng.randrange(1000, 60000)
        r = rng.random()
        if r < 0.01:
            out.append(f"{ts} mail01 postfix/smtpd[{pid}]: connect from unknown[198.51.100.{pid % 250}]")
            out.append(f"{ts} mail01 postfix/smtpd[{pid}]: disconnect from unknown[198.51.100.{pid % 250}]")
        elif r < 0.7:
            method = "APOP" if rng.random() < 0.05 else "PLAIN"
            retr = rng.randrange(0, 5)
            dele = 0 if rng.random() < 0.3 else retr
            out.append(f"{ts} mail01 dovecot: pop3-login: Login: user=<{u}>, method={method}, "
                       f"rip=203.0.113.{pid % 250}, lip=192.0.2.10, mpid={pid}, TLS, session=<{pid:x}abcdef>")
            out.append(f"{ts} mail01 dovecot: pop3({u})<{pid}><{pid:x}abcdef>: Disconnected: Logged out "
                       f"top=0/0, retr={retr}/{retr * 4096}, del={dele}/{retr + 3}, size={(retr + 3) * 4096}")
        else:
            retr = rng.randrange(0, 5)
            out.append(f"{ts} pop01 courierpop3login: LOGIN, user={u}, ip=[::ffff:203.0.113.{pid % 250}], "
                       f"port=[{pid}]")
            out.append(f"{ts} pop01 courierpop3login: LOGOUT, user={u}, ip=[::ffff:203.0.113.{pid % 250}], "
                       f"port=[{pid}], top=0, retr={retr}, rcvd=48, sent={retr * 4200 + 90}, time=2")
        if i % 5000 == 0:
            out.append(f"{ts} mail01 dovecot: pop3({u})<{pid}><x>: Disconnected: Logged out top=0/0, retr=?")
    return ("\n".join(out) + "\n").encode()


def generate(path: Path, size: int, users: int) -> None:
    rng = random.Random(7)
    blocks = [block(rng, users, 200_000) for _ in range(8)]  # ~8 distinct 30 MB blocks
    t0 = time.monotonic()
    with open(path, "wb") as f:
        written = 0
        while written < size:
            b = blocks[rng.randrange(len(blocks))]
            f.write(b)
            written += len(b)
    print(f"generated {written / 1e9:.2f} GB in {time.monotonic() - t0:.0f}s: {path}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--path", default="/var/tmp/mailshift-pop3-bench.log")
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    path = Path(a.path)
    size = int(a.size_gb * 1e9)
    if a.generate_only:
        generate(path, size, a.users)
        return 0
    if not path.exists() or abs(path.stat().st_size - size) > 64e6:
        # in a child process, so that the generator's buffers do not count in our peak RSS
        subprocess.run([sys.executable, __file__, "--generate-only", "--size-gb", str(a.size_gb),
                        "--path", str(path), "--users", str(a.users)], check=True)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    r = pop3logs.parse_files([path], year=2025)
    el = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"file_bytes": path.stat().st_size, "lines": r.lines, "seconds": round(el, 1),
           "lines_per_s": round(r.lines / el), "mb_per_s": round(path.stat().st_size / el / 1e6, 1),
           "logins": len(r.usage), "events": r.events, "malformed": r.malformed,
           "ignored": r.ignored, "rss_before_mib": round(rss0 / 1024, 1),
           "peak_rss_mib": round(rss / 1024, 1), "python": sys.version.split()[0]}
    print(json.dumps(out, indent=2))
    if not a.keep:
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
