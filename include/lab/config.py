"""Lab configuration: paths, ports and the `lab.json` contract.

`python -m lab up` writes `<lab dir>/lab.json` (mode 600); everything else (tests, the seeder,
the Makefile through `<lab dir>/env`) reads it back with `LabConfig.load()`.
"""
from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT_BASE = 14300
HOST = "127.0.0.1"

# port offsets from MAILSHIFT_LAB_PORT_BASE (docs/architecture.md, "Lab ports")
SERVER_NAMES = ("src-a", "src-b", "dest")
IMAP_OFFSET = {"src-a": 1, "src-b": 2, "dest": 3}
POP3_OFFSET = {k: v + 10 for k, v in IMAP_OFFSET.items()}
IMAPS_OFFSET = {k: v + 20 for k, v in IMAP_OFFSET.items()}
LMTP_OFFSET = {k: v + 30 for k, v in IMAP_OFFSET.items()}  # Dovecot LMTP (lab MTA -> mailbox)
SMTP_OFFSET = 25  # lab MTA (Postfix instance), SMTP on 127.0.0.1
PG_OFFSET = 40
MANAGESIEVE_OFFSET = 41  # dest Dovecot ManageSieve (Pigeonhole, RFC 5804)
DNS_OFFSET = 53
SLACK_OFFSET = 80

DNS_ZONE = "lab.mailshift.test"
TSIG_KEY_NAME = "mailshift-lab-update"
TSIG_ALGORITHM = "hmac-sha256"


def lab_dir() -> Path:
    """The lab state directory: $MAILSHIFT_LAB_DIR or <repo>/.lab (absolute, not resolved)."""
    env = os.environ.get("MAILSHIFT_LAB_DIR")
    return Path(os.path.abspath(env)) if env else REPO_ROOT / ".lab"


def port_base_from_env() -> int | None:
    env = os.environ.get("MAILSHIFT_LAB_PORT_BASE")
    return int(env) if env else None


class LabNotConfigured(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerInfo:
    name: str
    host: str
    imap_port: int
    pop3_port: int
    imaps_port: int
    admin_user: str          # Dovecot master user: log in as "<login>*admin" or PLAIN authzid
    admin_password: str
    separator: str           # IMAP hierarchy separator of the personal namespace
    prefix: str              # personal namespace prefix ("" or "INBOX.")
    mail_root: str           # <mail_root>/<login> is a user's home (mail inside)
    role: str = "source"     # "source" | "dest"
    max_connections: int = 0  # service imap process_limit (emulated legacy limit)
    pop3_uidl_format: str = ""
    max_mail_size: int = 0   # dest only: quota_max_mail_size in bytes (APPENDLIMIT)
    passwd_file: str = ""
    config_file: str = ""
    log_dir: str = ""
    lmtp_port: int = 0       # Dovecot LMTP listener (the lab MTA delivers here)

    def master_login(self, login: str) -> str:
        return f"{login}*{self.admin_user}"


@dataclass(frozen=True)
class LabConfig:
    root: Path
    port_base: int
    pg_dsn: str              # mailshift database, role mailshift
    pg_admin_dsn: str        # superuser, database postgres
    servers: dict[str, ServerInfo]
    dns_host: str
    dns_port: int
    dns_zone: str
    tsig_key_name: str
    tsig_algorithm: str
    tsig_secret: str         # base64
    slack_base_url: str      # "http://127.0.0.1:<base+80>/api/"
    slack_token: str
    ca_cert: Path
    default_user_password: str
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    smtp_host: str = HOST    # lab MTA (Postfix): accepts mail for the lab mailboxes
    smtp_port: int = 0

    @property
    def sources(self) -> dict[str, ServerInfo]:
        return {k: v for k, v in self.servers.items() if v.role == "source"}

    @property
    def cyrus(self) -> dict[str, dict]:
        """The Cyrus IMAP instances (`lab.cyrus`): name -> host, ports, role, admin, dir."""
        return dict(self.raw.get("cyrus") or {})

    @property
    def dest(self) -> ServerInfo:
        return self.servers["dest"]

    @property
    def managesieve_port(self) -> int:
        """The dest Dovecot's ManageSieve port (base+41)."""
        return self.port_base + MANAGESIEVE_OFFSET

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the lab servers against the lab CA."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        return ctx

    def tsig_keyring(self):
        import dns.tsigkeyring

        return dns.tsigkeyring.from_text({self.tsig_key_name: self.tsig_secret})

    @classmethod
    def load(cls, root: str | os.PathLike | None = None) -> LabConfig:
        root = Path(os.path.abspath(root)) if root else lab_dir()
        path = root / "lab.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabNotConfigured(f"{path} not found: run `python -m lab up` (or `make lab-up`)") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, d: dict) -> LabConfig:
        servers = {name: ServerInfo(**s) for name, s in d["servers"].items()}
        return cls(
            root=Path(d["root"]),
            port_base=d["port_base"],
            pg_dsn=d["pg"]["dsn"],
            pg_admin_dsn=d["pg"]["admin_dsn"],
            servers=servers,
            dns_host=d["dns"]["host"],
            dns_port=d["dns"]["port"],
            dns_zone=d["dns"]["zone"],
            tsig_key_name=d["dns"]["tsig_key_name"],
            tsig_algorithm=d["dns"]["tsig_algorithm"],
            tsig_secret=d["dns"]["tsig_secret"],
            slack_base_url=d["slack"]["base_url"],
            slack_token=d["slack"]["token"],
            ca_cert=Path(d["tls"]["ca_cert"]),
            default_user_password=d["default_user_password"],
            raw=d,
            smtp_host=(d.get("smtp") or {}).get("host", HOST),
            smtp_port=(d.get("smtp") or {}).get("port", 0),
        )
