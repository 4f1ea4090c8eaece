"""The operator UI's security (issue #16), through the real FastAPI app of the plugin with a
signed-in user stubbed: NUL bytes are refused (400, never 500), every page carries CSP with
frame-ancestors, the support role never gets phone or postal address, prefix searches need 3+
characters and are rate-limited."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import psycopg2
import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from support.mail import add_mailbox, fresh_database, unique_login

PLUGIN = Path(__file__).resolve().parents[3] / "plugins" / "mailshift_ui.py"


def _plugin():
    spec = importlib.util.spec_from_file_location("mailshift_ui_under_test", PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ui(lab_config):
    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        mb = add_mailbox(conn, lab_config, "src-a", unique_login("ui"))
        hid = f"H-B-src-a-{mb.source_login}"
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE household SET contact_name = %s, phone = %s, postal_address = %s WHERE id = %s",
                        ("山田　太郎", "03-1234-5678", "東京都千代田区丸の内１－１", hid))
        conn.close()
        mod = _plugin()
        mod._dsn = dsn
        who = {"name": "support", "contact": False}

        async def fake_user(request: Request):
            user = SimpleNamespace(get_name=lambda: who["name"])
            request.state.mailshift_user = user
            return user
        mod.app.dependency_overrides[mod.require_user] = fake_user
        mod.may_see_contact_details = lambda user: who["contact"]
        yield SimpleNamespace(client=TestClient(mod.app, root_path="/mailshift"), mod=mod, who=who, hid=hid,
                              address=mb.address)


def test_nul_byte_is_400_not_500(ui):
    for url in ("/building/B%00x", "/api/building/%00", "/lookup?q=a%00b", "/api/lookup?q=%00", "/report/x%00"):
        r = ui.client.get(url)
        assert r.status_code == 400, (url, r.status_code, r.text)


def test_csp_and_frame_ancestors_on_every_page(ui):
    for url in ("/lookup", "/api/lookup?q=nobody", "/building/none", "/lookup?q=%00"):
        r = ui.client.get(url)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'self'" in csp and "default-src 'self'" in csp, url
        assert r.headers["x-frame-options"] == "SAMEORIGIN" and r.headers["cache-control"] == "no-store"


def test_support_finds_by_name_phone_postal_but_sees_no_contact_details(ui):
    ui.who.update(name="support-a", contact=False)
    for q in ("山田太郎", "山田 太郎", "03-1234-5678", "０３－１２３４－５６７８", "0312345678", "東京都千代田区",
              ui.address.upper(), ui.hid, ui.address[:5]):
        res = ui.client.get("/api/lookup", params={"q": q}).json()
        assert [h["household_id"] for h in res["households"]] == [ui.hid], q
        h = res["households"][0]
        assert "phone" not in h and "postal_address" not in h and h["contact_details"] == "hidden (not granted)"
    page = ui.client.get("/lookup", params={"q": "山田太郎"}).text
    assert "5678" not in page and "丸の内" not in page and "contact details hidden" in page


def test_granted_user_sees_contact_details(ui):
    ui.who.update(name="operator-a", contact=True)
    h = ui.client.get("/api/lookup", params={"q": ui.hid}).json()["households"][0]
    assert h["phone"] == "03-1234-5678" and h["postal_address"].startswith("東京都")
    assert "03-1234-5678" in ui.client.get("/lookup", params={"q": ui.hid}).text


def test_short_prefix_lists_nobody(ui):
    ui.who.update(name="support-b", contact=False)
    for q in ("u", "ui", "山田"):
        res = ui.client.get("/api/lookup", params={"q": q}).json()
        assert res["households"] == [] and res["prefix"] is False and "3 characters" in res["note"], q


def test_prefix_searches_are_rate_limited(ui):
    ui.who.update(name="support-c", contact=False)
    codes = [ui.client.get("/api/lookup", params={"q": f"zz{i:03d}"}).status_code
             for i in range(ui.mod.PREFIX_SEARCHES_PER_MINUTE + 2)]
    assert codes[:ui.mod.PREFIX_SEARCHES_PER_MINUTE] == [200] * ui.mod.PREFIX_SEARCHES_PER_MINUTE
    assert codes[-1] == 429
    ui.who.update(name="support-d")      # per user
    assert ui.client.get("/api/lookup", params={"q": "zz999"}).status_code == 200


def test_level_pages_map_and_their_errors(ui):
    """The wave / domain / domains / map routes answer (with CSP), refuse bad filters with 400
    and unknown waves or domains with 404, never 500; before the first summary the level pages
    say they are computing instead of drawing every building empty."""
    from mailshift.store import progress as store

    for url in ("/map", "/domains", "/domain/x.example", "/wave/1"):
        r = ui.client.get(url)
        assert r.status_code == 200 and "id='computing'" in r.text and "building-map" not in r.text, url
    conn = psycopg2.connect(ui.mod._dsn)
    store.refresh_changed(conn)
    conn.close()
    r = ui.client.get("/map")
    assert r.status_code == 200 and "id='building-map'" in r.text and "href='building/" in r.text
    assert "frame-ancestors 'self'" in r.headers["content-security-policy"]
    doc = ui.client.get("/api/map").json()
    assert len(doc["cells"]) >= 1 and sum(doc["by_state"].values()) == len(doc["cells"])
    domain = doc["cells"][0]["domain"]
    assert ui.client.get("/map?system=" + doc["cells"][0]["source_system"]).status_code == 200
    for url, code in (("/map?wave=x", 400), ("/map?state=pending", 400), ("/api/map?wave=1;drop", 400),
                      ("/wave/99999", 404), ("/api/wave/99999", 404), ("/domain/nowhere.example", 404),
                      ("/domain/a%00b", 400), ("/map?system=%00", 400), ("/wave/abc", 422)):
        assert ui.client.get(url).status_code == code, url
    r = ui.client.get(f"/domain/{domain}")
    assert r.status_code == 200 and "id='domain-counts'" in r.text
    assert ui.client.get("/domains").status_code == 200
    assert f"data-domain='{domain}'" in ui.client.get("/domains").text
