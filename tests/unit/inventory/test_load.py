"""Inventory parsing/validation (no database): fixtures, error format, round-trip."""
from __future__ import annotations

from pathlib import Path

import pytest

from mailshift.inventory import InventoryError, exports, parse_exports, spec

FIX = Path(__file__).parents[1] / "fixtures" / "inventory"
INVALID = sorted(p for p in (FIX / "invalid").iterdir() if p.is_dir())


def test_valid_fixture_parses():
    p = parse_exports(FIX / "valid")
    assert len(p.mailboxes) == 6
    assert len(p.households) == 4
    assert set(p.buildings) == {"B10001", "B10008"}
    assert {s["id"] for s in p.systems} == {"src-a", "src-b"}
    assert p.domains == {"lab.mailshift.test": 3600, "second.mailshift.test": 3600}
    b = p.buildings["B10001"]
    assert b["name"] == "メゾン①号館"  # cp932-only character survived (alpha is UTF-8)
    assert b["spec"]["folder_map"] == {"Junk": "Spam", "仕事/請求書": "Invoices"}
    # override {email_rounds: 3, letter: true} over the default policy (6 rounds, letter, call)
    assert b["spec"]["notice_policy"] == {"email_rounds": 3, "letter": True, "call": True, "lead_days": 14}
    assert b["spec"]["source_system"] == "src-a" and b["pinned_wave"] is None
    b2 = p.buildings["B10008"]
    assert b2["spec"]["uidl_strategy"] == "x-uidl-header" and b2["pinned_wave"] == 1
    by_addr = {m["address"]: m for m in p.mailboxes}
    # non-RFC addresses are legacy data, not errors; dest_login is the lowercased address
    assert "han..akom@lab.mailshift.test" in by_addr
    assert "kenta.1989.@second.mailshift.test" in by_addr
    assert by_addr["Saito.kenta@lab.mailshift.test"]["dest_login"] == "saito.kenta@lab.mailshift.test"
    assert by_addr["kenta.1989.@second.mailshift.test"]["source_login"] == "b100292"
    assert by_addr["kenta.1989.@second.mailshift.test"]["protocol"] == "pop3"
    assert by_addr["saito.takuya@lab.mailshift.test"]["quota_bytes"] == 5000 * 1024 * 1024
    assert p.households["B10008-102"]["phone"] == "03-6797-2440"
    assert p.households["B10001-101"]["phone"] is None  # alpha exports no phone


@pytest.mark.parametrize("case", INVALID, ids=[p.name for p in INVALID])
def test_invalid_fixture(case: Path):
    expected = [x for x in (case / "expected.txt").read_text(encoding="utf-8").splitlines() if x.strip()]
    with pytest.raises(InventoryError) as ei:
        parse_exports(case)
    msg = str(ei.value)
    for e in expected:
        assert e in msg, f"{case.name}: {e!r} not in:\n{msg}"
    # every listed error has the form file:line: field: problem
    for issue in ei.value.issues:
        s = str(issue)
        file, line, rest = s.split(":", 2)
        assert file and line.isdigit() and ": " in rest.strip(), s


def test_every_error_listed_at_once(tmp_path):
    import shutil

    d = tmp_path / "x"
    shutil.copytree(FIX / "valid", d)
    a = (d / "src-a.csv").read_text(encoding="utf-8").splitlines()
    a[1] = a[1].replace(",imap,", ",smtp,")
    a[2] = a[2].replace(",5000", ",lots")
    (d / "src-a.csv").write_text("\n".join(a) + "\n", encoding="utf-8")
    (d / "buildings" / "B10001.yaml").write_text("bogus: 1\n", encoding="utf-8")
    with pytest.raises(InventoryError) as ei:
        parse_exports(d)
    assert len(ei.value.issues) == 3
    s = str(ei.value)
    assert "src-a.csv:2: protocol" in s and "src-a.csv:3: quota_mb" in s
    assert "buildings/B10001.yaml:1: bogus: unknown key [building B10001]" in s


def test_one_invalid_fixture_per_error_kind():
    # each fixture expects a distinct message
    firsts = [(p / "expected.txt").read_text(encoding="utf-8").splitlines()[0] for p in INVALID]
    assert len(set(firsts)) == len(firsts) >= 25


def test_spec_defaults_and_merge():
    eff = spec.resolve({"notice_policy": {"call": False}}, {"uidl_strategy": "x-uidl-header"})
    assert eff["notice_policy"] == {"email_rounds": 6, "letter": True, "call": False, "lead_days": 14}
    assert eff["uidl_strategy"] == "x-uidl-header"
    assert eff["size_limit_bytes"] == 25 * 1024 * 1024
    assert spec.DEFAULT_SPEC["notice_policy"]["call"] is True  # not mutated
    assert spec.validate_partial({"size_limit_bytes": 0}, "f.yaml", None)


def test_beta_quirks():
    issues = []
    data = ('"ユーザID","メールアドレス","プロトコル","容量(MB)","契約者名","電話番号","住所","部屋番号","物件コード","物件名","ドメイン"\r\n'
            '"b1","a@x.test","imap","１０００","山田　花子","","","201","B1","ハイツ①","x.test"\r\n'
            '"b2","b@x.test","Pop3","無制限","山田　花子","","","201","B1","ハイツ①","x.test"\r\n').encode("cp932")
    rows = exports.parse("beta", data, "b.csv", issues)
    assert not issues
    assert rows[0].quota_mb == 1000 and rows[0].household_id == "B1-201" and rows[0].protocol == "imap"
    assert rows[1].quota_mb is None and rows[1].protocol == "pop3" and rows[1].line == 3


def test_alpha_bom_and_crlf():
    issues = []
    data = ("\ufeffbuilding_id,building_name,domain,household_id,contact_name,address,login,protocol,quota_mb\r\n"
            "B1,N,x.test,B1-1,C,a@x.test,a,IMAP,\r\n").encode("utf-8")
    rows = exports.parse("alpha", data, "a.csv", issues)
    assert not issues and rows[0].protocol == "imap" and rows[0].quota_mb is None


def test_generated_exports_round_trip(tmp_path):
    from lab import corpus

    for profile in ("test", "demo"):
        inv = corpus.generate_inventory(7, profile)
        d = corpus.write_exports(inv, tmp_path / profile)
        p = parse_exports(d)
        assert len(p.mailboxes) == len(inv.mailboxes)
        by_addr = {m["address"]: m for m in p.mailboxes}
        for mb in inv.mailboxes:
            got = by_addr[mb.address]
            assert got["source_login"] == mb.login
            assert got["dest_login"] == mb.address.lower()
            assert got["protocol"] == mb.protocol
            assert got["household_id"] == mb.household_id
            assert got["quota_bytes"] == (None if mb.quota_mb is None else mb.quota_mb * 1024 * 1024)
        hh = {h.id: h for h in inv.households}
        for hid, h in p.households.items():
            assert h["contact_name"] == hh[hid].contact_name
            assert h["building_id"] == hh[hid].building_id
        for b in inv.buildings:
            got = p.buildings[b.id]
            assert (got["name"], got["domain"], got["source_system"]) == (b.name, b.domain, b.source_system)
            for k, v in (b.spec_override or {}).items():
                assert got["spec"][k] == v or isinstance(v, dict)
