"""The synthetic corpus: deterministic, and every special case present in every profile."""
from __future__ import annotations

import email
import email.policy
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab import corpus

INCLUDE = Path(__file__).resolve().parents[3] / "include"
SPECIAL = set(corpus.ALWAYS_SPECIAL) | {"oversize", "big"}


def test_same_seed_same_bytes():
    a = corpus.corpus_sha256(corpus.generate_inventory(42, "test"))
    b = corpus.corpus_sha256(corpus.generate_inventory(42, "test"))
    assert a == b
    assert corpus.corpus_sha256(corpus.generate_inventory(43, "test")) != a


def test_same_bytes_in_another_process():
    """No dependence on hash randomisation, time or global random state."""
    code = ("from lab import corpus; import random; random.seed(); "
            "print(corpus.corpus_sha256(corpus.generate_inventory(42, 'test')))")
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(INCLUDE), "PYTHONHASHSEED": "random"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == corpus.corpus_sha256(corpus.generate_inventory(42, "test"))


def _plans(inv):
    return [(mb, pm) for mb in inv.mailboxes for pm in corpus.mailbox_plan(inv, mb)]


@pytest.mark.parametrize("profile", ["test", "demo", "bench"])
def test_every_special_case_planned(profile):
    inv = corpus.generate_inventory(42, profile)
    tags = set().union(*(pm.tags for _, pm in _plans(inv)))
    assert SPECIAL <= tags, SPECIAL - tags
    assert sum("oversize" in pm.tags for _, pm in _plans(inv)) == 1
    over = [pm for _, pm in _plans(inv) if "oversize" in pm.tags][0]
    assert over.size == inv.oversize_bytes > inv.size_limit_bytes
    assert all(pm.size <= inv.size_limit_bytes for _, pm in _plans(inv) if "oversize" not in pm.tags)
    assert {m.protocol for m in inv.mailboxes} == {"imap", "pop3"}
    for mb in inv.mailboxes:
        if mb.protocol == "pop3":
            assert mb.folders == ("INBOX",)
    seen = [pm for mb, pm in _plans(inv) if mb.protocol == "pop3"]
    assert any("\\Seen" in pm.flags for pm in seen) and any("\\Seen" not in pm.flags for pm in seen)
    folders = set().union(*(mb.folders for mb in inv.mailboxes))
    assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Projects/2024/Q1", "仕事/請求書",
            "Archive/v2.0", "Q&A"} <= folders
    for mb in inv.mailboxes:  # the dotted folder only on "/"-separator sources
        if "Archive/v2.0" in mb.folders:
            assert inv.system(mb.source_system).separator == "/"
    flags = set().union(*(pm.flags for _, pm in _plans(inv)))
    assert {"\\Seen", "\\Answered", "\\Flagged", "\\Draft", "$Forwarded", "$Junk", corpus.CUSTOM_KEYWORD} <= flags
    # addresses/logins ASCII, some not dot-atoms, one mixed case, Japanese names
    addrs = [m.address for m in inv.mailboxes]
    assert all(a.isascii() and m.login.isascii() for a, m in zip(addrs, inv.mailboxes, strict=True))
    assert any(".." in a.split("@")[0] for a in addrs)
    assert any(a.split("@")[0].endswith(".") for a in addrs)
    assert any(a != a.lower() for a in addrs)
    assert all(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", h.contact_name) for h in inv.households)
    assert len({a.lower() for a in addrs}) == len(addrs)


def test_profile_sizes():
    t = corpus.generate_inventory(42, "test")
    assert len(t.buildings) == 2 and len(t.mailboxes) == 6
    assert sum(pm.size for _, pm in _plans(t)) < 12_000_000
    assert max(pm.size for _, pm in _plans(t) if "oversize" not in pm.tags) >= 2_000_000
    d = corpus.generate_inventory(42, "demo")
    assert len(d.buildings) == 6 and len(d.households) == 30 and 40 <= len(d.mailboxes) <= 50
    assert len({h.id for h in d.households if sum(m.household_id == h.id for m in d.mailboxes) > 1}) >= 5
    assert len(_plans(d)) == 2500 and 50e6 < sum(pm.size for _, pm in _plans(d)) < 80e6
    assert max(pm.size for _, pm in _plans(d) if "oversize" not in pm.tags) >= 20_000_000
    assert 26_000_000 <= d.oversize_bytes <= 30_000_000 and d.size_limit_bytes == 25 * 1024 * 1024
    b = corpus.generate_inventory(42, "bench")
    assert len(b.mailboxes) == 20 and len(_plans(b)) >= 40_000
    assert sum(pm.size for _, pm in _plans(b)) >= 450e6


def test_oversize_is_a_parameter():
    inv = corpus.generate_inventory(42, "test", size_limit_bytes=1_000_000, oversize_bytes=1_200_000)
    msgs = [m for mb in inv.mailboxes for m in corpus.mailbox_messages(inv, mb) if len(m.raw) > 1_000_000]
    assert any(abs(len(m.raw) - 1_200_000) < 100 for m in msgs)
    with pytest.raises(ValueError):
        corpus.generate_inventory(42, "test", size_limit_bytes=2_000_000, oversize_bytes=1_000_000)


def test_messages_carry_their_special_cases():
    inv = corpus.generate_inventory(42, "test")
    found = set()
    for mb in inv.mailboxes:
        msgs = list(corpus.mailbox_messages(inv, mb))
        plan = corpus.mailbox_plan(inv, mb)
        assert len(msgs) == len(plan) == mb.message_count
        assert all(m.folder in mb.folders for m in msgs)
        assert all(m.internal_date.tzinfo is not None for m in msgs)
        ids: dict[bytes, set] = {}
        for pm, m in zip(plan, msgs, strict=True):
            raw = m.raw
            head = raw.split(b"\r\n\r\n" if b"\r\n" in raw else b"\n\n", 1)[0]
            assert abs(len(raw) - pm.size) <= 80 or pm.size < 1500, (pm.tags, len(raw), pm.size)
            if "bare_lf" in pm.tags:
                assert b"\r" not in raw and b"\n" in raw
                found.add("bare_lf")
            else:
                assert b"\n" not in raw.replace(b"\r\n", b"")
            if "no_message_id" in pm.tags:
                assert b"\nMessage-ID:" not in head
                found.add("no_message_id")
            mid = re.search(rb"\nMessage-ID: (\S+)", head)
            if mid:
                ids.setdefault(mid.group(1), set()).add(hashlib.sha256(raw).hexdigest())
            if "iso2022jp" in pm.tags:
                assert b"=?ISO-2022-JP?B?" in head and b"charset=ISO-2022-JP" in raw and raw.isascii()
                assert b"\x1b$B" in raw  # JIS escape in the body
                found.add("iso2022jp")
            if "sjis" in pm.tags:
                assert b"=?Shift_JIS?B?" in head
                body = raw.split(b"\r\n\r\n", 1)[1]
                body.decode("shift_jis")
                found.add("sjis")
            if "raw8bit_header" in pm.tags:
                subj = re.search(rb"\nSubject: ([^\r\n]*)", head).group(1)
                assert not subj.isascii()
                subj.decode("utf-8")
                found.add("raw8bit_header")
            if "raw8bit_sjis_header" in pm.tags:
                subj = re.search(rb"\nSubject: ([^\r\n]*)", head).group(1)
                assert not subj.isascii()
                with pytest.raises(UnicodeDecodeError):
                    subj.decode("utf-8")
                subj.decode("shift_jis")
                found.add("raw8bit_sjis_header")
            if "attachment" in pm.tags:
                msg = email.message_from_bytes(raw, policy=email.policy.compat32)
                parts = [p for p in msg.walk() if p.get("Content-Disposition", "").startswith("attachment")]
                assert parts and parts[0]["Content-Transfer-Encoding"] == "base64"
                assert len(parts[0].get_payload(decode=True)) > 100
                found.add("attachment")
        for pm, m in zip(plan, msgs, strict=True):
            if pm.dup_of is not None:
                orig = msgs[pm.dup_of]
                assert orig.raw == m.raw and orig.folder == m.folder
                found.add("duplicate")
        if any(len(v) > 1 for v in ids.values()):
            found.add("shared_message_id")
    assert found == {"bare_lf", "no_message_id", "iso2022jp", "sjis", "raw8bit_header",
                     "raw8bit_sjis_header", "attachment", "duplicate", "shared_message_id"}


def test_write_exports_formats(tmp_path):
    inv = corpus.generate_inventory(42, "test")
    d = corpus.write_exports(inv, tmp_path)
    a = (d / "src-a.csv").read_bytes()
    b = (d / "src-b.csv").read_bytes()
    assert a.decode("utf-8").startswith("building_id,building_name,domain,household_id,contact_name,"
                                        "address,login,protocol,quota_mb\n")
    with pytest.raises(UnicodeDecodeError):
        b.decode("utf-8")
    text = b.decode("cp932")
    assert text.startswith('"ユーザID","メールアドレス"') and "\r\n" in text
    assert (d / "systems.yaml").exists()
    assert {p.name for p in (d / "buildings").iterdir()} == {f"{x.id}.yaml" for x in inv.buildings if x.spec_override}
