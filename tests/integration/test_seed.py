"""Seed the test profile into the lab, read the sources back over IMAP."""
from __future__ import annotations

import pytest
from imapclient import imap_utf7

from lab import corpus, seed


@pytest.fixture(scope="module")
def seeded(lab_config):
    inv = corpus.generate_inventory(42, "test")
    counts = seed.seed_lab(lab_config, inv, workers=4)
    return lab_config, inv, counts


def test_counts(seeded):
    cfg, inv, counts = seeded
    assert counts["messages"] == sum(m.message_count for m in inv.mailboxes) == 300
    assert counts["mailboxes"] == len(inv.mailboxes) == counts["dest_users"]


def test_source_serves_what_was_seeded(seeded):
    cfg, inv, _ = seeded
    seen_tags = set()
    for mb in inv.mailboxes:
        server = inv.system(mb.source_system).lab_server
        c = seed.connect_master(cfg, server, mb.login)
        try:
            prefix, sep = seed.namespace_of(c)
            assert sep == cfg.servers[server].separator
            listed = {f[2] for f in c.list_folders()}
            subscribed = {f[2] for f in c.list_sub_folders()}
            want = {seed.server_folder_name(f, sep, prefix) for f in mb.folders}
            assert want <= listed and want <= subscribed, (mb.address, want - listed)
            expected: dict[str, list] = {}
            for pm, m in zip(corpus.mailbox_plan(inv, mb), corpus.mailbox_messages(inv, mb), strict=True):
                expected.setdefault(m.folder, []).append((pm, m))
            for folder in mb.folders:
                items = expected.get(folder, [])
                c.select_folder(seed.server_folder_name(folder, sep, prefix), readonly=True)
                uids = sorted(c.search("ALL"))
                assert len(uids) == len(items), (mb.address, folder)
                if not uids:
                    continue
                data = c.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE", "RFC822.SIZE"])
                for uid, (pm, m) in zip(uids, items, strict=True):
                    d = data[uid]
                    flags = {f.decode() for f in d[b"FLAGS"]} - {"\\Recent"}
                    assert flags == set(m.flags), (mb.address, folder, uid)
                    assert d[b"INTERNALDATE"].timestamp() == m.internal_date.timestamp()
                    raw = d[b"BODY[]"]
                    if "bare_lf" in pm.tags:
                        # Dovecot stores LF and serves CRLF: the served bytes differ from
                        # what was APPENDed, only by line ends
                        assert b"\r\n" not in m.raw
                        assert raw == m.raw.replace(b"\n", b"\r\n")
                        assert d[b"RFC822.SIZE"] == len(raw) > len(m.raw)
                    else:
                        assert raw == m.raw, (mb.address, folder, uid, sorted(pm.tags))
                    seen_tags |= pm.tags
        finally:
            c.logout()
    assert {"raw8bit_header", "raw8bit_sjis_header", "bare_lf", "oversize", "duplicate"} <= seen_tags


def test_japanese_folder_names_are_modified_utf7_on_the_wire(seeded):
    cfg, inv, _ = seeded
    mb = next(m for m in inv.mailboxes if m.showcase and m.source_system == "src-b")
    c = seed.connect_master(cfg, "src-b", mb.login)
    try:
        c.folder_encode = False
        names = {f[2] for f in c.list_folders()}
        names = {n if isinstance(n, bytes) else n.encode() for n in names}
        assert imap_utf7.encode("INBOX.仕事.請求書") == b"INBOX.&TtVOiw-.&istsQmb4-"
        assert b"INBOX.&TtVOiw-.&istsQmb4-" in names
        assert b"INBOX.Q&-A" in names
    finally:
        c.logout()


def test_dest_accounts_exist_and_are_empty(seeded):
    cfg, inv, _ = seeded
    mb = inv.mailboxes[0]
    c = seed.connect_master(cfg, "dest", mb.dest_login)
    try:
        assert c.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        c.logout()
