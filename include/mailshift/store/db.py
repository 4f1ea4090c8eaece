"""Connection to the mailshift database (ledger + inventory); the URL comes from settings."""
from __future__ import annotations

import psycopg2
import psycopg2.extensions

from mailshift import settings
from mailshift.errors import ConfigError, TransientError


def resolve_dsn(dsn: str | None = None) -> str:
    """`dsn` or $MAILSHIFT_DB_URL; ConfigError if neither is set."""
    return settings.db_url(dsn)


def connect(dsn: str | None = None, *, application_name: str = "mailshift",
            **kwargs) -> psycopg2.extensions.connection:
    """Open a psycopg2 connection to the mailshift database.

    A database that cannot be reached raises TransientError naming the host (never the
    password), so every caller can say one line instead of a traceback."""
    kwargs.setdefault("application_name", application_name)
    kwargs.setdefault("connect_timeout", 10)
    url = resolve_dsn(dsn)
    try:
        return psycopg2.connect(url, **kwargs)
    except psycopg2.OperationalError as exc:
        raise TransientError(f"database {describe(url)} unreachable: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from exc


def describe(url: str) -> str:
    """host:port/dbname of a libpq URL or key=value string, without user or password."""
    try:
        from psycopg2.extensions import parse_dsn

        p = parse_dsn(url)
    except Exception:  # noqa: BLE001 - describing must never fail
        return "(unparseable URL)"
    return f"{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '?')}"


__all__ = ["ConfigError", "connect", "describe", "resolve_dsn"]
