"""The lab's servers as mailshift connection URIs (what an operator puts in Airflow connections)."""

from __future__ import annotations

from urllib.parse import quote

from .config import LabConfig


def imap_uri(cfg: LabConfig, server: str, tls: str = "none") -> str:
    """URI for `mailshift.imap.endpoint.parse_endpoint`; plaintext on loopback unless asked."""
    s = cfg.servers[server]
    port = s.imaps_port if tls == "imaps" else s.imap_port
    return (f"imap://{quote(s.admin_user, safe='')}:{quote(s.admin_password, safe='')}@{s.host}:{port}"
            f"?tls={tls}&auth=master&pop3_port={s.pop3_port}&ca={quote(str(cfg.ca_cert), safe='')}")


def airflow_conn_env(cfg: LabConfig) -> dict[str, str]:
    """AIRFLOW_CONN_* variables for every lab server and the mailshift database."""
    env = {"AIRFLOW_CONN_MAILSHIFT_DB": cfg.pg_dsn}
    for name in cfg.servers:
        env["AIRFLOW_CONN_MAILSHIFT_" + name.upper().replace("-", "_")] = imap_uri(cfg, name)
    return env
