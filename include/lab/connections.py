"""The lab's servers as connections: URIs for the CLI, Airflow JSON connections for Airflow.

`python -m lab.connections` prints `export AIRFLOW_CONN_...` lines (lab-only secrets) that make
the same connection ids work for `mailshift` commands and for Airflow tasks.
"""

from __future__ import annotations

import json
import shlex
from urllib.parse import quote, urlsplit

from .config import LabConfig


def conn_id(server: str) -> str:
    return "mailshift_" + server.replace("-", "_")


def imap_uri(cfg: LabConfig, server: str, tls: str = "none") -> str:
    """URI for `mailshift.protocols.endpoint.parse_endpoint`; plaintext on loopback unless asked."""
    s = cfg.servers[server]
    port = s.imaps_port if tls == "imaps" else s.imap_port
    return (f"imap://{quote(s.admin_user, safe='')}:{quote(s.admin_password, safe='')}@{s.host}:{port}"
            f"?tls={tls}&auth=master&pop3_port={s.pop3_port}&ca={quote(str(cfg.ca_cert), safe='')}")


def airflow_connections(cfg: LabConfig) -> dict[str, dict]:
    """Every connection mailshift uses, in Airflow's JSON connection form."""
    db = urlsplit(cfg.pg_dsn)
    out = {
        "mailshift_db": {"conn_type": "postgres", "host": db.hostname, "port": db.port, "login": db.username,
                         "password": db.password, "schema": db.path.lstrip("/")},
        "mailshift_slack": {"conn_type": "slack", "password": cfg.slack_token,
                            "extra": {"base_url": cfg.slack_base_url}},
        "mailshift_dns": {"conn_type": "generic", "host": cfg.dns_host, "port": cfg.dns_port,
                          "login": cfg.tsig_key_name, "password": cfg.tsig_secret,
                          "extra": {"algorithm": cfg.tsig_algorithm, "zone": cfg.dns_zone}},
    }
    for name, s in cfg.servers.items():
        out[conn_id(name)] = {"conn_type": "imap", "host": s.host, "port": s.imap_port, "login": s.admin_user,
                              "password": s.admin_password,
                              "extra": {"tls": "none", "auth": "master", "pop3_port": s.pop3_port,
                                        "ca": str(cfg.ca_cert)}}
    return out


def airflow_conn_env(cfg: LabConfig) -> dict[str, str]:
    """AIRFLOW_CONN_* variables for every lab connection."""
    return {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(doc) for cid, doc in airflow_connections(cfg).items()}


def main() -> None:
    for key, value in airflow_conn_env(LabConfig.load()).items():
        print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
