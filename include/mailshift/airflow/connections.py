"""Airflow connections -> mailshift endpoints and database URLs (secrets stay in Airflow)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from airflow.sdk.bases.hook import BaseHook

from mailshift.protocols.endpoint import Endpoint, parse_endpoint

DB_CONN_ID = "mailshift_db"
SLACK_CONN_ID = "mailshift_slack"
_ENDPOINT_OPTIONS = ("tls", "verify", "ca", "auth", "sep", "pop3_port", "pop3_tls", "timeout")


def endpoint(conn_id: str) -> Endpoint:
    """An IMAP endpoint from an Airflow connection (host, port, login = admin user, password,
    extra: tls, auth, pop3_port, ca, ...). Works for UI-defined and AIRFLOW_CONN_* connections."""
    c = BaseHook.get_connection(conn_id)
    extra = c.extra_dejson or {}
    options = {k: str(extra[k]) for k in _ENDPOINT_OPTIONS if k in extra}
    userinfo = quote(c.login or "", safe="") + (":" + quote(c.password, safe="") if c.password else "")
    uri = f"imap://{userinfo}@{c.host}:{c.port or 143}"
    if options:
        uri += "?" + urlencode(options)
    return parse_endpoint(uri)


def database_url(conn_id: str = DB_CONN_ID) -> str:
    """The mailshift database as a libpq URL from its Airflow connection (tasks never read env)."""
    c = BaseHook.get_connection(conn_id)
    auth = quote(c.login or "", safe="") + (":" + quote(c.password, safe="") if c.password else "")
    return f"postgresql://{auth}@{c.host}:{c.port or 5432}/{c.schema or 'mailshift'}"


def connection_doc(conn_id: str) -> dict:
    """An Airflow connection as the JSON-form dict the core's `from_connection` helpers take."""
    c = BaseHook.get_connection(conn_id)
    return {"conn_type": c.conn_type, "host": c.host, "port": c.port, "login": c.login, "password": c.password,
            "schema": c.schema, "extra": c.extra_dejson or {}}


def dns_provider(conn_id: str = "mailshift_dns"):
    """The RFC 2136 DNS provider of the cutover, its TSIG key kept in the Airflow connection."""
    from mailshift.protocols.dns import Rfc2136Provider

    return Rfc2136Provider.from_connection(connection_doc(conn_id))
