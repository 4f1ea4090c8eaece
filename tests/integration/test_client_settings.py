"""Issue #15, item 6: `mailshift notices client-settings` writes every household's kit (the
address after its rename, the destination login), each file parses with a real parser, and
the notice mails link to the household's kit."""
import json
import plistlib
from xml.etree import ElementTree as ET

import psycopg2

from mailshift import cli, settings
from mailshift.customers import notices
from support.mail import fresh_database


def test_export_kits_and_notice_link(lab_config, capsys, tmp_path, monkeypatch):
    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO source_system (id, kind, imap_host, imap_port, tls,"
                        " max_connections, airflow_conn_id) VALUES ('s', 'courier', 'h', 143,"
                        " 'none', 1, 'c')")
            cur.execute("INSERT INTO domain (name) VALUES ('x.example')")
            cur.execute("INSERT INTO building (id, domain, source_system) VALUES ('B1', 'x.example', 's')")
            cur.execute("INSERT INTO household (id, building_id, contact_name) VALUES ('H1', 'B1', '佐藤')")
            for addr, proto in (("sato..ichiro@x.example", "imap"), ("sato.pop@x.example", "pop3")):
                cur.execute("INSERT INTO mailbox (household_id, address, source_login, dest_login,"
                            " protocol) VALUES ('H1', %s, %s, lower(%s), %s)",
                            (addr, addr.split("@")[0], addr, proto))
        assert cli.main(["--db", dsn, "audit", "addresses"]) == 0
        capsys.readouterr()
        prof = tmp_path / "dest.yaml"
        prof.write_text("display_name: Shin Mail\nimap: {host: imap.shin.example, port: 993, tls: ssl}\n"
                        "pop3: {host: pop.shin.example, port: 995, tls: ssl}\n"
                        "smtp: {host: smtp.shin.example, port: 587, tls: starttls}\nimap_path_prefix: ''\n")
        out = tmp_path / "kits"
        rc = cli.main(["--db", dsn, "notices", "client-settings", "--building", "B1",
                       "--profile", str(prof), "--out", str(out)])
        res = json.loads(capsys.readouterr().out)
        assert rc == 0 and res["households"] == 1 and res["files"] == 6
        renamed = out / "H1" / "sato.ichiro@x.example"        # the address after the rename
        assert sorted(p.name for p in renamed.iterdir()) == [
            "autodiscover.xml", "config-v1.1.xml", "sato.ichiro@x.example.mobileconfig"]
        for f in out.rglob("*"):
            if f.suffix == ".xml":
                ET.parse(f)
            elif f.suffix == ".mobileconfig":
                p = plistlib.loads(f.read_bytes())["PayloadContent"][0]
                assert p["IncomingMailServerUsername"] in ("sato.ichiro@x.example", "sato.pop@x.example")
        mail = plistlib.loads((renamed / "sato.ichiro@x.example.mobileconfig").read_bytes())
        assert mail["PayloadContent"][0]["IncomingMailServerIMAPPathPrefix"] == ""
        rc = cli.main(["--db", dsn, "notices", "client-settings", "--building", "B-nope",
                       "--profile", str(prof), "--out", str(out)])
        assert rc == 2 and "unknown building" in capsys.readouterr().err

        monkeypatch.setenv(settings.CLIENT_SETTINGS_URL, "https://support.example/kits")
        hh = notices.households(conn, building="B1")["H1"]
        msg = notices.render_email(hh, min(hh.mailboxes), 1, sender="n@x.example",
                                   campaign="migration", settings_url=notices.kit_url("H1"))
        assert "https://support.example/kits/H1/" in msg.get_content()
        conn.close()
