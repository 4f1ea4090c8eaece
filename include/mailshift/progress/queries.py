"""Read side of the operator UI and its CLI mirrors (plain Python, no Airflow imports, no SQL).

Every function takes a psycopg2 connection and returns JSON-able dicts. The rows come from
`mailshift.store.progress`: the overview reads only the summary tables of migrations 0006/0007
(thousands of rows), never `message`; the building page and the lookup read per-mailbox rows
through primary keys / small indexes. A mailbox's proof state is always `rules.proof`'s
(proven / waived / not_proven): live on the building page and the lookup, as of the last
refresh in the summaries.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from pathlib import Path

from mailshift import settings
from mailshift.rules import states as rs
from mailshift.rules.proof import proof_states
from mailshift.store import progress as store
from mailshift.store.progress import BUILDING_STATES

THROUGHPUT_WINDOW_MIN = 15   # "throughput now": passes finished in the last 15 minutes
ETA_WINDOW_MIN = 60          # a wave's rate: its samples over the last hour
SAMPLE_HORIZON_DAYS = 30     # chart range
CHART_POINTS = 96
#: summed per wave, per domain and over all (store.progress.SUMMED: includes refused, altered,
#: waived and open exceptions, the counts every level shows)
_FIGURES = store.SUMMED

__all__ = ["BUILDING_STATES", "REPORT_COLUMNS", "building_map", "building_page", "building_report", "buildings",
           "domain_page", "domains", "lookup", "overview", "report_path", "reports_root", "wave_page"]


def _i(v) -> int:
    return int(v or 0)


# -- overview -----------------------------------------------------------------------------------
def _empty(**meta) -> dict:
    return {**meta, "buildings": 0, "buildings_by_state": {s: 0 for s in BUILDING_STATES},
            **{k: 0 for k in _FIGURES}}


def _wave(wave_id, name, stored_status=None, kind=None, planned_start=None, totals=None) -> dict:
    return _empty(wave=wave_id, name=name, stored_status=stored_status, kind=kind, planned_start=planned_start,
                  buildings_without_estimate=0, planned_totals=totals)


def _add(target: dict, cell: dict) -> None:
    target["buildings"] += cell["buildings"]
    target["buildings_by_state"][cell["state"]] += cell["buildings"]
    for k in _FIGURES:
        target[k] += _i(cell[k])


def _with_state(group: dict) -> dict:
    """The group's state from its buildings (rules.states.rollup_state), never a stored label."""
    group["status"] = rs.rollup_state(group["buildings_by_state"])
    group["unproven_mailboxes"] = group["mailboxes"] - group["mailboxes_proven"]
    return group


def _waves_and_totals(waves_meta: list[dict], cells: list[dict]) -> tuple[dict, dict]:
    """Per wave (and over all waves): buildings by state, the summed figures and the state."""
    waves = {w["id"]: _wave(w["id"], w["name"], w["status"], w["kind"], w["planned_start"], w["totals"])
             for w in waves_meta}
    totals = _empty()
    for c in cells:
        key = c["wave_id"]
        if key not in waves:
            waves[key] = _wave(key, "unassigned" if key is None else f"wave {key}")
        w = waves[key]
        w["buildings_without_estimate"] += _i(c["no_estimate"])
        _add(w, c)
        _add(totals, c)
    for w in waves.values():
        _with_state(w)
    return waves, _with_state(totals)


def _rate(pts: list[tuple], now) -> float | None:
    """Bytes/s of a wave over its samples of the last ETA_WINDOW_MIN (else its last two samples)."""
    if len(pts) < 2:
        return None
    recent = [p for p in pts if p[0] >= now - dt.timedelta(minutes=ETA_WINDOW_MIN)] or pts[-2:]
    first = next((p for p in pts if p[0] >= recent[0][0] - dt.timedelta(seconds=1)), pts[-2])
    if first is pts[-1]:
        first = pts[-2]
    secs = (pts[-1][0] - first[0]).total_seconds()
    return max(0.0, (pts[-1][2] - first[2]) / secs) if secs > 0 else None


def _eta(w: dict, pts: list[tuple], now) -> None:
    """Set the wave's rate, unproven count, ETA (with a note) and chart series."""
    rate = _rate(pts, now)
    remaining = max(0, w["bytes_total"] - w["bytes_copied"])
    w["bytes_per_s"] = rate
    w["unproven_mailboxes"] = w["mailboxes"] - w["mailboxes_proven"]
    if w["mailboxes"] and w["mailboxes_copied"] >= w["mailboxes"]:
        w["eta"], w["eta_note"] = None, "copied"
    elif remaining and rate:
        w["eta"] = now + dt.timedelta(seconds=remaining / rate)
        w["eta_note"] = f"{remaining / rate / 3600:.1f} h at the last hour's rate"
    elif w["mailboxes_copied"] or w["bytes_copied"]:
        w["eta"], w["eta_note"] = None, "stalled (no progress in the last samples)"
    else:
        w["eta"], w["eta_note"] = None, "not started"
    w["series"] = [{"at": p[0], "messages": p[1], "bytes": p[2]} for p in pts]


def _history(series: dict) -> list[dict]:
    """Overall throughput history: the sum of per-wave deltas between consecutive samples."""
    hist: dict = {}
    for pts in series.values():
        for a, b in zip(pts, pts[1:], strict=False):
            secs = (b[0] - a[0]).total_seconds()
            if secs > 0:
                hist[b[0]] = hist.get(b[0], 0.0) + max(0, b[2] - a[2]) / secs
    return [{"at": k, "bytes_per_s": v} for k, v in sorted(hist.items())]


def overview(conn) -> dict:
    """Waves and buildings by state, copied vs total, throughput, ETA per wave, unproven mailboxes,
    open exceptions, and the per-wave progress series for the charts."""
    r = store.overview_rows(conn, throughput_minutes=THROUGHPUT_WINDOW_MIN, recent_minutes=ETA_WINDOW_MIN,
                            horizon_days=SAMPLE_HORIZON_DAYS, chart_points=CHART_POINTS)
    now = r["now"]
    series: dict[int, list] = {}
    for wave_id, at, msgs, byts in r["samples"]:
        series.setdefault(wave_id, []).append((at, int(msgs), int(byts)))
    waves, totals = _waves_and_totals(r["waves"], r["cells"])
    for key, w in waves.items():
        _eta(w, series.get(key, []), now)
    totals["open_exceptions"] = r["open_exceptions"]     # also those raised on a domain as a whole
    totals["open_blocking_exceptions"] = r["open_blocking"]
    tp_msgs, tp_bytes, tp_passes = r["throughput"]
    window_s = THROUGHPUT_WINDOW_MIN * 60
    watermark, refreshed_at, stats = r["state"]
    return {
        "as_of": now, "summary_refreshed_at": refreshed_at, "summary_watermark": watermark, "refresh_stats": stats,
        "totals": totals,
        "throughput": {"window_minutes": THROUGHPUT_WINDOW_MIN, "messages": int(tp_msgs), "bytes": int(tp_bytes),
                       "passes": tp_passes, "bytes_per_s": int(tp_bytes) / window_s,
                       "messages_per_s": int(tp_msgs) / window_s, "running_passes": r["running_passes"],
                       "history": _history(series)},
        "waves": [waves[k] for k in sorted(waves, key=lambda x: (x is None, x or 0))],
    }


def buildings(conn, state: str | None = None) -> list[dict]:
    """Every building (or those in one overview state) with its summary figures."""
    return store.buildings(conn, state)


def summary_state(conn) -> dict:
    """{as_of, summary_refreshed_at}: the level pages show no figure before the first summary."""
    return store.summary_state(conn)


# -- waves, domains and the building map ---------------------------------------------------------
def _rollup(rows: list[dict], **meta) -> dict:
    """Buildings (store.building_facts rows) summed into one group with its derived state."""
    g = _empty(**meta)
    for b in rows:
        _add(g, {**b, "buildings": 1})
    return _with_state(g)


def wave_page(conn, wave_id: int) -> dict | None:
    """A wave: its state from its buildings, the counts, its buildings and its domains."""
    meta = store.wave_meta(conn, wave_id)
    if meta is None:
        return None
    rows = store.building_facts(conn, wave=wave_id)
    w = _rollup(rows, wave=meta["id"], name=meta["name"], stored_status=meta["status"], kind=meta["kind"],
                planned_start=meta["planned_start"], planned_totals=meta["totals"])
    return {"wave": w, "buildings": rows, "domains": sorted({b["domain"] for b in rows})}


def _domain_groups(cells: list[dict], exceptions: dict) -> dict[str, dict]:
    groups: dict[str, dict] = {}
    for c in cells:
        g = groups.setdefault(c["domain"], _empty(domain=c["domain"]))
        _add(g, c)
    for name, g in groups.items():
        n, blocking = exceptions.get(name, (0, 0))
        g["domain_exceptions"] = n          # raised on the domain as a whole (e.g. by the cutover)
        g["open_exceptions"] += n
        g["open_blocking_exceptions"] += blocking
        _with_state(g)
    return groups


def domains(conn) -> list[dict]:
    """Every domain with its state (from its buildings) and the counts."""
    groups = _domain_groups(store.domain_cells(conn), store.domain_extras(conn)["exceptions"])
    return [groups[k] for k in sorted(groups)]


def domain_page(conn, domain: str) -> dict | None:
    """A domain: state, counts, its buildings, its waves and its MX/TTL changes."""
    extras = store.domain_extras(conn, domain)
    groups = _domain_groups(store.domain_cells(conn, domain), extras["exceptions"])
    if domain not in groups:
        return None
    rows = store.building_facts(conn, domain=domain)
    return {"domain": groups[domain], "buildings": rows, "dns_changes": extras["dns_changes"],
            "waves": sorted({b["wave_id"] for b in rows if b["wave_id"] is not None})}


#: what one cell of the map carries (its colour, its link and its tooltip)
MAP_COLUMNS = ("id", "name", "wave_id", "source_system", "domain", "state", "mailboxes", "mailboxes_proven",
               "mailboxes_waived", "messages_refused", "messages_altered", "open_exceptions")


def building_map(conn, wave: int | None = None, system: str | None = None, state: str | None = None) -> dict:
    """Every building (or those of one wave / source system / state) as a map cell, the count
    per state and what the map can be filtered by; read from the summaries only."""
    cells = store.building_facts(conn, wave=wave, system=system, state=state, columns=MAP_COLUMNS)
    by_state = {s: 0 for s in BUILDING_STATES}
    for c in cells:
        by_state[c["state"]] += 1
    return {"filters": {"wave": wave, "system": system, "state": state}, "choices": store.map_filters(conn),
            "by_state": by_state, "with_exceptions": sum(1 for c in cells if c["open_exceptions"]),
            "cells": cells}


# -- a building ---------------------------------------------------------------------------------
def reports_root() -> Path:
    return settings.reports_dir()


def report_path(building_id: str) -> Path | None:
    p = reports_root() / building_id / "latest.html"
    return p if p.is_file() else None


def _with_proof_states(conn, mailboxes: list[dict]) -> None:
    """Set each mailbox's live proof state (rules.proof), its reasons and its latest proof."""
    found = {s.mailbox_id: s for s in proof_states(conn, mailbox_ids=[m["mailbox_id"] for m in mailboxes])} \
        if mailboxes else {}
    for m in mailboxes:
        ps = found[m["mailbox_id"]]
        m.update(proof_state=ps.state, proof_reasons=ps.reason_texts(), proof_kind=ps.kind,
                 proven_at=ps.proven_at, verify_run_id=ps.verify_run_id)


def building_page(conn, building_id: str) -> dict | None:
    """A building: its mailboxes with pass and proof state, exceptions and waivers, the report."""
    page = store.building_rows(conn, building_id)
    if page is None:
        return None
    _with_proof_states(conn, page["mailboxes"])
    rp = report_path(building_id)
    page["report"] = str(rp) if rp else None
    return page


REPORT_COLUMNS = ["building_id", "mailbox_id", "address", "household_id", "protocol", "messages_copied",
                  "bytes_copied", "messages_unsettled", "src_messages", "last_pass_kind", "last_pass_status",
                  "last_pass_finished", "proof_state", "proof_kind", "proven_at", "active_waivers",
                  "open_exceptions"]


def building_report(conn, building_id: str) -> dict | None:
    """The operator report of one building: a summary and one row per mailbox (CSV/JSON)."""
    page = building_page(conn, building_id)
    if page is None:
        return None
    rows = []
    for m in page["mailboxes"]:
        rows.append({"building_id": building_id, "mailbox_id": m["mailbox_id"], "address": m["address"],
                     "household_id": m["household_id"], "protocol": m["protocol"],
                     "messages_copied": _i(m["n_copied"]), "bytes_copied": _i(m["bytes_copied"]),
                     "messages_unsettled": _i(m["n_intent"]) + _i(m["n_refused"]) + _i(m["n_failed"]),
                     "src_messages": m["src_messages"], "last_pass_kind": m["last_pass_kind"],
                     "last_pass_status": m["last_pass_status"], "last_pass_finished": m["last_pass_finished"],
                     "proof_state": m["proof_state"], "proof_reasons": m["proof_reasons"],
                     "proof_kind": m["proof_kind"], "proven_at": m["proven_at"],
                     "active_waivers": m["active_waivers"], "open_exceptions": m["open_exceptions"]})
    return {"building": page["building"], "mailboxes": rows,
            "exceptions_open": sum(1 for e in page["exceptions"] if e["status"] in ("open", "acknowledged")),
            "waivers_active": sum(1 for w in page["waivers"] if w["revoked_at"] is None),
            "report": page["report"]}


# -- support-desk lookup ------------------------------------------------------------------------
MIN_PREFIX = 3               # a prefix search needs at least this many characters
MIN_PHONE_DIGITS = 6
#: household fields only a user granted contact details sees (phone, postal address)
CONTACT_FIELDS = ("phone", "postal_address")


def normalise(text: str) -> str:
    """A contact name or postal address as the look-up compares it (store.progress.NORM_NAME):
    NFKC (full-width letters and digits become ASCII), no white space (also U+3000), lower case."""
    return re.sub(r"\s", "", unicodedata.normalize("NFKC", text)).lower()


def _phone_digits(q: str) -> str | None:
    digits = re.sub(r"\D", "", unicodedata.normalize("NFKC", q))
    return digits if re.fullmatch(r"[\d\s()+\-.]+", unicodedata.normalize("NFKC", q)) and \
        len(digits) >= MIN_PHONE_DIGITS else None


def lookup(conn, query: str, limit: int = 20, *, contact_details: bool = False) -> dict:
    """Support-desk lookup by household ID, mailbox address, contact name (Japanese included) or
    phone number (exactly), or the beginning (at least MIN_PREFIX characters) of an address, a
    contact name or a postal address: the household, its mailboxes (migrated or not, when, proof
    state) and the notices sent. Phone and postal address only with `contact_details`."""
    q = (query or "").strip()
    if not q:
        return {"query": q, "households": [], "prefix": False}
    norm = normalise(q)
    prefix = len(norm) >= MIN_PREFIX
    households = []
    for hid in sorted(store.find_households(conn, q, limit, norm=norm or None, digits=_phone_digits(q),
                                            prefix=prefix)):
        h = store.household_rows(conn, hid)
        if h is None:
            continue
        if not contact_details:
            for k in CONTACT_FIELDS:
                h.pop(k, None)
        h["contact_details"] = "shown" if contact_details else "hidden (not granted)"
        _with_proof_states(conn, h["mailboxes"])
        for mb in h["mailboxes"]:
            mb["migrated"] = bool(mb["first_copied_at"])
        households.append(h)
    out = {"query": q, "households": households, "prefix": prefix}
    if not prefix:
        out["note"] = f"exact matches only: a search by the beginning needs at least {MIN_PREFIX} characters"
    return out
