"""The client-settings kit: per destination, generated and exported per household, the files a
customer (or the support desk) opens to set a mail program up for the new service. No database
(`export_kits` reads the households through `mailshift.customers.notices`).

Per mailbox, in `<out>/<household id>/<address>/`:
- `config-v1.1.xml`: Thunderbird autoconfig (clientConfig 1.1): the incoming server the mailbox
  uses today first (POP3 or IMAP), then the other, then SMTP submission;
- `autodiscover.xml`: Microsoft Autodiscover POX response (Outlook; responseschema 2006a):
  IMAP/POP3 and SMTP with `Encryption` (SSL / TLS = STARTTLS / None);
- `<address>.mobileconfig`: Apple configuration profile with one `com.apple.mail.managed`
  payload: exact host, port, TLS, authentication and `IncomingMailServerIMAPPathPrefix` (always
  written, empty when the destination has no prefix, so a legacy `INBOX.` prefix cannot survive
  on a Mac); stable UUIDs (uuid5 of the address), so a re-export replaces, never duplicates.

The destination profile (`DestinationProfile.from_dict`, a YAML/JSON file per destination):
    display_name: New Mail Service
    imap: {host: imap.example.net, port: 993, tls: ssl}      # ssl | starttls | none
    pop3: {host: pop.example.net, port: 995, tls: ssl}
    smtp: {host: smtp.example.net, port: 587, tls: starttls}
    imap_path_prefix: ""                                     # the destination's namespace prefix
    username: address                                        # address | login
"""
from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from mailshift.errors import ConfigError

TLS_MODES = ("ssl", "starttls", "none")
AUTODISCOVER_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_RESPONSE_NS = \
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
_UUID_NS = uuid.UUID("6c1b1a4e-2f0b-4c55-9a8e-0d9c1f6b7a15")


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    tls: str = "ssl"

    @classmethod
    def from_dict(cls, name: str, d: dict) -> Server:
        try:
            s = cls(str(d["host"]), int(d["port"]), str(d.get("tls", "ssl")).lower())
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"client-settings profile: {name} needs host and port ({exc})") from None
        if s.tls not in TLS_MODES:
            raise ConfigError(f"client-settings profile: {name}.tls {s.tls!r} is not one of "
                              f"{', '.join(TLS_MODES)}")
        return s


@dataclass(frozen=True)
class DestinationProfile:
    destination: str
    display_name: str
    imap: Server
    smtp: Server
    pop3: Server | None = None
    imap_path_prefix: str = ""
    username: str = "address"

    @classmethod
    def from_dict(cls, destination: str, d: dict) -> DestinationProfile:
        if not isinstance(d, dict) or "imap" not in d or "smtp" not in d:
            raise ConfigError(f"client-settings profile of {destination}: imap and smtp are required")
        return cls(destination, str(d.get("display_name") or destination),
                   Server.from_dict("imap", d["imap"]), Server.from_dict("smtp", d["smtp"]),
                   Server.from_dict("pop3", d["pop3"]) if d.get("pop3") else None,
                   str(d.get("imap_path_prefix") or ""), str(d.get("username") or "address"))


@dataclass
class Account:
    """One mailbox as its mail program must be set up at the destination."""
    address: str
    login: str
    protocol: str           # imap | pop3: what the customer uses today
    name: str = ""
    files: dict = field(default_factory=dict)


def _user(p: DestinationProfile, a: Account) -> str:
    return a.login if p.username == "login" and a.login else a.address


# -- Thunderbird autoconfig ----------------------------------------------------------------------
_TB_SOCKET = {"ssl": "SSL", "starttls": "STARTTLS", "none": "plain"}


def _tb_server(parent, tag: str, kind: str, s: Server, user: str) -> None:
    e = ET.SubElement(parent, tag, type=kind)
    for k, v in (("hostname", s.host), ("port", str(s.port)), ("socketType", _TB_SOCKET[s.tls]),
                 ("authentication", "password-cleartext"), ("username", user)):
        ET.SubElement(e, k).text = v


def thunderbird(p: DestinationProfile, a: Account) -> bytes:
    domain = a.address.rsplit("@", 1)[-1].lower()
    root = ET.Element("clientConfig", version="1.1")
    prov = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(prov, "domain").text = domain
    ET.SubElement(prov, "displayName").text = p.display_name
    ET.SubElement(prov, "displayShortName").text = p.display_name[:30]
    incoming = [("imap", p.imap)] + ([("pop3", p.pop3)] if p.pop3 else [])
    if a.protocol == "pop3":
        incoming.reverse()
    for kind, s in incoming:
        _tb_server(prov, "incomingServer", kind, s, _user(p, a))
    _tb_server(prov, "outgoingServer", "smtp", p.smtp, _user(p, a))
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


# -- Microsoft Autodiscover (POX) ----------------------------------------------------------------
_AD_ENCRYPTION = {"ssl": "SSL", "starttls": "TLS", "none": "None"}


def _ad_protocol(kind: str, s: Server, user: str) -> str:
    items = (("Type", kind), ("Server", s.host), ("Port", str(s.port)), ("DomainRequired", "off"),
             ("LoginName", user), ("SPA", "off"), ("SSL", "off" if s.tls == "none" else "on"),
             ("Encryption", _AD_ENCRYPTION[s.tls]), ("AuthRequired", "on"))
    return "      <Protocol>\n" + "".join(f"        <{k}>{escape(v)}</{k}>\n" for k, v in items) \
        + "      </Protocol>\n"


def autodiscover(p: DestinationProfile, a: Account) -> bytes:
    """The POX answer Outlook expects (default namespaces as Exchange writes them)."""
    incoming = [("IMAP", p.imap)] + ([("POP3", p.pop3)] if p.pop3 else [])
    if a.protocol == "pop3":
        incoming.reverse()
    protocols = "".join(_ad_protocol(k, s, _user(p, a)) for k, s in incoming + [("SMTP", p.smtp)])
    return (f'<?xml version="1.0" encoding="utf-8"?>\n'
            f'<Autodiscover xmlns="{AUTODISCOVER_NS}">\n'
            f'  <Response xmlns="{AUTODISCOVER_RESPONSE_NS}">\n'
            f'    <User>\n      <DisplayName>{escape(a.name or a.address)}</DisplayName>\n'
            f'    </User>\n    <Account>\n      <AccountType>email</AccountType>\n'
            f'      <Action>settings</Action>\n{protocols}    </Account>\n  </Response>\n'
            f'</Autodiscover>\n').encode()


# -- Apple configuration profile -----------------------------------------------------------------
def mobileconfig(p: DestinationProfile, a: Account) -> bytes:
    pop = a.protocol == "pop3" and p.pop3 is not None
    inc = p.pop3 if pop else p.imap
    ident = "net.mailshift.mail." + a.address.lower().replace("@", ".")
    payload = {
        "PayloadType": "com.apple.mail.managed", "PayloadVersion": 1,
        "PayloadIdentifier": ident + ".account",
        "PayloadUUID": str(uuid.uuid5(_UUID_NS, a.address.lower() + "/account")).upper(),
        "PayloadDisplayName": f"{p.display_name}: {a.address}",
        "EmailAccountDescription": f"{p.display_name} ({a.address})",
        "EmailAccountName": a.name or a.address,
        "EmailAccountType": "EmailTypePOP" if pop else "EmailTypeIMAP",
        "EmailAddress": a.address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": inc.host, "IncomingMailServerPortNumber": inc.port,
        "IncomingMailServerUseSSL": inc.tls != "none",
        "IncomingMailServerUsername": _user(p, a),
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": p.smtp.host, "OutgoingMailServerPortNumber": p.smtp.port,
        "OutgoingMailServerUseSSL": p.smtp.tls != "none",
        "OutgoingMailServerUsername": _user(p, a),
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    if not pop:
        payload["IncomingMailServerIMAPPathPrefix"] = p.imap_path_prefix
    profile = {
        "PayloadType": "Configuration", "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": str(uuid.uuid5(_UUID_NS, a.address.lower())).upper(),
        "PayloadDisplayName": f"{p.display_name} mail: {a.address}",
        "PayloadDescription": "Mail settings of the new service",
        "PayloadRemovalDisallowed": False, "PayloadContent": [payload],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def kit(p: DestinationProfile, a: Account) -> dict[str, bytes]:
    """The three files of one mailbox, by file name."""
    return {"config-v1.1.xml": thunderbird(p, a), "autodiscover.xml": autodiscover(p, a),
            f"{a.address.lower()}.mobileconfig": mobileconfig(p, a)}


def write_household(out: Path, household_id: str, p: DestinationProfile,
                    accounts: list[Account]) -> list[Path]:
    """Write every mailbox's files under `<out>/<household>/<address>/`; the paths written."""
    written = []
    for a in accounts:
        d = out / household_id / a.address.lower()
        d.mkdir(parents=True, exist_ok=True)
        for name, data in kit(p, a).items():
            (d / name).write_bytes(data)
            written.append(d / name)
    return written


def load_profiles(path: str | Path) -> dict[str, DestinationProfile]:
    """A profile file (YAML or JSON): one profile, or `destinations: {<id>: profile}`."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"client-settings profile {path}: invalid YAML: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("destinations"), dict):
        return {k: DestinationProfile.from_dict(k, v) for k, v in doc["destinations"].items()}
    return {"*": DestinationProfile.from_dict("*", doc)}


def export_kits(conn, out: str | Path, profiles: dict[str, DestinationProfile], *,
                building: str | None = None, domain: str | None = None) -> dict:
    """Write the kit of every household in scope (the address after its rename, the
    destination login); returns counts and one household's directory as an example."""
    from mailshift.customers import notices
    from mailshift.store import audit as audit_store

    out = Path(out)
    hhs = notices.households(conn, building=building, domain=domain)
    accounts = audit_store.mailbox_accounts(conn, [m for h in hhs.values() for m in h.mailboxes])
    conn.commit()
    files, example = 0, None
    for hh in hhs.values():
        prof = profiles.get(hh.destination) or profiles.get("*")
        if prof is None:
            raise ConfigError(f"no client-settings profile for destination {hh.destination!r}")
        accts = [Account(*accounts[m], name=hh.contact_name) for m in sorted(hh.mailboxes)]
        files += len(write_household(out, hh.id, prof, accts))
        example = example or str(out / hh.id)
    return {"households": len(hhs), "files": files, "out": str(out), "example": example}
