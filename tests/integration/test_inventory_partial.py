"""Issue #15, item 4: a later (partial) inventory load keeps every invariant of a full load:
case-insensitive uniqueness over the whole inventory, a household stays in its building, a
building the inventory lacks is an error unless declared new, a building's spec changes only
through its own YAML and every change is listed; a file in another encoding is one line."""
from __future__ import annotations

import shutil
from pathlib import Path

import psycopg2
import pytest
import yaml

from mailshift.inventory import InventoryError, load_inventory
from support.mail import fresh_database

FIX = Path(__file__).parents[1] / "unit" / "fixtures" / "inventory" / "valid"
HEADER = "building_id,building_name,domain,household_id,contact_name,address,login,protocol,quota_mb\n"


@pytest.fixture
def conn(lab_config):
    with fresh_database(lab_config) as url:
        c = psycopg2.connect(url)
        yield c
        c.close()


def _partial(tmp_path: Path, name: str, rows: str, *, overrides=(), new_buildings=()) -> Path:
    """An export directory with src-a only: its systems.yaml entry and the given CSV rows."""
    d = tmp_path / name
    d.mkdir()
    doc = yaml.safe_load((FIX / "systems.yaml").read_text(encoding="utf-8"))
    doc["systems"] = [s for s in doc["systems"] if s["id"] == "src-a"]
    if new_buildings:
        doc["new_buildings"] = list(new_buildings)
    (d / "systems.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    (d / "src-a.csv").write_text(HEADER + rows, encoding="utf-8")
    for bid, text in overrides:
        (d / "buildings").mkdir(exist_ok=True)
        (d / "buildings" / f"{bid}.yaml").write_text(text, encoding="utf-8")
    return d


def _one_issue(conn, d) -> str:
    with pytest.raises(InventoryError) as ei:
        load_inventory(conn, d)
    assert len(ei.value.issues) == 1, ei.value.issues
    return str(ei.value.issues[0])


def _rows(conn, sql, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        out = cur.fetchall()
    conn.rollback()
    return out


B1 = "B10001,メゾン①号館,lab.mailshift.test"


def test_partial_second_load_keeps_invariants(conn, tmp_path):
    load_inventory(conn, FIX)          # the first, full load
    spec_before = _rows(conn, "SELECT spec FROM building WHERE id = 'B10001'")[0][0]
    assert spec_before["size_limit_bytes"] == 3145728
    count = _rows(conn, "SELECT count(*) FROM mailbox")

    # 1. a duplicate that differs only in case from a mailbox already loaded (from src-b)
    d = _partial(tmp_path, "dup", f"{B1},B10001-101,斎藤　拓也,SAITO.Takuya@lab.mailshift.test,"
                                  "tsz,imap,100\n")
    msg = _one_issue(conn, d)
    assert "duplicate address 'SAITO.Takuya@lab.mailshift.test' (case-insensitive)" in msg
    assert "'saito.takuya@lab.mailshift.test' is already in the inventory" in msg

    # 2. a mistyped building id: not a new building, an error naming the likely one
    d = _partial(tmp_path, "typo", "B10O01,メゾン①号館,lab.mailshift.test,B10O01-101,斎藤　拓也,"
                                   "new.one@lab.mailshift.test,new.one,imap,100\n")
    msg = _one_issue(conn, d)
    assert "unknown building 'B10O01'" in msg and "did you mean 'B10001'" in msg
    # ... unless declared new
    d2 = _partial(tmp_path, "declared", "B10099,新館,lab.mailshift.test,B10099-101,斎藤　拓也,"
                                        "new.two@lab.mailshift.test,new.two,imap,100\n",
                  new_buildings=["B10099"])
    load_inventory(conn, d2)
    assert _rows(conn, "SELECT id FROM building WHERE id = 'B10099'") == [("B10099",)]

    # 3. a household of building B10001 put under another building
    d = _partial(tmp_path, "wrong-hh", "B10099,新館,lab.mailshift.test,B10001-101,斎藤　拓也,"
                                       "new.three@lab.mailshift.test,new.three,imap,100\n")
    assert "household B10001-101 belongs to building B10001 in the inventory, not B10099" in \
        _one_issue(conn, d)
    assert _rows(conn, "SELECT count(*) FROM mailbox") == [(count[0][0] + 1,)]   # only new.two

    # 4. a partial load without the building's YAML keeps its spec, and says so
    src_a = (FIX / "src-a.csv").read_text(encoding="utf-8").split("\n", 1)[1]
    rep = load_inventory(conn, _partial(tmp_path, "no-yaml", src_a))
    assert _rows(conn, "SELECT spec FROM building WHERE id = 'B10001'")[0][0] == spec_before
    assert "B10001: spec kept as loaded (no buildings/B10001.yaml in this load)" in rep.spec_changes
    # its own YAML changes it, and every change is listed
    ov = (FIX / "buildings" / "B10001.yaml").read_text(encoding="utf-8").replace(
        "size_limit_bytes: 3145728", "size_limit_bytes: 5242880")
    rep = load_inventory(conn, _partial(tmp_path, "yaml", src_a, overrides=[("B10001", ov)]))
    assert rep.spec_changes == [
        "B10001: size_limit_bytes: 3145728 -> 5242880 (buildings/B10001.yaml)"]
    assert "size_limit_bytes: 3145728 -> 5242880" in str(rep)


def test_encoding_one_line(conn, tmp_path):
    d = tmp_path / "exp"
    shutil.copytree(FIX, d)
    text = (FIX / "src-b.csv").read_bytes().decode("cp932")
    (d / "src-b.csv").write_bytes(text.encode("utf-8"))       # re-saved as UTF-8
    with pytest.raises(InventoryError) as ei:
        load_inventory(conn, d)
    assert [str(i) for i in ei.value.issues] == [
        "src-b.csv:1: encoding: the file is in utf-8, not cp932: set `encoding: utf-8` for this "
        "system in systems.yaml or save the file as cp932"]
    # declared in systems.yaml: it loads
    doc = yaml.safe_load((d / "systems.yaml").read_text(encoding="utf-8"))
    doc["systems"][1]["encoding"] = "utf-8"
    (d / "systems.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    rep = load_inventory(conn, d)
    assert rep.counts["mailbox"]["inserted"] == 6
    # EUC-JP declared, file in EUC-JP
    (d / "src-b.csv").write_bytes(text.encode("euc-jp"))
    doc["systems"][1]["encoding"] = "euc-jp"
    (d / "systems.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert load_inventory(conn, d).changed == 0
