"""DAG docs link to the mailshift pages (issue #16): the building, wave, cutover and TTL DAGs
each name their own page under the configured base URL, and the plugin's DAG-id helpers name
the DAGs the builders really make."""

from __future__ import annotations

from types import SimpleNamespace

from mailshift.airflow import factory
from mailshift.airflow.building import build_building_dag
from mailshift.airflow.cutover import build_cutover_dag, build_ttl_dag
from mailshift.airflow.wave import build_wave_dag


def test_each_dag_links_to_its_page(monkeypatch):
    monkeypatch.setenv("MAILSHIFT_UI_BASE_URL", "https://airflow.isp.example/")
    root = "https://airflow.isp.example/mailshift/"
    building = SimpleNamespace(id="B-7.x", name="n", domain="d.example.jp", source_system="alpha", wave=2,
                               pool="src_alpha",
                               mailboxes=[SimpleNamespace(id=i, address=f"u{i}@d.example.jp") for i in (1, 2)])
    wave = build_wave_dag({"number": 3, "name": "wave 3", "buildings": 1})
    cut, ttl = build_cutover_dag("d.example.jp", ["B1"]), build_ttl_dag("d.example.jp")
    assert wave.dag_id == factory.wave_dag_id(3)
    assert [cut.dag_id, ttl.dag_id] == factory.cutover_dag_ids("d.example.jp")
    expected = {build_building_dag(building).dag_id: f"({root}building/B-7.x)",
                wave.dag_id: f"({root}wave/3)", cut.dag_id: f"({root}domain/d.example.jp)",
                ttl.dag_id: f"({root}domain/d.example.jp)"}
    dags = factory.with_ui_links({d.dag_id: d for d in (build_building_dag(building), wave, cut, ttl)})
    for dag_id, link in expected.items():
        doc = dags[dag_id].doc_md
        assert link in doc and f"]({root})" in doc and f"]({root}map)" in doc, (dag_id, doc[-300:])
        assert "/tmp" not in doc and "file://" not in doc


def test_without_a_base_url_links_are_host_relative(monkeypatch):
    monkeypatch.delenv("MAILSHIFT_UI_BASE_URL", raising=False)
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    dag = factory.with_ui_links(build_wave_dag({"number": 1}))
    assert "](/mailshift/wave/1)" in dag.doc_md
