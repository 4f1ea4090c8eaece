"""The copier against the real lab servers: both source shapes, every special message, passes,
flags, expunges, UIDVALIDITY changes, refusals, POP3 UIDLs, and a read-only source.

Every check reads the destination (and the source) directly over IMAP/POP3."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from lab import corpus
from lab.connections import imap_uri
from lab.seed import server_folder_name
from mailshift.copy.copier import CopyOptions, MailboxRef, copy_mailbox
from mailshift.protocols.endpoint import parse_endpoint
from mailshift.protocols.imap.append import OutgoingMessage, multiappend
from mailshift.rules import states
from mailshift.store.ledger import CopyStore
from support.mail import (
    add_mailbox,
    imap,
    ledger_states,
    ordered_digests,
    pop3_uidls,
    snapshot,
    unique_login,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inv():
    return corpus.generate_inventory(42, "test")


def put(cfg, server, login, messages):
    """APPEND corpus messages to a lab server as they are (bytes, flags, dates)."""
    s = cfg.servers[server]
    with imap(cfg, server, login) as c:
        made = set()
        for m in messages:
            name = server_folder_name(m.folder, s.separator, s.prefix)
            if name not in made and name != "INBOX":
                try:
                    c.create_folder(name)
                except Exception as exc:  # already there (e.g. a special-use folder)
                    assert "exist" in str(exc).lower(), exc
                c.subscribe_folder(name)
            made.add(name)
            assert multiappend(c, name, [OutgoingMessage(m.flags, m.internal_date, m.raw)]).ok


def run(db, cfg, mb, **opts):
    ref = MailboxRef(mb.id, mb.address, mb.source_login, mb.dest_login, mb.protocol)
    return copy_mailbox(CopyStore(db), ref, parse_endpoint(imap_uri(cfg, mb.source)),
                        parse_endpoint(imap_uri(cfg, "dest")), CopyOptions(**opts))


def _same_content(src: dict, dst: dict) -> None:
    """Every source folder's messages are at the destination exactly once, flags and dates equal."""
    for folder, items in src.items():
        target = folder
        assert dst.get(target, Counter()) == items, f"folder {folder!r} differs"


@pytest.mark.parametrize("system", ["src-a", "src-b"])
def test_showcase_mailbox_copies_exactly(lab_config, db, inv, system):
    cfg = lab_config
    showcase = next(m for m in inv.mailboxes if m.showcase and m.source_system == system)
    messages = list(corpus.mailbox_messages(inv, showcase))
    mb = add_mailbox(db, cfg, system, unique_login(), "imap")
    put(cfg, system, mb.source_login, messages)
    before = snapshot(cfg, system, mb.source_login)

    summary = run(db, cfg, mb)

    assert summary.copied == len(messages) and summary.refused == 0
    after = snapshot(cfg, system, mb.source_login)
    assert after == before, "the source changed: the copier must be read-only"
    dest = snapshot(cfg, "dest", mb.dest_login)
    _same_content(before, dest)
    assert sum(sum(c.values()) for c in dest.values()) == len(messages)
    assert ledger_states(db, mb.id) == Counter({states.COPIED: len(messages)})
    # Japanese and nested folder names arrive with the same logical path.
    assert set(before) <= set(dest), repr(sorted(set(before) - set(dest)))
    assert "仕事/請求書" in dest and "Projects/2024/Q1" in dest


def test_second_pass_is_incremental_and_syncs_flags(lab_config, db, inv):
    cfg = lab_config
    showcase = next(m for m in inv.mailboxes if m.showcase and m.source_system == "src-a")
    messages = list(corpus.mailbox_messages(inv, showcase))[:40]
    mb = add_mailbox(db, cfg, "src-a", unique_login(), "imap")
    put(cfg, "src-a", mb.source_login, messages)
    first = run(db, cfg, mb)
    assert first.copied == 40

    # The user keeps working on the legacy server: new mail, a flag change, a deletion.
    extra = [corpus.Message("INBOX", b"Subject: late\r\n\r\nnew mail\r\n", (), dt.datetime(2024, 5, 1, tzinfo=dt.UTC))]
    put(cfg, "src-a", mb.source_login, extra)
    with imap(cfg, "src-a", mb.source_login) as c:
        c.select_folder("INBOX")
        uids = c.search("ALL")
        c.add_flags([uids[0]], [b"\\Flagged", b"$Important"])
        c.delete_messages([uids[1]])
        c.expunge()
    second = run(db, cfg, mb, pass_kind="delta")
    assert second.copied == 1
    assert second.flags_synced == 1
    assert second.expunged_at_source == 1
    src = snapshot(cfg, "src-a", mb.source_login)
    dst = snapshot(cfg, "dest", mb.dest_login)
    # The expunged message stays at the destination (reported, not deleted): one extra there.
    assert sum(dst["INBOX"].values()) == sum(src["INBOX"].values()) + 1
    assert not (src["INBOX"] - dst["INBOX"]), "a source message is missing or has other flags"

    third = run(db, cfg, mb, pass_kind="final")
    assert (third.copied, third.flags_synced) == (0, 0)


def test_uidvalidity_change_rematches_without_duplicates(lab_config, db, inv):
    cfg = lab_config
    showcase = next(m for m in inv.mailboxes if m.showcase and m.source_system == "src-b")
    messages = [m for m in corpus.mailbox_messages(inv, showcase) if m.folder == "INBOX"][:15]
    mb = add_mailbox(db, cfg, "src-b", unique_login(), "imap")
    put(cfg, "src-b", mb.source_login, [m._replace(folder="Projects") for m in messages])
    assert run(db, cfg, mb).copied == 15
    # The legacy server rebuilt the folder: same mail, new UIDVALIDITY, plus one new message.
    with imap(cfg, "src-b", mb.source_login) as c:
        c.delete_folder("INBOX.Projects")
    new = corpus.Message("Projects", b"Subject: after rebuild\r\n\r\nx\r\n", (), dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    put(cfg, "src-b", mb.source_login, [m._replace(folder="Projects") for m in messages] + [new])
    again = run(db, cfg, mb, pass_kind="delta")
    assert again.recovered == 15 and again.copied == 1
    dst = snapshot(cfg, "dest", mb.dest_login)
    assert sum(dst["Projects"].values()) == 16


def test_refusals_are_recorded_with_the_servers_words(lab_config, db):
    cfg = lab_config
    limit = cfg.dest.max_mail_size
    mb = add_mailbox(db, cfg, "src-a", unique_login(), "imap")
    big = b"Subject: too big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (limit // 1000 + 50)
    small = [corpus.Message("INBOX", f"Subject: ok {i}\r\n\r\nfine\r\n".encode(), (), dt.datetime(2023, 1, 1, tzinfo=dt.UTC))
             for i in range(3)]
    put(cfg, "src-a", mb.source_login, small[:2] + [corpus.Message("INBOX", big, (), dt.datetime(2023, 1, 2, tzinfo=dt.UTC))] + small[2:])
    summary = run(db, cfg, mb)
    assert (summary.copied, summary.refused) == (3, 1)
    with db, db.cursor() as cur:
        cur.execute("SELECT size, detail FROM message WHERE mailbox_id = %s AND state = %s", (mb.id, states.REFUSED))
        size, detail = cur.fetchone()
    assert size == len(big) and detail, "the refusal must carry the destination's words"
    # Retried on the next pass, still refused, never duplicated, never truncated.
    again = run(db, cfg, mb, pass_kind="delta")
    assert (again.copied, again.refused) == (0, 1)
    assert sum(snapshot(cfg, "dest", mb.dest_login)["INBOX"].values()) == 3


def test_quota_full_is_a_refusal_not_a_loss(lab_config, db):
    cfg = lab_config
    mb = add_mailbox(db, cfg, "src-a", unique_login(), "imap", quota_bytes=60_000)
    msgs = [corpus.Message("INBOX", f"Subject: q{i}\r\n\r\n".encode() + b"y" * 20_000 + b"\r\n", (),
                           dt.datetime(2023, 1, 1, tzinfo=dt.UTC)) for i in range(5)]
    put(cfg, "src-a", mb.source_login, msgs)
    summary = run(db, cfg, mb)
    assert summary.copied + summary.refused == 5 and summary.refused >= 2
    with db, db.cursor() as cur:
        cur.execute("SELECT detail FROM message WHERE mailbox_id = %s AND state = %s", (mb.id, states.REFUSED))
        reasons = [r[0] for r in cur.fetchall()]
    assert all("quota" in r.lower() for r in reasons), reasons


@pytest.mark.parametrize("system", ["src-a", "src-b"])
def test_pop3_uidls_survive_with_x_uidl(lab_config, db, inv, system):
    cfg = lab_config
    pop = next(m for m in inv.mailboxes if m.protocol == "pop3" and m.source_system == system)
    messages = list(corpus.mailbox_messages(inv, pop))
    mb = add_mailbox(db, cfg, system, unique_login(), "pop3")
    put(cfg, system, mb.source_login, messages)
    legacy = pop3_uidls(cfg, system, mb.source_login)
    src_flags = snapshot(cfg, system, mb.source_login)

    summary = run(db, cfg, mb, uidl_strategy="x-uidl-header")

    assert summary.copied == len(messages)
    assert pop3_uidls(cfg, "dest", mb.dest_login) == legacy
    assert snapshot(cfg, system, mb.source_login) == src_flags, "POP3 reads must not mark mail seen"
    # Bytes at the destination are the source bytes plus exactly the declared header.
    assert snapshot(cfg, "dest", mb.dest_login, strip_x_uidl=True)["INBOX"] == src_flags["INBOX"]
    with db, db.cursor() as cur:
        cur.execute("SELECT count(*) FROM message WHERE mailbox_id = %s AND transform = %s AND pop3_uidl IS NOT NULL",
                    (mb.id, states.Transform.X_UIDL))
        assert cur.fetchone()[0] == len(messages)


def test_uidl_strategy_none_leaves_bytes_untouched(lab_config, db, inv):
    cfg = lab_config
    pop = next(m for m in inv.mailboxes if m.protocol == "pop3" and m.source_system == "src-a")
    messages = list(corpus.mailbox_messages(inv, pop))[:5]
    mb = add_mailbox(db, cfg, "src-a", unique_login(), "pop3")
    put(cfg, "src-a", mb.source_login, messages)
    run(db, cfg, mb, uidl_strategy="none")
    assert snapshot(cfg, "dest", mb.dest_login)["INBOX"] == snapshot(cfg, "src-a", mb.source_login)["INBOX"]


def test_parallel_append_lanes_keep_every_folders_order(lab_config, db):
    """Batches of one folder are stored over several connections at once, yet destination UIDs
    follow source UIDs in every folder (arrival order, and POP3 message order, unchanged)."""
    import random

    cfg = lab_config
    rng = random.Random(7)
    mb = add_mailbox(db, cfg, "src-a", unique_login("order"), "imap")
    s = cfg.servers["src-a"]
    with imap(cfg, "src-a", mb.source_login) as c:
        c.create_folder(server_folder_name("Archive", s.separator, s.prefix))
        for i in range(180):
            folder = "INBOX" if i % 3 else "Archive"
            raw = f"From: o{i}@example.jp\r\nSubject: order {i}\r\n\r\n".encode() + rng.randbytes(
                rng.choice((100, 2000, 30000))).hex().encode() + b"\r\n"
            when = dt.datetime(2023, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
            assert multiappend(c, server_folder_name(folder, s.separator, s.prefix),
                               [OutgoingMessage((), when, raw)]).ok

    summary = run(db, cfg, mb, batch_messages=4, append_lanes=3, max_batches_in_flight=6)

    assert summary.copied == 180
    for folder in ("INBOX", "Archive"):
        src = ordered_digests(cfg, "src-a", mb.source_login, server_folder_name(folder, s.separator, s.prefix))
        dst = ordered_digests(cfg, "dest", mb.dest_login, folder)
        assert len(src) == (120 if folder == "INBOX" else 60)
        assert dst == src, f"{folder}: destination order differs from the source"
