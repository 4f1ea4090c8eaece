"""The operator UI in a real browser against a real Airflow api-server with the plugin.

Headless Chromium (Debian's /usr/bin/chromium + /usr/bin/chromedriver) logs in through
Airflow's own login page (simple auth manager), opens the overview, a building and a
household lookup, compares the figures with the ledger of real migrated lab data
(tests/integration/test_progress.build_lab_data) and saves screenshots to
$MAILSHIFT_ARTIFACTS_DIR (default .lab/artifacts/ui). Anonymous requests are refused.

Runs its own Airflow (api-server + dag-processor) with metadata DB $MAILSHIFT_AIRFLOW_DB and
port $MAILSHIFT_AIRFLOW_API_PORT, so set those (e.g. airflow_ui / 14391) when another Airflow
of the lab is running.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from mailshift.rules import states

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]


def _http(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def ui(lab_config, tmp_path_factory):
    from integration.test_progress import build_lab_data, ledger_truth

    from lab import airflow_services
    from lab.airflow_home import airflow_env, ensure_metadata_db
    from lab.connections import airflow_conn_env
    from mailshift.store import progress as store
    from support.mail import fresh_database

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver packages")
    cfg = lab_config
    root = tmp_path_factory.mktemp("ui")
    saved = dict(os.environ)
    os.environ.update(airflow_conn_env(cfg))
    try:
        with fresh_database(cfg) as dsn:
            facts = build_lab_data(cfg, dsn, root)
            conn = psycopg2.connect(dsn)
            store.refresh_changed(conn)
            ensure_metadata_db(cfg)
            env = airflow_env(cfg)
            db = urlsplit(dsn)
            env["AIRFLOW_CONN_MAILSHIFT_DB"] = json.dumps(
                {"conn_type": "postgres", "host": db.hostname, "port": db.port, "login": db.username,
                 "password": db.password, "schema": db.path.lstrip("/")})
            env["MAILSHIFT_DB_URL"] = dsn
            env["MAILSHIFT_SNAPSHOT_DIR"] = str(root / "snapshot")
            env["MAILSHIFT_REPORTS_DIR"] = str(facts["reports"])
            env["MAILSHIFT_PROGRESS_REFRESH_SECONDS"] = "5"
            env["AIRFLOW__CORE__LAZY_LOAD_PLUGINS"] = "False"
            # the UI needs the api-server; the dag-processor parses the building DAGs so that a
            # triggered (never scheduled) run shows on the building page
            old = airflow_services.COMPONENTS
            airflow_services.COMPONENTS = tuple(c for c in old if c[0] in ("api-server", "dag-processor"))
            af = airflow_services.AirflowServices(cfg, env, log_dir=root / "airflow-logs")
            try:
                af.start()
                dag_id = f"mailshift_building_{facts['pilot']}"
                run_id = None
                try:
                    af.wait_for_dag(dag_id, timeout=240)
                    run = af.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None,
                                                                    "dag_run_id": "ui_test_run"})
                    run_id = run.get("dag_run_id")
                except Exception as exc:  # noqa: BLE001 - the page must still work without runs
                    print(f"no DAG run for the building page: {exc}")
                yield {"cfg": cfg, "dsn": dsn, "conn": conn, "facts": facts, "af": af, "base": af.base,
                       "truth": ledger_truth(conn), "run_id": run_id, "dag_id": dag_id, "root": root}
            finally:
                af.stop()
                airflow_services.COMPONENTS = old
                conn.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def artifacts():
    d = Path(os.environ.get("MAILSHIFT_ARTIFACTS_DIR") or REPO / ".lab" / "artifacts") / "ui"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser(ui):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mailshift-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(drv, cond, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; at {drv.current_url}")


def test_anonymous_is_refused(ui):
    base = ui["base"]
    mid, address, hid, bid = ui["facts"]["exception_mailbox"]
    for path in ("/mailshift/api/overview", f"/mailshift/api/lookup?q={hid}", f"/mailshift/api/building/{bid}"):
        status, _, body = _http(base + path)
        assert status == 401, (path, status)
        assert address.encode() not in body and hid.encode() not in body
    for path in ("/mailshift/", f"/mailshift/lookup?q={hid}", f"/mailshift/building/{bid}",
                 f"/mailshift/report/{ui['facts']['pilot']}"):
        status, headers, body = _http(base + path)
        assert status in (302, 307, 401), (path, status)
        assert "/auth/login" in headers.get("location", headers.get("Location", "")), headers
        assert address.encode() not in body and hid.encode() not in body
    status, _, _ = _http(base + "/mailshift/api/overview", {"Authorization": "Bearer not-a-jwt"})
    assert status == 401
    status, _, _ = _http(base + "/mailshift/api/overview", {"Cookie": "_token=forged.jwt.value"})
    assert status == 401
    # a logged-in user's token works for the REST clients (both roles)
    for user in ("operator", "support"):
        from lab.airflow_home import ui_password

        body = json.dumps({"username": user, "password": ui_password(ui["cfg"], user)}).encode()
        req = urllib.request.Request(base + "/auth/token", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            token = json.loads(r.read())["access_token"]
        status, _, body = _http(base + f"/mailshift/api/lookup?q={hid}", {"Authorization": f"Bearer {token}"})
        assert status == 200 and address.encode() in body


def test_browser_login_overview_building_lookup(ui, browser, artifacts):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from lab.airflow_home import ui_password

    drv, base, truth, facts = browser, ui["base"], ui["truth"], ui["facts"]
    # 1. anonymous: the plugin page sends the browser to Airflow's login page
    drv.get(base + "/mailshift/")
    _wait(drv, lambda: "/auth/login" in drv.current_url, what="the login page")
    _wait(drv, lambda: drv.find_elements(By.CSS_SELECTOR, "input[type=password]"), what="the login form")
    drv.save_screenshot(str(artifacts / "01-login.png"))
    assert "Migration progress" not in drv.page_source
    # 2. log in as the support desk user (viewer role)
    user_box = drv.find_element(By.CSS_SELECTOR, "input[name=username], input[type=text]")
    user_box.send_keys("support")
    pw = drv.find_element(By.CSS_SELECTOR, "input[type=password]")
    pw.send_keys(ui_password(ui["cfg"], "support"))
    pw.send_keys(Keys.ENTER)
    _wait(drv, lambda: "_token" in {c["name"] for c in drv.get_cookies()}, timeout=60, what="the JWT cookie")
    # 3. the nav entry of the Airflow UI (external view) exists
    status, _, body = _http(base + "/api/v2/plugins", {"Cookie": f"_token={drv.get_cookie('_token')['value']}"})
    assert status == 200 and b"Migration progress" in body
    # 4. overview
    drv.get(base + "/mailshift/")
    _wait(drv, lambda: drv.find_elements(By.ID, "waves"), what="the overview")
    assert "signed in as support" in drv.page_source
    cards = {c.get_attribute("id"): c.text for c in drv.find_elements(By.CSS_SELECTOR, ".card")}
    assert f"{truth['messages']:,}" in cards["card-messages"], cards
    assert f"{truth['mailboxes']:,}" in cards["card-mailboxes"]
    assert cards["card-unproven"].splitlines()[1] == f"{truth['unproven']:,}", cards
    assert cards["card-exceptions"].splitlines()[1] == f"{truth['open_exceptions']:,}", cards
    assert drv.find_elements(By.CSS_SELECTOR, "#chart-progress polyline"), "progress chart has a line"
    drv.save_screenshot(str(artifacts / "02-overview.png"))
    # 5. a building (the verified pilot): mailboxes with proof state, report link, DAG run
    drv.get(base + f"/mailshift/building/{facts['pilot']}")
    _wait(drv, lambda: drv.find_elements(By.ID, "mailboxes"), what="the building page")
    rows = drv.find_elements(By.CSS_SELECTOR, "#mailboxes tr[data-mailbox]")
    expected = [m for m in facts["mailboxes"] if m[3] == facts["pilot"]]
    assert len(rows) == len(expected)
    with ui["conn"], ui["conn"].cursor() as cur:
        cur.execute("SELECT m.address, count(*) FROM message g JOIN mailbox m ON m.id = g.mailbox_id"
                    " JOIN household h ON h.id = m.household_id WHERE h.building_id = %s AND g.state = 1"
                    " GROUP BY 1", (facts["pilot"],))
        copied = dict(cur.fetchall())
    for r in rows:
        cells = [c.text for c in r.find_elements(By.TAG_NAME, "td")]
        assert cells[3].replace(",", "") == str(copied.get(cells[0], 0)), cells
        assert cells[8] in states.PROOF_OK, cells
    if ui["run_id"]:
        _wait(drv, lambda: drv.find_elements(By.ID, "dag-runs"), timeout=5, what="the DAG runs table")
        assert ui["run_id"] in drv.find_element(By.ID, "dag-runs").text
    drv.save_screenshot(str(artifacts / "03-building.png"))
    drv.find_element(By.ID, "proof-report").click()
    _wait(drv, lambda: "/mailshift/report/" in drv.current_url and "Verdict" in drv.page_source,
          what="the proof report")
    drv.save_screenshot(str(artifacts / "04-proof-report.png"))
    # 6. household lookup by address (support desk)
    mid, address, hid, bid = facts["exception_mailbox"]
    drv.get(base + "/mailshift/lookup")
    box = drv.find_element(By.ID, "q")
    box.send_keys(address)
    box.send_keys(Keys.ENTER)
    _wait(drv, lambda: drv.find_elements(By.CSS_SELECTOR, "section.household"), what="the lookup result")
    section = drv.find_element(By.CSS_SELECTOR, "section.household")
    assert section.get_attribute("data-household") == hid
    row = section.find_element(By.CSS_SELECTOR, f"tr[data-address='{address}']")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[2] == "yes" and cells[7] == "not_proven" and cells[10] == "1", cells
    assert "email_round_1" in section.text and "sent" in section.text
    drv.save_screenshot(str(artifacts / "05-lookup.png"))
    # 7. the page inside the Airflow UI (the nav entry's iframe route)
    drv.get(base + "/mailshift")
    drv.get(base + "/plugin/mailshift")
    time.sleep(3)
    drv.save_screenshot(str(artifacts / "06-airflow-nav.png"))
