"""Airflow connections -> mailshift endpoints and database URLs (secrets stay in Airflow).

Per-mailbox passwords (servers without a master user, `auth=user`) are looked up through
Airflow's secrets backend: one Variable per connection and login,

    <connection id>__password__<login>      e.g. mailshift_cyrus_legacy__password__c100234

(`AIRFLOW_VAR_MAILSHIFT_CYRUS_LEGACY__PASSWORD__C100234` with the environment backend; the
same key in Vault, AWS Secrets Manager, ... under the backend's variables prefix). The key
contains "password", so Airflow masks the value in task logs; mailshift never logs it, puts it
in an XCom, the database or Slack. A login without such a Variable falls back to the source
system's 0600 credentials file (`mailshift.protocols.endpoint`). The lookup is registered when
a task resolves its first endpoint, i.e. at task start.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

from airflow.sdk.bases.hook import BaseHook

from mailshift.protocols.endpoint import Endpoint, endpoint_from_json, set_password_resolver

DB_CONN_ID = "mailshift_db"
SLACK_CONN_ID = "mailshift_slack"
PASSWORD_KEY = "{conn_id}__password__{login}"


def password_key(conn_id: str, login: str) -> str:
    """The Variable that holds the password of `login` on the server of connection `conn_id`."""
    return PASSWORD_KEY.format(conn_id=conn_id, login=login)


def secrets_password(ep: Endpoint, login: str) -> str | None:
    """The mailbox's password from Airflow's secrets backend chain (None: not there, use the file)."""
    if not ep.conn_id:
        return None
    from airflow.sdk import Variable
    from airflow.sdk.log import mask_secret

    key = password_key(ep.conn_id, login)
    value = Variable.get(key, default=None)
    if not value:
        return None
    mask_secret(value, key)   # redacted in every log line of this task, whatever the key
    return value


def endpoint(conn_id: str) -> Endpoint:
    """An IMAP endpoint from an Airflow connection (host, port, login = admin user, password,
    extra: tls, auth, pop3_port, ca, credentials, imap, ...), remembering its id (the key of its
    per-mailbox passwords). Works for UI-defined and AIRFLOW_CONN_* connections."""
    set_password_resolver(secrets_password)
    return dataclasses.replace(endpoint_from_json(connection_doc(conn_id)), conn_id=conn_id)


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
