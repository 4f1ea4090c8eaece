"""The lab's Airflow environment gives alerts real http links (issue #16): the Airflow run and
the building's mailshift page, both under the lab's api-server, never a path on a worker."""

from __future__ import annotations

from types import SimpleNamespace

from lab.airflow_home import airflow_env, api_port


def test_alert_links_are_http_under_the_lab_api_server(lab_config, monkeypatch):
    from mailshift.airflow import callbacks

    env = airflow_env(lab_config)
    base = f"http://127.0.0.1:{api_port(lab_config)}"
    assert env["AIRFLOW__API__BASE_URL"] == base
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(base)
    monkeypatch.delenv("MAILSHIFT_UI_BASE_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", env["AIRFLOW__API__BASE_URL"])
    assert callbacks.ui_base_url() == base
    assert callbacks.page_url("B 1") == f"{base}/mailshift/building/B%201"
    ti = SimpleNamespace(dag_id="mailshift_wave_1", run_id="manual__1")
    assert callbacks.page_links(ti, "wave/1") == (f"{base}/dags/mailshift_wave_1/runs/manual__1",
                                                  f"{base}/mailshift/wave/1")
    # another address for the pages (e.g. behind a proxy): only the pages' links follow it
    monkeypatch.setenv("MAILSHIFT_UI_BASE_URL", "https://migration.example.net/")
    assert callbacks.page_links(ti, "wave/1") == (f"{base}/dags/mailshift_wave_1/runs/manual__1",
                                                  "https://migration.example.net/mailshift/wave/1")
