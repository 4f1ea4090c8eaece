"""Numbered SQL migrations for the mailshift database.

Files ``migrations/NNNN_name.sql`` are applied in version order, each in its own
transaction together with its row in ``schema_migration(version, name,
applied_at, checksum)``. A session-level advisory lock serialises concurrent
runners (two Airflow tasks, two operators): the second waits, then finds
nothing to do. The checksum (sha256 of the file bytes) of every applied file
is compared on every run; a changed file is a hard error naming it -- write a
new migration instead of editing an applied one.

API::

    upgrade(dsn=None) -> list[str]   # names applied now, e.g. ["0001_init"]
    current(dsn=None) -> str | None  # last applied name, None if none
    status(dsn=None)  -> dict        # {"applied": [...], "pending": [...]}

CLI: ``python -m mailshift.store.migrate [upgrade|current|status] [--dsn URL]``
(``mailshift db upgrade`` calls ``upgrade``). ``dsn`` defaults to
``$MAILSHIFT_DB_URL``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
from pathlib import Path

from mailshift import settings
from mailshift.errors import ChecksumMismatch, MigrationError  # noqa: F401  (raised here)
from mailshift.store import db

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_lock key: ASCII "mailshft" as a signed 64-bit integer.
LOCK_KEY = int.from_bytes(b"mailshft", "big", signed=True)
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version     int PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    checksum    text NOT NULL
)"""


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str          # "0001_init"
    path: Path
    checksum: str      # sha256 hex of the file bytes

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def discover(directory: Path | str | None = None) -> list[Migration]:
    """The migration files in ``directory``, sorted by version."""
    directory = Path(directory) if directory else MIGRATIONS_DIR
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if not m:
            raise MigrationError(f"{path}: migration files must be named NNNN_lower_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations with version {version:04d}: {found[version].path.name}, {path.name}")
        found[version] = Migration(version, path.stem, path,
                                   hashlib.sha256(path.read_bytes()).hexdigest())
    return [found[v] for v in sorted(found)]


def _applied(cur) -> dict[int, tuple[str, str]]:
    cur.execute("SELECT to_regclass('schema_migration') IS NOT NULL")
    if not cur.fetchone()[0]:
        return {}
    cur.execute("SELECT version, name, checksum FROM schema_migration ORDER BY version")
    return {v: (n, c) for v, n, c in cur.fetchall()}


def _check(files: list[Migration], applied: dict[int, tuple[str, str]]) -> list[Migration]:
    """Verify applied files are unchanged; return the pending ones."""
    by_version = {m.version: m for m in files}
    for version, (name, checksum) in applied.items():
        m = by_version.get(version)
        if m is None:
            raise MigrationError(
                f"database has migration {name} (version {version}) which is not in "
                f"{MIGRATIONS_DIR if not files else files[0].path.parent}: the code is older "
                "than the database")
        if m.checksum != checksum:
            raise ChecksumMismatch(
                f"migration file {m.path.name} was changed after it was applied "
                f"(applied checksum {checksum[:12]}..., file now {m.checksum[:12]}...); "
                "restore it and put the change in a new numbered migration")
        if m.name != name:
            raise MigrationError(
                f"migration version {version} was applied as {name} but the file is {m.path.name}")
    pending = [m for m in files if m.version not in applied]
    if pending and applied and pending[0].version < max(applied):
        raise MigrationError(
            f"migration {pending[0].path.name} is older than the last applied version "
            f"{max(applied):04d}; renumber it")
    return pending


def upgrade(dsn: str | None = None, *, directory: Path | str | None = None) -> list[str]:
    """Apply every pending migration; return the names applied (empty if none).

    Safe to run concurrently: the advisory lock makes the second runner wait
    and then apply nothing.
    """
    files = discover(directory)
    conn = db.connect(dsn, application_name="mailshift-migrate")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                cur.execute(_CREATE_TABLE)
                pending = _check(files, _applied(cur))
                done: list[str] = []
                for m in pending:
                    cur.execute("BEGIN")
                    try:
                        cur.execute(m.sql)
                        cur.execute(
                            "INSERT INTO schema_migration (version, name, checksum) "
                            "VALUES (%s, %s, %s)", (m.version, m.name, m.checksum))
                        cur.execute("COMMIT")
                    except Exception as exc:
                        cur.execute("ROLLBACK")
                        raise MigrationError(f"migration {m.path.name} failed: {exc}") from exc
                    done.append(m.name)
                return done
            finally:
                if not conn.closed:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        conn.close()


def status(dsn: str | None = None, *, directory: Path | str | None = None) -> dict:
    """``{"applied": [names], "pending": [names]}``; raises like upgrade on a mismatch."""
    files = discover(directory)
    conn = db.connect(dsn, application_name="mailshift-migrate")
    try:
        with conn.cursor() as cur:
            applied = _applied(cur)
        conn.rollback()
    finally:
        conn.close()
    pending = _check(files, applied)
    return {"applied": [n for _, (n, _c) in sorted(applied.items())],
            "pending": [m.name for m in pending]}


def current(dsn: str | None = None) -> str | None:
    """Name of the last applied migration (e.g. ``"0001_init"``), None if none."""
    conn = db.connect(dsn, application_name="mailshift-migrate")
    try:
        with conn.cursor() as cur:
            applied = _applied(cur)
        conn.rollback()
    finally:
        conn.close()
    return applied[max(applied)][0] if applied else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mailshift.store.migrate",
                                description="Apply mailshift's SQL migrations.")
    p.add_argument("command", nargs="?", default="upgrade", choices=["upgrade", "current", "status"])
    p.add_argument("--dsn", default=None, help=f"libpq URL (default ${settings.DB_URL})")
    args = p.parse_args(argv)
    try:
        if args.command == "upgrade":
            applied = upgrade(args.dsn)
            print("applied: " + ", ".join(applied) if applied else "up to date")
        elif args.command == "current":
            print(current(args.dsn) or "(none)")
        else:
            print(json.dumps(status(args.dsn), indent=2))
    except (MigrationError, db.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
