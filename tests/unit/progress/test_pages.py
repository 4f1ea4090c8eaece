"""The pages above a building (wave, domain, domains, the building map) and the shared state
vocabulary, rendered from dicts (no database, no Airflow)."""

from __future__ import annotations

import re

from mailshift.progress import html, pages
from mailshift.rules import states as rs


def _building(i, state, wave=1, system="alpha", exceptions=0, refused=0):
    return {"id": f"B{i:05d}", "name": f"bldg <{i}>", "wave_id": wave, "source_system": system,
            "domain": "d1.example.jp", "state": state, "mailboxes": 4, "mailboxes_copied": 4,
            "mailboxes_proven": 2, "mailboxes_waived": 1, "messages_refused": refused, "messages_altered": 0,
            "open_exceptions": exceptions, "bytes_copied": 1000}


def _group(state, **extra):
    g = {"status": state, "buildings": 2, "buildings_by_state": {s: 0 for s in rs.BUILDING_STATES},
         "mailboxes": 8, "mailboxes_copied": 8, "mailboxes_proven": 4, "unproven_mailboxes": 4,
         "mailboxes_waived": 2, "messages_copied": 100, "bytes_copied": 10_000, "messages_refused": 5,
         "messages_altered": 1, "open_exceptions": 2, **extra}
    g["buildings_by_state"][rs.Progress.COPIED] = 2
    return g


def test_rollup_follows_the_buildings():
    assert rs.rollup_state({}) == rs.Progress.PLANNED
    assert rs.rollup_state({rs.Progress.PLANNED: 3, rs.Progress.EMPTY: 1}) == rs.Progress.PLANNED
    assert rs.rollup_state({rs.Progress.PLANNED: 3, rs.PROVEN: 1}) == rs.Progress.COPYING      # started somewhere
    assert rs.rollup_state({rs.Progress.COPIED: 2, rs.PROVEN: 1}) == rs.Progress.COPIED
    assert rs.rollup_state({rs.PROVEN: 2, rs.Progress.CUT_OVER: 1}) == rs.PROVEN
    assert rs.rollup_state({rs.Progress.CUT_OVER: 4, rs.Progress.EMPTY: 1}) == rs.Progress.CUT_OVER     # a wave cut over says so
    assert set(rs.PROGRESS_STATES) < set(rs.BUILDING_STATES) and rs.PROVEN in rs.PROOF_STATES


def test_map_cells_colour_link_and_filter():
    cells = [_building(1, rs.PROVEN), _building(2, rs.Progress.COPYING, exceptions=2), _building(3, rs.Progress.PLANNED, wave=2)]
    m = {"filters": {"wave": 1, "system": "alpha", "state": None},
         "choices": {"waves": [{"id": 1, "name": "pilot"}, {"id": 2, "name": "w2"}], "systems": ["alpha", "beta"]},
         "by_state": {s: sum(1 for c in cells if c["state"] == s) for s in rs.BUILDING_STATES},
         "with_exceptions": 1, "cells": cells}
    out = pages.map_html(m, "/mailshift", "operator")
    found = re.findall(r"<a class='s-([a-z_]+)( x)?' href='building/(B\d+)'", out)
    assert found == [("proven", "", "B00001"), ("copying", " x", "B00002"), ("planned", "", "B00003")]
    assert "title='B00002 copying w1 alpha: proven 2/4, waived 1, exceptions 2'" in out
    assert "<option value='1' selected>" in out and "<option value='alpha' selected>" in out
    assert "id='map-count'>3 buildings" in out


def test_wave_page_shows_the_derived_state_counts_and_links():
    wp = {"wave": _group(rs.Progress.COPIED, wave=3, name="wave 3", stored_status="planned", kind="regular",
                         planned_start=None),
          "buildings": [_building(1, rs.Progress.COPIED, wave=3, refused=5)], "domains": ["d1.example.jp"]}
    runs = [{"dag_id": "mailshift_wave_3", "run_id": "manual__1", "state": "failed", "start_date": None,
             "end_date": None, "tasks": [{"task_id": "run_buildings", "map_index": 2, "state": "failed"}]}]
    out = pages.wave_html(wp, runs, "/mailshift", "operator")
    assert "id='wave-state'><span class='state s-copied'>copied</span>" in out
    assert "(planned as planned)" in out        # the stale stored label is named, not shown as the state
    assert "href='/dags/mailshift_wave_3/runs/manual__1'" in out
    assert "href='/dags/mailshift_wave_3/runs/manual__1/tasks/run_buildings/mapped/2'" in out
    assert "href='/mailshift/domain/d1.example.jp'" in out
    assert "data-count='messages_refused'>5</td>" in out


def test_counts_on_every_level():
    for out in (pages.domains_html([{**_group(rs.PROVEN), "domain": "d1.example.jp"}], "/mailshift"),
                pages.domain_html({"domain": {**_group(rs.PROVEN), "domain": "d1.example.jp", "domain_exceptions": 1},
                                   "buildings": [_building(1, rs.PROVEN)], "dns_changes": [], "waves": [1]},
                                  [], "/mailshift")):
        for key in ("messages_refused", "messages_altered", "mailboxes_waived", "open_exceptions"):
            assert f"data-count='{key}'" in out, key
    assert "<th>refused msgs</th>" in html.counts_head()


def test_nav_links_to_every_page_and_back_to_airflow():
    out = html.page("t", "", "/mailshift", None)
    for path in ("/mailshift/", "/mailshift/map", "/mailshift/domains", "/mailshift/lookup"):
        assert f'href="{path}"' in out
    assert 'target="_top" href="/"' in out
    assert html.airflow_root("/airflow/mailshift") == "/airflow/"
