#!/usr/bin/env python3
"""Copy benchmark: mailshift's copier vs imapsync vs dsync (`doveadm backup` with imapc) on the
lab's "bench" corpus (20 mailboxes, 40,400 messages, ~500 MB, on src-a and src-b).

    .venv/bin/python bench/copy_bench.py                    # everything, 3 repeats
    .venv/bin/python bench/copy_bench.py --quick --repeat 1 # 4 small mailboxes, smoke run
    .venv/bin/python bench/copy_bench.py --tools mailshift,dsync --workers 2 --repeat 1
    .venv/bin/python bench/copy_bench.py --profile-mailshift   # cProfile of one mailshift worker

Steps:
1. Seed the bench corpus onto its source servers (lab.seed.seed_lab) unless the marker
   `.lab/bench/copy_corpus.json` holds the same corpus hash (a digest of corpus.py and the
   message plan) and the sources still hold the planned message counts.
2. Read the source truth once: per-folder message counts (IMAP STATUS) and POP3 UIDLs.
3. For every (tool, parallelism, repeat): empty every destination mailbox
   (lab.users.reset_mailbox), run the tool over all mailboxes, with mailboxes handed out
   largest first to N parallel slots, and measure wall seconds, CPU seconds of the tool's own
   processes (getrusage(RUSAGE_CHILDREN) delta: every tool process is a reaped child of this
   one), peak RSS (psutil sampling of our descendants every 0.2 s: sum over concurrent
   processes, and the largest single one), and the CPU the lab servers burned meanwhile (the
   Dovecot masters and postgres, their reaped children included). Then count the messages at
   the destination (STATUS per folder) against the source, and compare POP3 UIDL lists.
4. Print a Markdown table of medians (and ratios vs imapsync / dsync at the same parallelism)
   and write `.lab/bench/copy_bench-<stamp>.json` and `.md`.

Tools:
- mailshift: `copy_mailbox` (one prestage pass per mailbox) in a multiprocessing pool of N
  processes, each with its own database connection and IMAP sessions; a fresh migrated database
  per run. POP3 mailboxes use uidl_strategy="x-uidl-header" (their legacy UIDLs survive).
- imapsync: one `imapsync` process per mailbox (master-user logins, plaintext loopback),
  N at a time; --nofoldersizes --nofoldersizesatend --noreleasecheck, no header tricks.
  Installed outside the repo by bench/_tools/install_imapsync.sh ($IMAPSYNC or /tmp/imapsync).
- dsync: `doveadm -c <dest dovecot.conf> backup -R -u <dest login> imapc:` with imapc settings
  pointing at the source (master user), N at a time; with --dsync-pop3-migration, POP3
  mailboxes also load the pop3_migration plugin (pop3c namespace) so their UIDLs are carried.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (ROOT / "include", ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import psutil  # noqa: E402
import psycopg2  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from lab import corpus, users  # noqa: E402
from lab.config import LabConfig, lab_dir  # noqa: E402
from support.mail import logical, pop3_uidls  # noqa: E402  (read the servers the way the tests do)

PROFILE = "bench"
DOMAIN_FALLBACK = "lab.mailshift.test"
#: mailshift-nocheck: the same copier with CopyOptions(check_stored=False), to measure what the
#: copy-time read-back of every stored message costs (issue #13)
ALL_TOOLS = ("mailshift", "mailshift-nocheck", "imapsync", "dsync")


# ---------------------------------------------------------------------------------------------
# the corpus on the sources


@dataclass(frozen=True)
class Box:
    address: str
    server: str          # lab source server
    source_login: str
    dest_login: str
    protocol: str
    messages: int        # planned
    bytes: int           # planned (raw sizes)


def boxes_of(inv) -> list[Box]:
    out = []
    for mb in inv.mailboxes:
        plan = corpus.mailbox_plan(inv, mb)
        out.append(Box(mb.address, inv.system(mb.source_system).lab_server, mb.login, mb.dest_login,
                       mb.protocol, len(plan), sum(p.size for p in plan)))
    return out


def plan_hash(inv, sample: int = 25) -> str:
    """Corpus identity, cheap: the whole message plan (folders, sizes, dates, flags, duplicates)
    and the rendered bytes of the first `sample` messages of every mailbox. (Not corpus.py's
    source: an edit that changes no message must not force a reseed.)"""
    h = hashlib.sha256(f"{inv.seed}:{inv.profile}".encode())
    for mb in inv.mailboxes:
        h.update(f"{mb.address}|{mb.login}|{mb.protocol}|{','.join(mb.folders)}\n".encode())
        for p in corpus.mailbox_plan(inv, mb):
            h.update(f"{p.folder}|{p.size}|{p.internal_date.isoformat()}|{' '.join(p.flags)}|{p.dup_of}\n"
                     .encode())
        for i, m in enumerate(corpus.mailbox_messages(inv, mb)):
            if i >= sample:
                break
            h.update(hashlib.sha256(m.raw).digest())
    return h.hexdigest()


def marker_path() -> Path:
    return lab_dir() / "bench" / "copy_corpus.json"


def connect(cfg, server: str, login: str, timeout: float = 120) -> IMAPClient:
    s = cfg.servers[server]
    c = IMAPClient(s.host, port=s.imap_port, ssl=False, timeout=timeout)
    c.login(s.master_login(login), s.admin_password)
    return c


def folder_counts(cfg, server: str, login: str) -> dict[str, int]:
    """{logical folder: MESSAGES} of every selectable folder (0 for a missing account)."""
    s = cfg.servers[server]
    out = {}
    c = connect(cfg, server, login)
    try:
        for flags, _, name in c.list_folders():
            if any(f.lower() in (b"\\noselect", b"\\nonexistent") for f in flags):
                continue
            out[logical(name, s.prefix, s.separator)] = int(c.folder_status(name, ["MESSAGES"])[b"MESSAGES"])
    finally:
        with contextlib.suppress(Exception):
            c.logout()
    return out


def ensure_seeded(cfg, inv, boxes: list[Box], force: bool, log) -> dict:
    digest = plan_hash(inv)
    mp = marker_path()
    if mp.exists() and not force:
        marker = json.loads(mp.read_text())
        if marker.get("plan_hash") == digest:
            bad = [b.address for b in boxes
                   if sum(folder_counts(cfg, b.server, b.source_login).values()) != marker["messages"][b.address]]
            if not bad:
                log(f"corpus already seeded (hash {digest[:12]}, {marker['seeded_at']}): skipping the seed")
                return marker
            log(f"marker matches but {len(bad)} source mailbox(es) differ ({bad[:3]}...): reseeding")
    from lab.seed import seed_lab

    log("seeding the bench corpus onto the sources (this takes a few minutes)...")
    counts = seed_lab(cfg, inv, workers=4, dest=True, log=log)
    per_mb = counts.pop("per_mailbox")
    marker = {"plan_hash": digest, "seed": inv.seed, "profile": inv.profile,
              "seeded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "seed_counts": counts,
              "messages": {a: sum(f.values()) for a, f in per_mb.items()},
              "folders": per_mb}
    mp.parent.mkdir(parents=True, exist_ok=True)
    mp.write_text(json.dumps(marker, indent=1, ensure_ascii=False))
    log(f"seeded {counts['messages']} messages, {counts['bytes'] / 1e6:.0f} MB in {counts['seconds']}s")
    return marker


# ---------------------------------------------------------------------------------------------
# measurement


class Sampler:
    """Peak RSS of our descendant processes (sum over concurrent ones, and the largest one)."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_sum = 0
        self.peak_one = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss = p.memory_info().rss
                    total += rss
                    self.peak_one = max(self.peak_one, rss)
            self.peak_sum = max(self.peak_sum, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def server_pids(cfg) -> dict[str, int]:
    out = {}
    for f in (cfg.root / "run").glob("*.pid"):
        name = f.stem.replace("dovecot-", "")
        if name in ("src-a", "src-b", "dest", "postgres"):
            with contextlib.suppress(ValueError, OSError):
                out[name] = int(f.read_text().split()[0])
    return out


def server_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each lab server master, its reaped children included."""
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            out[name] = float("nan")
    return out


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_slots(cmds: list[tuple[str, list[str], dict]], slots: int, logdir: Path) -> dict[str, dict]:
    """Run commands, `slots` at a time, in the given order. Returns {key: {rc, seconds, log}}."""
    pending = list(cmds)
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    done: dict[str, dict] = {}
    while pending or running:
        while pending and len(running) < slots:
            key, argv, env = pending.pop(0)
            logf = open(logdir / (key.replace("/", "_") + ".log"), "wb")
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **env})
            running[key] = (proc, time.monotonic(), logf)
        for key in list(running):
            proc, t0, logf = running[key]
            if proc.poll() is not None:
                logf.close()
                done[key] = {"rc": proc.returncode, "seconds": round(time.monotonic() - t0, 2),
                             "log": logf.name}
                del running[key]
        time.sleep(0.05)
    return done


# ---------------------------------------------------------------------------------------------
# mailshift


_W = {}


def _ms_worker_init(dsn: str, src_uris: dict, dst_uri: str, profile_dir: str | None):
    import logging

    logging.basicConfig(level=logging.WARNING)
    from mailshift.protocols.endpoint import parse_endpoint
    from mailshift.store.ledger import CopyStore

    conn = psycopg2.connect(dsn)
    _W.update(conn=conn, store=CopyStore(conn), src={k: parse_endpoint(v) for k, v in src_uris.items()},
              dst=parse_endpoint(dst_uri), profile_dir=profile_dir)


def _ms_copy(job: dict) -> dict:
    from mailshift.copy.copier import CopyOptions, MailboxRef, copy_mailbox

    ref = MailboxRef(job["id"], job["address"], job["source_login"], job["dest_login"], job["protocol"])
    tuning = {k: int(v) for k, v in (("append_lanes", os.environ.get("BENCH_APPEND_LANES")),
                                     ("max_batches_in_flight", os.environ.get("BENCH_IN_FLIGHT")),
                                     ("batch_messages", os.environ.get("BENCH_BATCH_MESSAGES"))) if v}
    tuning["check_stored"] = os.environ.get("BENCH_CHECK_STORED", "1") != "0"
    opts = CopyOptions(uidl_strategy="x-uidl-header" if job["protocol"] == "pop3" else "none", **tuning)
    t0 = time.monotonic()
    prof = None
    if _W.get("profile_dir"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    try:
        s = copy_mailbox(_W["store"], ref, _W["src"][job["server"]], _W["dst"], opts)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the run goes on
        return {"address": job["address"], "error": f"{type(exc).__name__}: {exc}",
                "seconds": round(time.monotonic() - t0, 2)}
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(os.path.join(_W["profile_dir"], f"{os.getpid()}-{job['id']}.prof"))
    return {"address": job["address"], "copied": s.copied, "refused": s.refused, "failed": s.failed,
            "bytes": s.bytes, "source_messages": s.source_messages, "seconds": s.seconds,
            "altered": s.altered, "stored_checked": s.stored_checked,
            "refusals": [r["reason"][:200] for r in s.refusals][:5]}


def insert_inventory(conn, cfg, boxes: list[Box]) -> dict[str, int]:
    """Inventory rows as tests/support/mail.add_mailbox makes them, without touching accounts."""
    ids = {}
    with conn, conn.cursor() as cur:
        for b in boxes:
            cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, pop3_port, tls, max_connections,"
                        " airflow_conn_id) VALUES (%s, 'dovecot', '127.0.0.1', %s, %s, 'none', 8, %s)"
                        " ON CONFLICT (id) DO NOTHING",
                        (b.server, cfg.servers[b.server].imap_port, cfg.servers[b.server].pop3_port,
                         "mailshift_" + b.server.replace("-", "_")))
            domain = b.address.rsplit("@", 1)[1] if "@" in b.address else DOMAIN_FALLBACK
            cur.execute("INSERT INTO domain (name) VALUES (%s) ON CONFLICT DO NOTHING", (domain,))
            building = f"BENCH-{b.server}-{domain}"
            cur.execute("INSERT INTO building (id, name, domain, source_system, spec) VALUES (%s, %s, %s, %s, '{}')"
                        " ON CONFLICT (id) DO NOTHING", (building, building, domain, b.server))
            hh = f"H-{b.address}"
            cur.execute("INSERT INTO household (id, building_id) VALUES (%s, %s)", (hh, building))
            cur.execute("INSERT INTO mailbox (household_id, address, source_login, dest_login, protocol)"
                        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                        (hh, b.address, b.source_login, b.dest_login, b.protocol))
            ids[b.address] = cur.fetchone()[0]
    return ids


def prepare_mailshift(cfg, boxes: list[Box], stack: contextlib.ExitStack) -> dict:
    """A fresh migrated database with the inventory rows (outside the timed window)."""
    from lab.connections import imap_uri
    from support.mail import fresh_database

    dsn = stack.enter_context(fresh_database(cfg))
    conn = psycopg2.connect(dsn)
    try:
        ids = insert_inventory(conn, cfg, boxes)
    finally:
        conn.close()
    jobs = [dict(id=ids[b.address], address=b.address, server=b.server, source_login=b.source_login,
                 dest_login=b.dest_login, protocol=b.protocol) for b in boxes]
    return {"dsn": dsn, "jobs": jobs, "src_uris": {s: imap_uri(cfg, s) for s in {b.server for b in boxes}},
            "dst_uri": imap_uri(cfg, "dest")}


def run_mailshift(prep: dict, workers: int, logdir: Path, profile: bool = False) -> dict:
    """The jobs (largest mailbox first) over a pool of `workers` processes (spawned: a fresh
    interpreter each, like separate Airflow task processes), one mailbox at a time each."""
    import multiprocessing as mp

    pdir = None
    if profile:
        pdir = str(logdir / "profiles")
        os.makedirs(pdir, exist_ok=True)
    results = []
    pool = mp.get_context("spawn").Pool(workers, initializer=_ms_worker_init,
                                        initargs=(prep["dsn"], prep["src_uris"], prep["dst_uri"], pdir))
    try:
        for r in pool.imap_unordered(_ms_copy, prep["jobs"], chunksize=1):
            results.append(r)
    finally:
        pool.close()
        pool.join()
    errors = [r for r in results if "error" in r]
    return {"per_mailbox": results,
            "reported_copied": sum(r.get("copied", 0) for r in results),
            "reported_refused": sum(r.get("refused", 0) for r in results),
            "reported_failed": sum(r.get("failed", 0) for r in results),
            "refusals": sorted({x for r in results for x in r.get("refusals", [])})[:5],
            "errors": [f"{r['address']}: {r['error']}" for r in errors]}


# ---------------------------------------------------------------------------------------------
# imapsync


def imapsync_path() -> str | None:
    for cand in (os.environ.get("IMAPSYNC"), "/tmp/imapsync/imapsync", shutil.which("imapsync")):
        if cand and os.path.exists(cand):
            return cand
    return None


def _grab(text: str, label: str) -> int | None:
    for line in text.splitlines():
        if line.startswith(label):
            with contextlib.suppress(ValueError, IndexError):
                return int(line.split(":", 1)[1].split()[0])
    return None


def run_imapsync(cfg, boxes: list[Box], workers: int, logdir: Path) -> dict:
    exe = imapsync_path()
    if not exe:
        raise RuntimeError("imapsync not found: run bench/_tools/install_imapsync.sh")
    d = cfg.dest
    tmp = Path(tempfile.mkdtemp(prefix="imapsync-", dir=str(logdir)))
    cmds = []
    for b in boxes:
        s = cfg.servers[b.server]
        pw1 = tmp / f"{b.address}.pw1"
        pw2 = tmp / f"{b.address}.pw2"
        pw1.write_text(s.admin_password + "\n")
        pw2.write_text(d.admin_password + "\n")
        argv = [exe,
                "--host1", s.host, "--port1", str(s.imap_port), "--user1", s.master_login(b.source_login),
                "--passfile1", str(pw1), "--nossl1", "--notls1",
                "--host2", d.host, "--port2", str(d.imap_port), "--user2", d.master_login(b.dest_login),
                "--passfile2", str(pw2), "--nossl2", "--notls2",
                "--nofoldersizes", "--nofoldersizesatend", "--noreleasecheck", "--nolog",
                "--tmpdir", str(tmp), "--pidfile", str(tmp / f"{b.address}.pid")]
        cmds.append((b.address, argv, {}))
    done = run_slots(cmds, workers, logdir)
    per = []
    for b in boxes:
        r = done[b.address]
        text = Path(r["log"]).read_text(errors="replace")
        per.append({"address": b.address, "rc": r["rc"], "seconds": r["seconds"],
                    "transferred": _grab(text, "Messages transferred"),
                    "skipped": _grab(text, "Messages skipped"),
                    "errors": _detected(text),
                    "error_lines": [ln[:200] for ln in text.splitlines() if ln.startswith("Err")][:5]})
    return {"per_mailbox": per,
            "reported_copied": sum(p["transferred"] or 0 for p in per),
            "reported_skipped": sum(p["skipped"] or 0 for p in per),
            "reported_errors": sum(p["errors"] or 0 for p in per),
            "errors": [f"{p['address']}: rc={p['rc']}" for p in per if p["rc"]]}


def _detected(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("Detected ") and " error" in line:
            with contextlib.suppress(ValueError, IndexError):
                return int(line.split()[1])
    return None


# ---------------------------------------------------------------------------------------------
# dsync


POP3_MIGRATION_CONF = """!include {dest}
# bench/copy_bench.py: the destination's config plus Dovecot's pop3_migration plugin, so dsync
# reads the legacy POP3 UIDLs (pop3c) and stores them with the messages at the destination.
mail_plugins = $mail_plugins pop3_migration
namespace pop3c {{
  prefix = POP3-MIGRATION-NS/
  location = pop3c:
  list = no
  hidden = yes
}}
plugin {{
  pop3_migration_mailbox = POP3-MIGRATION-NS/INBOX
}}
"""


def dsync_argv(cfg, b: Box, pop3_conf: str | None) -> list[str]:
    """`doveadm backup -R -u <dest login> imapc:` with the source as imapc (and pop3c) server.
    -o cannot add a namespace, so POP3 mailboxes use `pop3_conf` (dest config + plugin)."""
    s = cfg.servers[b.server]
    d = cfg.dest
    o = {"imapc_host": s.host, "imapc_port": str(s.imap_port), "imapc_user": b.source_login,
         "imapc_master_user": s.admin_user, "imapc_password": s.admin_password,
         "imapc_features": "rfc822.size fetch-headers", "mail_prefetch_count": "20",
         "imapc_ssl": "no"}
    if s.prefix:
        o["imapc_list_prefix"] = s.prefix.rstrip(s.separator)
    conf = d.config_file
    if pop3_conf and b.protocol == "pop3":
        conf = pop3_conf
        o.update({"pop3c_host": s.host, "pop3c_port": str(s.pop3_port), "pop3c_user": b.source_login,
                  "pop3c_master_user": s.admin_user, "pop3c_password": s.admin_password,
                  "pop3c_ssl": "no"})
    argv = ["doveadm", "-c", conf]
    for k, v in o.items():
        argv += ["-o", f"{k}={v}"]
    return argv + ["backup", "-R", "-u", b.dest_login, "imapc:"]


def run_dsync(cfg, boxes: list[Box], workers: int, logdir: Path, pop3_migration: bool) -> dict:
    pop3_conf = None
    if pop3_migration:
        pop3_conf = str(logdir / "dest-pop3-migration.conf")
        fd = os.open(pop3_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(POP3_MIGRATION_CONF.format(dest=cfg.dest.config_file))
    cmds = [(b.address, dsync_argv(cfg, b, pop3_conf), {}) for b in boxes]
    done = run_slots(cmds, workers, logdir)
    per = []
    for b in boxes:
        r = done[b.address]
        text = Path(r["log"]).read_text(errors="replace")
        per.append({"address": b.address, "rc": r["rc"], "seconds": r["seconds"],
                    "errors": [ln[:240] for ln in text.splitlines() if "rror" in ln or "Fatal" in ln][:5]})
    return {"per_mailbox": per, "errors": [f"{p['address']}: rc={p['rc']} {p['errors'][:1]}"
                                           for p in per if p["rc"]]}


# ---------------------------------------------------------------------------------------------
# one run


def reset_dest(cfg, boxes: list[Box]) -> None:
    for b in boxes:
        users.reset_mailbox(cfg, "dest", b.dest_login)


def verify(cfg, boxes: list[Box], truth: dict) -> dict:
    src_total = dst_total = missing = extra = 0
    folder_diffs = []
    uidl_ok, uidl_checked = 0, 0
    uidl_detail = {}
    for b in boxes:
        src = truth["folders"][b.address]
        dst = folder_counts(cfg, "dest", b.dest_login)
        src_total += sum(src.values())
        dst_total += sum(dst.values())
        for f in set(src) | set(dst):
            a, z = src.get(f, 0), dst.get(f, 0)
            if a != z:
                missing += max(0, a - z)
                extra += max(0, z - a)
                folder_diffs.append(f"{b.address} {f!r}: source {a}, dest {z}")
        if b.protocol == "pop3":
            uidl_checked += 1
            got = pop3_uidls(cfg, "dest", b.dest_login)
            want = truth["uidls"][b.address]
            same = got == want
            uidl_ok += same
            uidl_detail[b.address] = {"equal": same, "source": len(want), "dest": len(got),
                                      "common": len(set(got) & set(want))}
    return {"source_messages": src_total, "dest_messages": dst_total, "missing": missing, "extra": extra,
            "folder_diffs": folder_diffs[:40], "folder_diff_count": len(folder_diffs),
            "pop3_uidls_equal": f"{uidl_ok}/{uidl_checked}", "uidl_detail": uidl_detail}


def one_run(cfg, tool: str, workers: int, boxes: list[Box], truth: dict, logdir: Path, args) -> dict:
    reset_dest(cfg, boxes)
    order = sorted(boxes, key=lambda b: -b.bytes)  # largest first: the slots finish together
    with contextlib.ExitStack() as stack:
        prep = prepare_mailshift(cfg, order, stack) if tool.startswith("mailshift") else None
        os.environ["BENCH_CHECK_STORED"] = "0" if tool == "mailshift-nocheck" else "1"  # spawned workers inherit it
        time.sleep(1.0)  # let the kicked sessions go
        pids = server_pids(cfg)
        srv0 = server_cpu(pids)
        cpu0 = children_cpu()
        t0 = time.monotonic()
        with Sampler() as smp:
            if tool.startswith("mailshift"):
                detail = run_mailshift(prep, workers, logdir, profile=args.profile_mailshift)
            elif tool == "imapsync":
                detail = run_imapsync(cfg, order, workers, logdir)
            elif tool == "dsync":
                detail = run_dsync(cfg, order, workers, logdir, args.dsync_pop3_migration)
            else:
                raise ValueError(tool)
        wall = time.monotonic() - t0
        cpu = children_cpu() - cpu0
        time.sleep(0.5)  # server-side sessions end and get reaped
        srv1 = server_cpu(pids)
    nbytes = sum(b.bytes for b in boxes)
    nmsgs = sum(sum(truth["folders"][b.address].values()) for b in boxes)
    check = verify(cfg, boxes, truth)
    return {"tool": tool, "workers": workers, "wall_s": round(wall, 2),
            "msgs_per_s": round(nmsgs / wall, 1), "mb_per_s": round(nbytes / 1e6 / wall, 2),
            "cpu_s": round(cpu, 2), "peak_rss_mb": round(smp.peak_sum / 1e6, 1),
            "peak_rss_one_mb": round(smp.peak_one / 1e6, 1),
            "server_cpu_s": {k: round(srv1[k] - srv0[k], 2) for k in srv0},
            "check": check, "detail": detail}


# ---------------------------------------------------------------------------------------------
# report


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["tool"], r["workers"]), []).append(r)
    rows = []
    for (tool, w), rs in groups.items():
        rows.append({"tool": tool, "workers": w, "runs": len(rs),
                     "wall_s": median([r["wall_s"] for r in rs]),
                     "msgs_per_s": median([r["msgs_per_s"] for r in rs]),
                     "mb_per_s": median([r["mb_per_s"] for r in rs]),
                     "cpu_s": median([r["cpu_s"] for r in rs]),
                     "server_cpu_s": median([sum(r["server_cpu_s"].values()) for r in rs]),
                     "peak_rss_mb": median([r["peak_rss_mb"] for r in rs]),
                     "peak_rss_one_mb": median([r["peak_rss_one_mb"] for r in rs]),
                     "dest_messages": median([r["check"]["dest_messages"] for r in rs]),
                     "source_messages": rs[0]["check"]["source_messages"],
                     "missing": max(r["check"]["missing"] for r in rs),
                     "extra": max(r["check"]["extra"] for r in rs),
                     "uidls": sorted({r["check"]["pop3_uidls_equal"] for r in rs})})
    by = {(r["tool"], r["workers"]): r for r in rows}
    for r in rows:
        for ref in ("imapsync", "dsync"):
            o = by.get((ref, r["workers"]))
            r[f"speed_vs_{ref}"] = round(r["wall_s"] and o["wall_s"] / r["wall_s"], 2) if o else None
            r[f"cpu_vs_{ref}"] = round(r["cpu_s"] / o["cpu_s"], 2) if o and o["cpu_s"] else None
    order = {t: i for i, t in enumerate(ALL_TOOLS)}
    return sorted(rows, key=lambda r: (r["workers"], order.get(r["tool"], 9)))


def markdown(rows: list[dict]) -> str:
    head = ("| tool | procs | runs | wall s | msg/s | MB/s | tool CPU s | server CPU s | peak RSS MB (sum / one) "
            "| at dest / source | missing | extra | POP3 UIDLs equal | speed vs imapsync | speed vs dsync "
            "| CPU vs imapsync | CPU vs dsync |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]

    def f(x, nd=1):
        return "–" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    for r in rows:
        lines.append(
            f"| {r['tool']} | {r['workers']} | {r['runs']} | {f(r['wall_s'])} | {f(r['msgs_per_s'], 0)} "
            f"| {f(r['mb_per_s'], 2)} | {f(r['cpu_s'])} | {f(r['server_cpu_s'])} "
            f"| {f(r['peak_rss_mb'], 0)} / {f(r['peak_rss_one_mb'], 0)} "
            f"| {f(r['dest_messages'], 0)} / {r['source_messages']} | {r['missing']} | {r['extra']} "
            f"| {', '.join(r['uidls'])} | {f(r['speed_vs_imapsync'], 2)}× | {f(r['speed_vs_dsync'], 2)}× "
            f"| {f(r['cpu_vs_imapsync'], 2)}× | {f(r['cpu_vs_dsync'], 2)}× |")
    return "\n".join(lines).replace("| –× ", "| – ")


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default=",".join(ALL_TOOLS))
    ap.add_argument("--workers", default="1,2", help="parallel processes, comma separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="4 small mailboxes (2 POP3) only")
    ap.add_argument("--mailboxes", help="comma separated addresses (instead of all / --quick)")
    ap.add_argument("--tool-repeat", action="append", default=[], metavar="TOOL=N",
                    help="fewer repeats for one tool, e.g. imapsync=1 (it is slow)")
    ap.add_argument("--append-lanes", type=int, help="mailshift: CopyOptions.append_lanes (default: the copier's)")
    ap.add_argument("--in-flight", type=int, help="mailshift: CopyOptions.max_batches_in_flight")
    ap.add_argument("--batch-messages", type=int, help="mailshift: CopyOptions.batch_messages")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--force-seed", action="store_true")
    ap.add_argument("--seed-only", action="store_true")
    ap.add_argument("--budget-min", type=float, default=40.0,
                    help="stop starting repeats once this many minutes have gone (default 40)")
    ap.add_argument("--no-dsync-pop3-migration", dest="dsync_pop3_migration", action="store_false")
    ap.add_argument("--profile-mailshift", action="store_true",
                    help="cProfile every mailshift mailbox (slows it; stats printed at the end)")
    ap.add_argument("--out", help="result directory (default .lab/bench)")
    ap.add_argument("--summarize", metavar="RUNS_JSON",
                    help="only print the table of an earlier (maybe interrupted) run's runs.json")
    args = ap.parse_args(argv)
    for env, value in (("BENCH_APPEND_LANES", args.append_lanes), ("BENCH_IN_FLIGHT", args.in_flight),
                       ("BENCH_BATCH_MESSAGES", args.batch_messages)):
        if value:
            os.environ[env] = str(value)  # read by the spawned mailshift workers
    if args.summarize:
        print(markdown(summarize(json.loads(Path(args.summarize).read_text()))))
        return 0

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    cfg = LabConfig.load()
    inv = corpus.generate_inventory(args.seed, PROFILE)
    all_boxes = boxes_of(inv)
    ensure_seeded(cfg, inv, all_boxes, args.force_seed, log)
    if args.seed_only:
        return 0
    if args.mailboxes:
        want = set(args.mailboxes.split(","))
        boxes = [b for b in all_boxes if b.address in want]
    elif args.quick:
        imap_small = sorted((b for b in all_boxes if b.protocol == "imap"), key=lambda b: b.bytes)
        pop_small = sorted((b for b in all_boxes if b.protocol == "pop3"), key=lambda b: b.bytes)
        pick = []
        for srv in ("src-a", "src-b"):
            pick += [b for b in imap_small if b.server == srv][:1]
            pick += [b for b in pop_small if b.server == srv][:1]
        boxes = pick
    else:
        boxes = all_boxes
    tools = [t for t in args.tools.split(",") if t]
    workers = [int(w) for w in args.workers.split(",")]
    tool_repeat = {k: int(v) for k, v in (x.split("=", 1) for x in args.tool_repeat)}
    log(f"{len(boxes)} mailboxes, {sum(b.messages for b in boxes)} messages, "
        f"{sum(b.bytes for b in boxes) / 1e6:.0f} MB; tools {tools} x workers {workers} x {args.repeat}")

    truth = {"folders": {}, "uidls": {}}
    for b in boxes:
        truth["folders"][b.address] = folder_counts(cfg, b.server, b.source_login)
        if b.protocol == "pop3":
            truth["uidls"][b.address] = pop3_uidls(cfg, b.server, b.source_login)

    out = Path(args.out) if args.out else lab_dir() / "bench"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = out / f"copy-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    runs = []
    t_start = time.monotonic()
    skipped_repeats = []
    for rep in range(args.repeat):
        if rep and (time.monotonic() - t_start) / 60 > args.budget_min:
            skipped_repeats.append(rep + 1)
            log(f"time budget {args.budget_min} min spent: no repeat {rep + 1}")
            continue
        for w in workers:
            for tool in tools:
                if rep >= tool_repeat.get(tool, args.repeat):
                    continue
                rdir = logdir / f"{tool}-{w}-{rep + 1}"
                rdir.mkdir()
                for attempt in range(2):
                    try:
                        r = one_run(cfg, tool, w, boxes, truth, rdir, args)
                        break
                    except (ConnectionError, OSError) as exc:  # a lab restart under us: once more
                        log(f"{tool} x{w}: {exc!r}; {'retrying' if not attempt else 'giving up'}")
                        if attempt:
                            raise
                        time.sleep(5)
                r["repeat"] = rep + 1
                runs.append(r)
                c = r["check"]
                log(f"{tool} x{w} #{rep + 1}: {r['wall_s']}s {r['msgs_per_s']} msg/s {r['mb_per_s']} MB/s "
                    f"cpu {r['cpu_s']}s rss {r['peak_rss_mb']}MB; dest {c['dest_messages']}/{c['source_messages']} "
                    f"missing {c['missing']} extra {c['extra']} uidl {c['pop3_uidls_equal']}"
                    + (f" ERRORS {r['detail']['errors'][:3]}" if r["detail"].get("errors") else ""))
                (logdir / "runs.json").write_text(json.dumps(runs, indent=1, default=str, ensure_ascii=False))
    rows = summarize(runs)
    md = markdown(rows)
    result = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "command": " ".join(["bench/copy_bench.py"] + (argv if argv is not None else sys.argv[1:])),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(),
                          "dovecot": subprocess.run(["dovecot", "--version"], capture_output=True,
                                                    text=True).stdout.strip(),
                          "imapsync": (subprocess.run([imapsync_path(), "--version"], capture_output=True,
                                                      text=True).stdout.strip() if imapsync_path() else None)},
              "corpus": {"mailboxes": len(boxes), "messages": sum(b.messages for b in boxes),
                         "bytes": sum(b.bytes for b in boxes), "plan_hash": plan_hash(inv)},
              "skipped_repeats": skipped_repeats, "summary": rows, "runs": runs}
    (out / f"copy_bench-{stamp}.json").write_text(json.dumps(result, indent=1, default=str, ensure_ascii=False))
    (out / f"copy_bench-{stamp}.md").write_text(md + "\n")
    print(md)
    log(f"results: {out / f'copy_bench-{stamp}.json'} (logs in {logdir})")
    if args.profile_mailshift:
        import pstats

        profs = sorted((logdir).rglob("*.prof"))
        if profs:
            st = pstats.Stats(str(profs[0]))
            for p in profs[1:]:
                st.add(str(p))
            st.sort_stats("tottime").print_stats(25)
            st.sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
