"""Address audit over an inventory with each kind of bad address."""
import datetime as dt

from mailshift.customers.addresses import MailboxAddress, audit_addresses, check_local, compliant_local

D = "bldg.example.jp"
INV = [
    (1, f"taro.yamada@{D}"),                 # fine
    (2, f"hanako..takahashi@{D}"),           # consecutive dots
    (3, f"takahashi.misaki.@{D}"),           # dot before @
    (4, f".ichiro@{D}"),                     # leading dot
    (5, f'"john smith"@{D}'),                # quoted
    (6, f"sato(home)@{D}"),                  # forbidden characters
    (7, f"{'a' * 65}@{D}"),                  # over-long local part
    (8, f"Taro.Yamada@{D}"),                 # duplicate of 1 after case folding
    (9, f"john-smith@{D}"),                  # fine, but takes the name 5 would get
]


def run():
    return audit_addresses([MailboxAddress(i, a, f"H{i}", "B1", a.split("@")[0]) for i, a in INV],
                           today=dt.date(2026, 1, 10), alias_days=180)


def test_exact_findings():
    res = run()
    got = sorted((f.mailbox_id, f.kind) for f in res.findings)
    assert got == [(2, "consecutive_dots"), (3, "trailing_dot"), (4, "leading_dot"),
                   (5, "quoted"), (6, "forbidden_chars"), (7, "local_too_long"),
                   (8, "duplicate_casefold")]
    assert res.checked == 9


def test_proposals_and_renames():
    res = run()
    ren = {r.mailbox_id: r for r in res.renames}
    assert set(ren) == {2, 3, 4, 5, 6, 7, 8}
    assert ren[2].new_address == f"hanako.takahashi@{D}"
    assert ren[3].new_address == f"takahashi.misaki@{D}"
    assert ren[4].new_address == f"ichiro@{D}"
    assert ren[5].new_address == f"john-smith-2@{D}"      # john-smith is taken by mailbox 9
    assert ren[6].new_address == f"sato-home@{D}"
    assert ren[7].new_address == f"{'a' * 64}@{D}"
    assert ren[8].new_address == f"taro.yamada-2@{D}"
    assert ren[2].old_address == f"hanako..takahashi@{D}"
    assert all(r.alias_until == dt.date(2026, 7, 9) for r in ren.values())
    news = [r.new_address.casefold() for r in ren.values()]
    assert len(set(news)) == len(news)
    assert all(not check_local(n.split("@")[0]) for n in news)


def test_deterministic_whatever_order():
    a = run()
    b = audit_addresses(reversed([MailboxAddress(i, x, f"H{i}", "B1", x.split("@")[0]) for i, x in INV]),
                        today=dt.date(2026, 1, 10))
    assert [(r.mailbox_id, r.new_address) for r in a.renames] == \
        [(r.mailbox_id, r.new_address) for r in b.renames]


def test_compliant_local_edge_cases():
    assert compliant_local('"..."', "fallback.login") == "fallback.login"
    assert compliant_local("a.-b") == "a.b"
    assert compliant_local("ユーザ", "user9") == "user9"
    assert check_local("ok+tag") == []


def test_proposals_avoid_holders_and_keep_stable_targets():
    import datetime as _dt

    from mailshift.customers.addresses import MailboxAddress, audit_addresses

    today = _dt.date(2026, 1, 1)
    mbs = [MailboxAddress(1, "a..b@x.example"), MailboxAddress(2, "c..d@x.example")]
    # c.d is another mailbox's destination login; a.b was proposed for mailbox 1 before
    res = audit_addresses(mbs, today=today, holders={"c.d@x.example": {7}, "a.b@x.example": {1}},
                          previous={1: ("a.b@x.example", "proposed")})
    assert [r.new_address for r in res.renames] == ["a.b@x.example", "c.d-2@x.example"]
    # later a mailbox 9 holds a.b: the proposal moves; an approved one never moves
    res = audit_addresses(mbs + [MailboxAddress(9, "a.b@x.example")], today=today,
                          previous={1: ("a.b@x.example", "proposed"),
                                    2: ("c.d-7@x.example", "approved")})
    assert [r.new_address for r in res.renames] == ["a.b-2@x.example", "c.d-7@x.example"]
