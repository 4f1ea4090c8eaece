"""Translation of legacy rules into the destination's Sieve (no server)."""
from mailshift.customers import mail_rules, rule_move

EXTS = {"fileinto", "vacation", "copy", "include", "envelope"}


def test_translate_forward_qmail_and_sieve(tmp_path):
    d = tmp_path / "taro"
    d.mkdir()
    (d / ".forward").write_text("\\taro, a@example.net\n|/usr/bin/procmail\n/var/mail/taro.copy\n")
    (d / ".qmail").write_text("&b@example.org\n")
    (d / ".qmail-ml").write_text("&list@example.org\n")
    (d / "old.sieve").write_text('require ["vnd.dovecot.pipe", "copy"];\n'
                                 'if true { pipe :copy "x"; }\nredirect :copy "c@example.com";\n')
    (d / "ok.sieve").write_text('require "vacation";\nvacation "away";\n')
    t = rule_move.translate(d, "taro", EXTS)
    assert list(t.scripts) == ["legacy-ok"]
    main = t.main()
    assert main.splitlines()[1] == 'require ["copy", "include"];'
    assert 'include :personal "legacy-ok";' in main
    assert 'redirect :copy "a@example.net";' in main and 'redirect "b@example.org";' in main
    assert 'redirect :copy "c@example.com";' in main          # unconditional: translated
    why = {r.origin: w for r, w in t.not_movable}
    assert sorted(why) == ["taro/.forward:2", "taro/.forward:3", "taro/.qmail-ml:1",
                           "taro/old.sieve:2"]
    assert "procmail" in why["taro/.forward:2"] and "file" in why["taro/.forward:3"]
    assert "extension address taro-ml" in why["taro/.qmail-ml:1"]
    # the main script parses back to the moved rules
    back = mail_rules.parse_sieve(main, "main")
    assert {(r.kind, r.target, r.copy) for r in back} == {
        ("forward", "a@example.net", True), ("forward", "b@example.org", False),
        ("forward", "c@example.com", True)}
    assert rule_move.included(main) == ["legacy-ok"]
