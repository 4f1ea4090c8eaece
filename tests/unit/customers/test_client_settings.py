"""The client-settings kit: every generated file parsed with a real parser (plistlib for the
Apple profile, ElementTree for Thunderbird autoconfig and Outlook Autodiscover)."""
import plistlib
from xml.etree import ElementTree as ET

import pytest

from mailshift.customers import client_settings as cs
from mailshift.errors import ConfigError

PROFILE = cs.DestinationProfile.from_dict("mailshift_dest", {
    "display_name": "Shin Mail",
    "imap": {"host": "imap.shin.example", "port": 993, "tls": "ssl"},
    "pop3": {"host": "pop.shin.example", "port": 995, "tls": "ssl"},
    "smtp": {"host": "smtp.shin.example", "port": 587, "tls": "starttls"},
    "imap_path_prefix": "",
})
AD = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def test_thunderbird_autoconfig_parses_with_exact_servers():
    a = cs.Account("hanako.takahashi@x.example", "hanako.takahashi@x.example", "pop3", "高橋 花子")
    root = ET.fromstring(cs.thunderbird(PROFILE, a))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    prov = root.find("emailProvider")
    assert prov.get("id") == "x.example" and prov.findtext("domain") == "x.example"
    inc = prov.findall("incomingServer")
    assert [i.get("type") for i in inc] == ["pop3", "imap"]       # what the customer uses first
    assert [(i.findtext("hostname"), i.findtext("port"), i.findtext("socketType")) for i in inc] == [
        ("pop.shin.example", "995", "SSL"), ("imap.shin.example", "993", "SSL")]
    out = prov.find("outgoingServer")
    assert (out.findtext("hostname"), out.findtext("port"), out.findtext("socketType"),
            out.findtext("authentication"), out.findtext("username")) == (
        "smtp.shin.example", "587", "STARTTLS", "password-cleartext", "hanako.takahashi@x.example")


def test_autodiscover_pox_parses():
    a = cs.Account("a&b@x.example", "a&b@x.example", "imap", "A <B>")
    root = ET.fromstring(cs.autodiscover(PROFILE, a))
    assert root.tag == "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}Autodiscover"
    acct = root.find(f"{AD}Response/{AD}Account")
    assert acct.findtext(f"{AD}AccountType") == "email" and acct.findtext(f"{AD}Action") == "settings"
    protos = {p.findtext(f"{AD}Type"): p for p in acct.findall(f"{AD}Protocol")}
    assert list(protos) == ["IMAP", "POP3", "SMTP"]
    imap, smtp = protos["IMAP"], protos["SMTP"]
    assert (imap.findtext(f"{AD}Server"), imap.findtext(f"{AD}Port"), imap.findtext(f"{AD}SSL"),
            imap.findtext(f"{AD}Encryption"), imap.findtext(f"{AD}LoginName")) == (
        "imap.shin.example", "993", "on", "SSL", "a&b@x.example")
    assert (smtp.findtext(f"{AD}Port"), smtp.findtext(f"{AD}Encryption")) == ("587", "TLS")
    assert root.find(f"{AD}Response/{AD}User/{AD}DisplayName").text == "A <B>"


def test_mobileconfig_parses_and_drops_the_legacy_prefix():
    a = cs.Account("sato@x.example", "sato@x.example", "imap", "Sato")
    prof = plistlib.loads(cs.mobileconfig(PROFILE, a))
    assert prof["PayloadType"] == "Configuration" and prof["PayloadVersion"] == 1
    (mail,) = prof["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert (mail["EmailAccountType"], mail["IncomingMailServerHostName"],
            mail["IncomingMailServerPortNumber"], mail["IncomingMailServerUseSSL"],
            mail["IncomingMailServerAuthentication"], mail["IncomingMailServerUsername"]) == (
        "EmailTypeIMAP", "imap.shin.example", 993, True, "EmailAuthPassword", "sato@x.example")
    # written even when empty: the old INBOX. prefix cannot survive on a Mac
    assert mail["IncomingMailServerIMAPPathPrefix"] == ""
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
            mail["OutgoingMailServerUseSSL"]) == ("smtp.shin.example", 587, True)
    again = plistlib.loads(cs.mobileconfig(PROFILE, a))
    assert again["PayloadUUID"] == prof["PayloadUUID"] != mail["PayloadUUID"]   # stable
    pop = plistlib.loads(cs.mobileconfig(PROFILE, cs.Account("p@x.example", "p", "pop3")))
    assert pop["PayloadContent"][0]["EmailAccountType"] == "EmailTypePOP"
    assert pop["PayloadContent"][0]["IncomingMailServerPortNumber"] == 995


def test_profile_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="imap and smtp are required"):
        cs.DestinationProfile.from_dict("d", {"imap": {"host": "h", "port": 1}})
    with pytest.raises(ConfigError, match="tls 'tls1.3' is not one of"):
        cs.DestinationProfile.from_dict("d", {"imap": {"host": "h", "port": 1, "tls": "tls1.3"},
                                              "smtp": {"host": "h", "port": 2}})
    f = tmp_path / "p.yaml"
    f.write_text("destinations:\n  mailshift_dest:\n    imap: {host: i, port: 993}\n"
                 "    smtp: {host: s, port: 465, tls: ssl}\n")
    assert cs.load_profiles(f)["mailshift_dest"].smtp.port == 465
