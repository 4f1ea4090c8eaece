"""Every environment variable mailshift reads, in one place, with its default and why.

Secrets never come from here except through the variables that name a connection
(`AIRFLOW_CONN_<ID>`, Airflow's own convention) or `MAILSHIFT_DB_URL` / `MAILSHIFT_SLACK_TOKEN`;
nothing here is logged. The product knows nothing of the local lab: the lab writes these
variables into `.lab/env`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mailshift.errors import ConfigError

DB_URL = "MAILSHIFT_DB_URL"                 # libpq URL of the mailshift database
REPORTS_DIR = "MAILSHIFT_REPORTS_DIR"       # where verification reports are written (default ./reports)
SNAPSHOT_DIR = "MAILSHIFT_SNAPSHOT_DIR"     # the DAG snapshot (default <repo>/include/snapshot)
SMTP = "MAILSHIFT_SMTP"                     # host:port of the ISP's relay for notice mail
SLACK_TOKEN = "MAILSHIFT_SLACK_TOKEN"       # CLI only; DAG tasks use the mailshift_slack connection
SLACK_BASE_URL = "MAILSHIFT_SLACK_BASE_URL"  # Slack Web API base (a stand-in in tests)
COPY_QUEUE = "MAILSHIFT_COPY_QUEUE"         # Celery queue of copy tasks (default: the source pool)
FAILPOINTS = "MAILSHIFT_FAILPOINTS"         # tests only: crash at a named point of the copier
SHARD_BUDGET_SECONDS = "MAILSHIFT_SHARD_BUDGET_SECONDS"
SHARD_BUILD_SHARE = "MAILSHIFT_SHARD_BUILD_SHARE"
PROGRESS_REFRESH_SECONDS = "MAILSHIFT_PROGRESS_REFRESH_SECONDS"
# public root URL of the Airflow UI that serves the mailshift pages (links in DAG docs), e.g.
# https://airflow.isp.example; default: Airflow's own [api] base_url from AIRFLOW__API__BASE_URL
UI_BASE_URL = "MAILSHIFT_UI_BASE_URL"
# per-mailbox passwords for servers without a master user: <dir>/<connection id>.credentials,
# mode 0600, lines `login:password` (the connection's extra `credentials` names a file instead)
CREDENTIALS_DIR = "MAILSHIFT_CREDENTIALS_DIR"
# seconds a server's answer to the identity probe (authzid / master login) is trusted (default 21600)
IDENTITY_PROBE_TTL = "MAILSHIFT_IDENTITY_PROBE_TTL"
# directory of the identity probes' cache file (default ~/.cache/mailshift; $XDG_CACHE_HOME honoured)
IDENTITY_PROBE_CACHE = "MAILSHIFT_IDENTITY_PROBE_CACHE"


def get(name: str, default: str | None = None) -> str | None:
    """The variable's value, stripped; `default` when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or default


def get_float(name: str, default: float) -> float:
    value = get(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None


def db_url(explicit: str | None = None) -> str:
    """The mailshift database: `explicit` or $MAILSHIFT_DB_URL; ConfigError naming both if neither."""
    if explicit:
        return explicit
    value = get(DB_URL)
    if value:
        return value
    raise ConfigError(f"no database configured: pass --db or set {DB_URL} "
                      "(a libpq URL such as postgresql://mailshift:PASSWORD@db.example.net:5432/mailshift)")


def reports_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where HTML/JSON proof reports go: `explicit`, $MAILSHIFT_REPORTS_DIR, or ./reports."""
    if explicit:
        return Path(explicit)
    return Path(get(REPORTS_DIR) or Path.cwd() / "reports")


def ui_base_url() -> str | None:
    """Where links to the mailshift pages point: $MAILSHIFT_UI_BASE_URL, else Airflow's
    AIRFLOW__API__BASE_URL; None when neither is set (links are then relative to the host)."""
    value = get(UI_BASE_URL) or get("AIRFLOW__API__BASE_URL")
    return value.rstrip("/") if value else None


def identity_probe_cache_dir() -> Path:
    """Where the identity probes' answers are shared between processes: $MAILSHIFT_IDENTITY_PROBE_CACHE,
    else $XDG_CACHE_HOME/mailshift, else ~/.cache/mailshift."""
    value = get(IDENTITY_PROBE_CACHE)
    if value:
        return Path(value)
    return Path(get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mailshift"


def snapshot_dir() -> Path:
    """The DAG snapshot the building DAG files are generated from."""
    value = get(SNAPSHOT_DIR)
    return Path(value) if value else Path(__file__).resolve().parents[1] / "snapshot"


def connection_value(conn_id: str) -> tuple[str, str | dict]:
    """(variable name, URI string or parsed JSON) of `AIRFLOW_CONN_<CONN_ID>`, as Airflow reads
    env-defined connections. ConfigError when unset or not valid JSON."""
    var = "AIRFLOW_CONN_" + conn_id.upper()
    value = get(var)
    if not value:
        raise ConfigError(f"connection {conn_id!r} is not defined (set {var} or an Airflow connection)")
    if value.startswith("{"):
        try:
            return var, json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{var} is not valid JSON: {exc.msg} at {exc.pos}") from exc
    return var, value

# issue #15: where each household's client-settings kit is published (the notice mails link to
# <url>/<household id>/); unset: the mails carry no link
CLIENT_SETTINGS_URL = "MAILSHIFT_CLIENT_SETTINGS_URL"
