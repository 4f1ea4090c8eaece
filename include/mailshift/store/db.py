"""Database connection for mailshift (the ledger + inventory database).

The DSN comes from the argument or from the environment variable
``MAILSHIFT_DB_URL`` (a libpq URL, e.g. ``postgresql://mailshift@127.0.0.1:14340/mailshift``).
"""
from __future__ import annotations

import os

import psycopg2
import psycopg2.extensions

ENV_VAR = "MAILSHIFT_DB_URL"


class ConfigError(RuntimeError):
    """No database configured."""


def resolve_dsn(dsn: str | None = None) -> str:
    """Return ``dsn`` or ``$MAILSHIFT_DB_URL``; raise ConfigError if neither is set."""
    if dsn:
        return dsn
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env
    raise ConfigError(
        f"no database configured: pass dsn=... or set {ENV_VAR} "
        "(a libpq URL such as postgresql://mailshift@127.0.0.1:14340/mailshift; "
        "the lab writes it to .lab/env, `source .lab/env`)"
    )


def connect(dsn: str | None = None, *, application_name: str = "mailshift",
            **kwargs) -> psycopg2.extensions.connection:
    """Open a psycopg2 connection to the mailshift database.

    ``dsn`` defaults to ``$MAILSHIFT_DB_URL``. Extra keyword arguments go to
    ``psycopg2.connect`` (e.g. ``connect_timeout``).
    """
    kwargs.setdefault("application_name", application_name)
    return psycopg2.connect(resolve_dsn(dsn), **kwargs)
