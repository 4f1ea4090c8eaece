"""Pure rendering of the operator UI: SVG charts and pages from query dicts (no database)."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from mailshift.progress import charts, html

T0 = dt.datetime(2027, 1, 11, 9, 0, tzinfo=dt.UTC)


def _wave(n, copied, total, series):
    return {"wave": n, "name": f"wave {n}", "status": "copying", "stored_status": "planned", "kind": "regular",
            "planned_start": None,
            "buildings": 2, "buildings_by_state": {"planned": 1, "copying": 1, "copied": 0, "proven": 0,
                                                   "cut_over": 0, "empty": 0},
            "messages_refused": 3, "messages_altered": 0, "open_exceptions": 1, "open_blocking_exceptions": 1,
            "mailboxes": 10, "mailboxes_copied": 4, "mailboxes_proven": 3, "mailboxes_waived": 1, "mailboxes_failed": 1,
            "mailboxes_running": 1, "messages_copied": 400, "messages_total": 1000, "bytes_copied": copied,
            "bytes_total": total, "messages_unsettled": 2, "buildings_without_estimate": 0, "planned_totals": None,
            "bytes_per_s": 1500.0, "unproven_mailboxes": 7, "eta": T0 + dt.timedelta(hours=2),
            "eta_note": "2.0 h at the last hour's rate", "series": series}


def overview_fixture():
    series = [{"at": T0 + dt.timedelta(minutes=10 * i), "messages": 100 * i, "bytes": 10_000 * i} for i in range(5)]
    w = _wave(1, 40_000, 100_000, series)
    return {"as_of": T0, "summary_refreshed_at": T0, "summary_watermark": T0, "refresh_stats": {},
            "totals": {**{k: w[k] for k in ("buildings", "mailboxes", "mailboxes_copied", "mailboxes_proven", "mailboxes_waived",
                                             "mailboxes_failed", "mailboxes_running", "messages_copied",
                                             "messages_total", "bytes_copied", "bytes_total",
                                             "messages_unsettled", "unproven_mailboxes", "messages_refused",
                                             "messages_altered", "status")},
                       "buildings_by_state": dict(w["buildings_by_state"]), "open_exceptions": 3,
                       "open_blocking_exceptions": 2},
            "throughput": {"window_minutes": 15, "messages": 90, "bytes": 900_000, "passes": 3,
                           "bytes_per_s": 1000.0, "messages_per_s": 0.1, "running_passes": 1,
                           "history": [{"at": s["at"], "bytes_per_s": 16.7} for s in series[1:]]},
            "waves": [w]}


def test_line_chart_is_valid_svg_with_one_polyline_per_series():
    svg = charts.line_chart([("a", [(0, 0), (10, 50)]), ("b", [(0, 10), (10, 100)])], title="t <&>",
                            y_label="%", y_max=100)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    assert "t &lt;&amp;&gt;" in svg


def test_empty_chart_says_so():
    assert "no data yet" in charts.line_chart([], title="x", y_label="y")


def test_overview_page_has_figures_charts_and_escapes():
    ov = overview_fixture()
    ov["waves"][0]["name"] = "<script>x</script>"
    page = html.overview_html(ov, "/mailshift", "operator")
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert 'id="chart-progress"' in page and 'id="chart-throughput"' in page
    assert "400 / 1,000" in page            # messages copied / total
    assert "40.0 %" in page                 # bytes of the wave
    assert "signed in as operator" in page


def test_human_bytes():
    assert html.human_bytes(0) == "0 B"
    assert html.human_bytes(1_500_000) == "1.5 MB"
    assert html.human_bytes(2.5e12) == "2.5 TB"


def test_lookup_page_without_match():
    page = html.lookup_html({"query": "x@y", "households": []}, "/mailshift")
    assert "No household matches" in page


def test_building_page_shows_the_proof_state_and_why():
    b = {"id": "B1", "name": "<b>", "domain": "d.example", "source_system": "src-a", "wave_id": 1,
         "state": "copied", "messages_refused": 0, "messages_altered": 2, "open_exceptions": 0, "mailboxes": 2, "mailboxes_copied": 2, "mailboxes_proven": 1, "mailboxes_waived": 1,
         "mailboxes_failed": 0, "messages_copied": 10, "bytes_copied": 1000, "messages_unsettled": 0}

    def mailbox(mid, state, reasons):
        return {"mailbox_id": mid, "address": f"u{mid}@d.example", "household_id": "H1", "protocol": "imap",
                "n_copied": 5, "bytes_copied": 500, "n_intent": 0, "n_refused": 0, "n_failed": 0,
                "last_pass_kind": "prestage", "last_pass_status": "finished", "last_pass_finished": T0,
                "proof_state": state, "proof_reasons": reasons, "proven_at": T0, "active_waivers": 0,
                "open_exceptions": 0}

    page = html.building_html({"building": b, "report": None, "exceptions": [], "waivers": [],
                               "mailboxes": [mailbox(1, "waived", []),
                                             mailbox(2, "not_proven", ["never verified <x>"])]},
                              None, "/mailshift")
    assert "proven 1 (1 by waivers)" in page
    assert "<td class='proof ok' title=''>waived</td>" in page
    assert "<td class='proof warn' title='never verified &lt;x&gt;'>not_proven</td>" in page
    assert "proven_with_waivers" not in page and "&lt;b&gt;" in page


def test_no_figure_before_the_first_summary():
    ov = overview_fixture()
    ov["summary_refreshed_at"] = None
    out = html.overview_html(ov, "/mailshift")
    assert "id='computing'" in out and "card-mailboxes" not in out and "summaries refreshed" not in out


def test_no_throughput_while_no_pass_runs():
    ov = overview_fixture()
    ov["throughput"]["running_passes"] = 0
    out = html.overview_html(ov, "/mailshift")
    assert "no pass running" in out and "/s</b>" not in out.split("card-throughput")[1].split("</div>")[0]
