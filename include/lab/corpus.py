"""Synthetic, deterministic inventory and mail corpus for the lab.

Pure generation: the only I/O is `write_exports`, which writes the legacy inventory
exports (CSV per source system, systems.yaml, buildings/<id>.yaml).

Determinism: everything derives from `random.Random(...)` seeded with the profile seed (and,
per mailbox / per message, with a string derived from it); no global random, time or uuid.
Same (seed, profile) -> same inventory and byte-identical messages, in any process.

Profiles:
- "test":  2 buildings (src-a, src-b), 6 mailboxes, ~300 messages, a few MB; every special case,
           with a 3 MiB destination size limit so the oversize case stays small.
- "demo":  6 buildings, ~30 households, ~45 mailboxes, ~2,500 messages, ~60-70 MB.
- "bench": 4 buildings, 20 mailboxes, >= 40,000 messages, >= 450 MB (log-normal sizes).

Messages are generated lazily by `mailbox_messages` (one message in memory at a time).
The plan (`mailbox_plan`) is cheap (no bytes) and carries the tags of every message, in the same
order as `mailbox_messages` yields them.
"""
from __future__ import annotations

import base64
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

JST = timezone(timedelta(hours=9))
MiB = 1024 * 1024

# ---------------------------------------------------------------------------------------------
# data classes


@dataclass(frozen=True)
class SourceSystemDef:
    id: str
    kind: str  # dovecot (lab); legacy kinds in real life
    export_format: str  # alpha | beta (see mailshift.inventory.exports)
    separator: str  # hierarchy separator the lab server is expected to use ("/" or ".")
    max_connections: int
    lab_server: str  # name of the lab server (LabConfig.servers key)


@dataclass(frozen=True)
class Building:
    id: str
    name: str
    domain: str
    source_system: str
    spec_override: dict | None = None  # written to buildings/<id>.yaml when not None


@dataclass(frozen=True)
class Household:
    id: str
    building_id: str
    room: str
    contact_name: str
    phone: str
    postal_address: str


@dataclass(frozen=True)
class Mailbox:
    address: str  # as in the legacy export (may be mixed case, may not be a dot-atom)
    login: str  # legacy source login
    password: str  # lab-only password of the source user
    household_id: str
    building_id: str
    source_system: str
    protocol: str  # imap | pop3
    quota_mb: int | None
    folders: tuple[str, ...]  # logical names, "/" as hierarchy separator; INBOX first
    message_count: int
    showcase: bool  # carries every special case
    seed: str  # per-mailbox seed string

    @property
    def dest_login(self) -> str:
        return self.address.lower()


@dataclass
class Inventory:
    seed: int
    profile: str
    systems: tuple[SourceSystemDef, ...]
    domains: tuple[str, ...]
    buildings: tuple[Building, ...]
    households: tuple[Household, ...]
    mailboxes: tuple[Mailbox, ...]
    size_limit_bytes: int  # destination size limit for this corpus
    oversize_bytes: int  # size of the single message above the limit
    big_sizes: tuple[int, ...]  # multi-MB messages (log-normal tail)
    _plans: dict = field(default_factory=dict, repr=False, compare=False)

    def mailbox(self, address: str) -> Mailbox:
        for m in self.mailboxes:
            if m.address == address:
                return m
        raise KeyError(address)

    def system(self, system_id: str) -> SourceSystemDef:
        for s in self.systems:
            if s.id == system_id:
                return s
        raise KeyError(system_id)


class Message(NamedTuple):
    folder: str  # logical name, "/" separated
    raw: bytes
    flags: tuple  # e.g. ("\\Seen", "$Forwarded")
    internal_date: datetime  # tz-aware


class PlannedMessage(NamedTuple):
    index: int
    folder: str
    size: int  # target size in bytes (the raw message is this size, +- a few bytes)
    internal_date: datetime
    flags: tuple
    tags: frozenset  # special cases this message carries
    dup_of: int | None  # index of the message this one is a byte-identical copy of


# ---------------------------------------------------------------------------------------------
# constants

SYSTEMS = (
    SourceSystemDef("src-a", "dovecot", "alpha", "/", 8, "src-a"),
    SourceSystemDef("src-b", "dovecot", "beta", ".", 4, "src-b"),
)
DOMAINS = ("lab.mailshift.test", "second.mailshift.test")

SURNAMES = [
    ("山田", "yamada"), ("佐藤", "sato"), ("鈴木", "suzuki"), ("高橋", "takahashi"),
    ("田中", "tanaka"), ("伊藤", "ito"), ("渡辺", "watanabe"), ("中村", "nakamura"),
    ("小林", "kobayashi"), ("加藤", "kato"), ("吉田", "yoshida"), ("山本", "yamamoto"),
    ("松本", "matsumoto"), ("井上", "inoue"), ("木村", "kimura"), ("林", "hayashi"),
    ("清水", "shimizu"), ("斎藤", "saito"), ("森", "mori"), ("池田", "ikeda"),
]
GIVEN = [
    ("太郎", "taro"), ("花子", "hanako"), ("一郎", "ichiro"), ("美咲", "misaki"),
    ("健太", "kenta"), ("陽子", "yoko"), ("翔太", "shota"), ("由美", "yumi"),
    ("大輔", "daisuke"), ("直美", "naomi"), ("拓也", "takuya"), ("恵", "megumi"),
]
BUILDING_NAMES = [
    "メゾン①号館",  # NEC special char: in cp932, not in strict Shift_JIS
    "グランドメゾン本町", "サンハイツ桜台", "パークハウス緑町", "コーポ青葉", "レジデンス港南",
    "ハイツ若葉", "シティタワー中央", "ロイヤルコート東山", "エステート西原",
]
TOWNS = ["東京都品川区東五反田1-2-3", "大阪府大阪市北区梅田2-4-9", "神奈川県横浜市西区高島1-1-1",
         "福岡県福岡市中央区天神3-3-3", "愛知県名古屋市中区栄4-5-6", "北海道札幌市中央区北一条西2-1"]

BASE_FOLDERS = ("INBOX", "Sent", "Drafts", "Trash", "Junk")
EXTRA_FOLDERS = ("Projects", "Projects/2024", "Projects/2024/Q1", "仕事", "仕事/請求書",
                 "家族/旅行 2023", "Q&A")
DOTTED_FOLDER = "Archive/v2.0"  # only for "/"-separator sources

JA_SENTENCES = [
    "いつもお世話になっております。", "来月の管理組合の総会についてご連絡いたします。",
    "請求書を添付しましたのでご確認ください。", "明日の打ち合わせは十時からでお願いします。",
    "駐車場の契約更新の件、承知いたしました。", "週末は家族で旅行に行く予定です。",
    "インターネット回線の工事日程が決まりました。", "ご不明な点がございましたらお問い合わせください。",
    "先日はありがとうございました。", "写真を送りますので見てください。",
    "資料の修正版を共有します。", "よろしくお願いいたします。",
]
EN_SENTENCES = [
    "Please find the minutes of the last meeting below.", "The invoice for March is attached.",
    "Can we move the call to Thursday afternoon?", "Thanks for your quick reply.",
    "The building maintenance is scheduled for next week.", "Here are the photos from the trip.",
    "Let me know if anything is unclear.", "Best regards,",
    "Your order has been shipped and should arrive within three days.",
    "Reminder: the elevator inspection takes place on Monday morning.",
]
CUSTOM_KEYWORD = "Kakunin-Zumi"  # a custom (non-$) keyword, ASCII atom

PROFILES = {
    "test": dict(buildings=2, households=(2, 2), mailboxes_per_household=[[2, 1], [2, 1]],
                 pop3=2, messages=300, median=2500, sigma=1.0, cap=120_000,
                 big=(2_300_000,), size_limit=3 * MiB, oversize=3 * MiB + 400_000),
    "demo": dict(buildings=6, households=(5, 5, 5, 5, 5, 5), mailboxes_per_household=None,
                 pop3=8, messages=2500, median=4200, sigma=1.1, cap=1_500_000,
                 big=(21_000_000,), size_limit=25 * MiB, oversize=27_000_000),
    "bench": dict(buildings=4, households=(3, 3, 3, 3), mailboxes_per_household=[
                  [2, 1, 2], [2, 2, 1], [1, 2, 2], [2, 1, 2]],
                  pop3=3, messages=40_400, median=5800, sigma=1.1, cap=4_000_000,
                  big=(22_000_000, 20_500_000, 9_000_000), size_limit=25 * MiB,
                  oversize=28_000_000),
}

START = datetime(2016, 1, 1, tzinfo=JST)
SPAN_SECONDS = int((datetime(2025, 6, 30, tzinfo=JST) - START).total_seconds())


# ---------------------------------------------------------------------------------------------
# inventory


def generate_inventory(seed: int, profile: str = "demo", *, oversize_bytes: int | None = None,
                       size_limit_bytes: int | None = None) -> Inventory:
    """Deterministic inventory for `profile` ("test", "demo", "bench")."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (one of {sorted(PROFILES)})")
    p = PROFILES[profile]
    rng = random.Random(f"mailshift-inventory:{seed}:{profile}")
    size_limit = size_limit_bytes or p["size_limit"]
    oversize = oversize_bytes or p["oversize"]
    if oversize <= size_limit:
        raise ValueError("oversize_bytes must exceed size_limit_bytes")

    buildings: list[Building] = []
    households: list[Household] = []
    mb_specs: list[dict] = []
    used_local: set[str] = set()
    names = BUILDING_NAMES[:]
    b_login_no = 100230
    for bi in range(p["buildings"]):
        system = SYSTEMS[bi % 2]
        domain = DOMAINS[(bi // 2) % 2] if profile != "test" else DOMAINS[bi % 2]
        bid = f"B{10001 + bi * 7:05d}"
        bname = names[bi % len(names)]
        override = _building_override(profile, bi, system, size_limit)
        buildings.append(Building(bid, bname, domain, system.id, override))
        n_house = p["households"][bi]
        for hi in range(n_house):
            room = f"{(hi // 4) + 1}{(hi % 4) + 1:02d}"
            hid = f"{bid}-{room}"
            sur = SURNAMES[rng.randrange(len(SURNAMES))]
            giv = GIVEN[rng.randrange(len(GIVEN))]
            phone = f"0{rng.randrange(3, 9)}-{rng.randrange(1000, 9999)}-{rng.randrange(1000, 9999)}"
            postal = f"{TOWNS[bi % len(TOWNS)]} {bname} {room}号室"
            households.append(Household(hid, bid, room, f"{sur[0]}\u3000{giv[0]}", phone, postal))
            if p["mailboxes_per_household"] is not None:
                n_mb = p["mailboxes_per_household"][bi][hi]
            else:
                n_mb = rng.choices([1, 2, 3], weights=[9, 5, 2])[0]
            for mi in range(n_mb):
                g = giv if mi == 0 else GIVEN[rng.randrange(len(GIVEN))]
                local = _local_part(rng, g[1], sur[1], mi, used_local)
                mb_specs.append(dict(local=local, domain=domain, household_id=hid, building_id=bid,
                                     system=system))

    # non-dot-atom and mixed-case addresses (legacy systems allowed them)
    _mangle_addresses(rng, mb_specs, profile)

    # protocol: pick POP3 users (never the first mailbox of a system: that is the IMAP showcase)
    first_of_system: dict[str, int] = {}
    for i, s in enumerate(mb_specs):
        first_of_system.setdefault(s["system"].id, i)
    candidates = [i for i in range(len(mb_specs)) if i not in first_of_system.values()]
    # one POP3 user per system first, then random
    pop3: set[int] = set()
    for sys_ in SYSTEMS:
        c = [i for i in candidates if mb_specs[i]["system"].id == sys_.id]
        if c and len(pop3) < p["pop3"]:
            pop3.add(c[-1])
    rest = [i for i in candidates if i not in pop3]
    rng.shuffle(rest)
    for i in rest[: max(0, p["pop3"] - len(pop3))]:
        pop3.add(i)

    # message counts: log-normal weights, POP3 users smaller
    weights = [rng.lognormvariate(0, 0.6) * (0.35 if i in pop3 else 1.0) for i in range(len(mb_specs))]
    total_w = sum(weights)
    counts = [max(45 if i in first_of_system.values() else 8,
                  round(p["messages"] * w / total_w)) for i, w in enumerate(weights)]
    # nudge to the exact total (largest mailbox absorbs the rounding)
    counts[max(range(len(counts)), key=lambda i: counts[i])] += p["messages"] - sum(counts)

    mailboxes: list[Mailbox] = []
    for i, s in enumerate(mb_specs):
        system = s["system"]
        address = f"{s['local']}@{s['domain']}"
        if system.export_format == "alpha":
            login = address.lower()
        else:
            b_login_no += rng.randrange(1, 40)
            login = f"b{b_login_no:06d}"
        protocol = "pop3" if i in pop3 else "imap"
        showcase = i in first_of_system.values()
        if protocol == "pop3":
            folders = ("INBOX",)
        else:
            extra = list(EXTRA_FOLDERS) if showcase else [f for f in EXTRA_FOLDERS if rng.random() < 0.35]
            # parents must exist for nested folders
            extra = _close_parents(extra)
            if system.separator == "/" and (showcase or rng.random() < 0.2):
                extra = _close_parents(extra + [DOTTED_FOLDER])
            folders = BASE_FOLDERS + tuple(sorted(extra, key=lambda f: (f.split("/"), f)))
        quota = rng.choice([None, 500, 1000, 2000, 2000, 5000]) if not showcase else 5000
        password = "pw-" + "".join(rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(12))
        mailboxes.append(Mailbox(address, login, password, s["household_id"], s["building_id"],
                                 system.id, protocol, quota, folders, counts[i], showcase,
                                 f"{seed}:{profile}:{address}"))

    return Inventory(seed, profile, SYSTEMS, DOMAINS, tuple(buildings), tuple(households),
                     tuple(mailboxes), size_limit, oversize, tuple(p["big"]))


def _close_parents(folders: list[str]) -> list[str]:
    out = set(folders)
    for f in folders:
        parts = f.split("/")
        for k in range(1, len(parts)):
            out.add("/".join(parts[:k]))
    return sorted(out)


def _local_part(rng: random.Random, given: str, sur: str, mi: int, used: set[str]) -> str:
    patterns = [f"{given}.{sur}", f"{sur}.{given}", f"{given}{sur[0]}", f"{sur}{rng.randrange(1, 99)}",
                f"{given}_{sur}", f"{given}-{rng.randrange(1960, 2010)}"]
    for _ in range(100):
        local = patterns[rng.randrange(len(patterns))] if mi == 0 or rng.random() < 0.5 \
            else f"{given}.{sur}.{mi}"
        if local.lower() not in used:
            used.add(local.lower())
            return local
        patterns.append(f"{given}{rng.randrange(100, 999)}")
    raise RuntimeError("could not make a unique local part")


def _mangle_addresses(rng: random.Random, specs: list[dict], profile: str) -> None:
    """Turn a few addresses into legacy non-dot-atoms and one into mixed case."""
    # deterministic positions: the last mailbox of each system, plus a mixed-case one
    by_sys: dict[str, list[int]] = {}
    for i, s in enumerate(specs):
        by_sys.setdefault(s["system"].id, []).append(i)
    kinds = ["consecutive_dots", "dot_before_at"]
    for k, (_sys_id, idxs) in enumerate(sorted(by_sys.items())):
        i = idxs[-1] if len(idxs) > 1 else idxs[0]
        local = specs[i]["local"].replace("_", ".").replace("-", ".")
        if "." not in local:
            local = local[:3] + "." + local[3:]
        if kinds[k % 2] == "consecutive_dots":
            a, b = local.split(".", 1)
            specs[i]["local"] = f"{a}..{b}"
        else:
            specs[i]["local"] = local + "."
    if profile == "demo" and len(specs) > 10:
        specs[5]["local"] = specs[5]["local"].rstrip(".") + "."
    # one mixed-case address (first system, second mailbox)
    i = by_sys[sorted(by_sys)[0]][1] if len(by_sys[sorted(by_sys)[0]]) > 1 else 0
    specs[i]["local"] = specs[i]["local"][:1].upper() + specs[i]["local"][1:]


def _building_override(profile: str, bi: int, system: SourceSystemDef, size_limit: int) -> dict | None:
    """A few buildings carry a spec override; others use the defaults."""
    if profile == "test":
        if bi == 0:
            return {"size_limit_bytes": size_limit,
                    "folder_map": {"Junk": "Spam", "仕事/請求書": "Invoices"},
                    "notice_policy": {"email_rounds": 3, "letter": True},
                    "blackout_dates": ["2025-12-29", "2025-12-30", "2025-12-31"]}
        return {"size_limit_bytes": size_limit, "uidl_strategy": "x-uidl-header",
                "max_connections": 2, "pinned_wave": 1}
    if bi == 0:
        return {"folder_map": {"Junk": "Spam"}, "pinned_wave": 1,
                "notice_policy": {"email_rounds": 3, "letter": True, "call": False}}
    if bi == 1:
        return {"uidl_strategy": "x-uidl-header", "max_connections": 2}
    if bi == 3:
        return {"blackout_dates": ["2025-08-13", "2025-08-14", "2025-08-15"],
                "notice_policy": {"call": True}}
    return None


# ---------------------------------------------------------------------------------------------
# message plan


ALWAYS_SPECIAL = ("iso2022jp", "sjis", "raw8bit_header", "raw8bit_sjis_header", "no_message_id",
                  "shared_message_id", "bare_lf", "duplicate", "attachment", "keyword_forwarded",
                  "keyword_junk", "custom_keyword", "answered", "flagged", "draft")


def mailbox_plan(inv: Inventory, mb: Mailbox) -> list[PlannedMessage]:
    """The message plan of a mailbox (no bytes): folder, size, date, flags, tags per message."""
    key = mb.address
    if key in inv._plans:
        return inv._plans[key]
    p = PROFILES[inv.profile]
    rng = random.Random(f"plan:{mb.seed}")
    n = mb.message_count
    specials: list[tuple[str, frozenset, int | None]] = []  # folder, tags, fixed size
    if mb.showcase:
        imap = mb.protocol == "imap"

        def f(x: str) -> str:
            return x if imap else "INBOX"

        specials += [
            ("INBOX", frozenset({"iso2022jp"}), None),
            ("INBOX", frozenset({"sjis"}), None),
            ("INBOX", frozenset({"raw8bit_header"}), None),
            ("INBOX", frozenset({"raw8bit_sjis_header"}), None),
            ("INBOX", frozenset({"no_message_id"}), None),
            ("INBOX", frozenset({"shared_message_id"}), None),
            (f("仕事/請求書"), frozenset({"shared_message_id", "attachment"}), 180_000),
            ("INBOX", frozenset({"bare_lf"}), None),
            (f("Projects/2024/Q1"), frozenset({"duplicate"}), None),
            ("INBOX", frozenset({"attachment"}), 350_000),
            ("INBOX", frozenset({"keyword_forwarded"}), None),
            (f("Junk"), frozenset({"keyword_junk"}), None),
            ("INBOX", frozenset({"custom_keyword"}), None),
            ("INBOX", frozenset({"answered"}), None),
            ("INBOX", frozenset({"flagged"}), None),
            (f("Drafts"), frozenset({"draft"}), None),
        ]
        if mb.source_system == SYSTEMS[0].id and mb is _first_showcase(inv):
            specials.append(("INBOX", frozenset({"oversize", "attachment"}), inv.oversize_bytes))
    # multi-MB tail messages go to other IMAP mailboxes, round-robin
    for j, big in enumerate(inv.big_sizes):
        if _big_owner(inv, j) is mb:
            specials.append(("INBOX" if mb.protocol == "pop3" else ("Sent" if j % 2 else "INBOX"),
                             frozenset({"big", "attachment"}), big))
    if mb.protocol == "pop3":
        # POP3 showcase bits live on every POP3 mailbox: a duplicate, one without Message-ID
        specials += [("INBOX", frozenset({"duplicate"}), None),
                     ("INBOX", frozenset({"no_message_id"}), None)]

    n_random = max(0, n - len(specials) - sum(1 for s in specials if "duplicate" in s[1]))
    folders = mb.folders
    fweights = [{"INBOX": 50, "Sent": 15, "Drafts": 1, "Trash": 6, "Junk": 4}.get(f, 3) for f in folders]
    entries: list[tuple] = list(specials)
    for _ in range(n_random):
        folder = rng.choices(folders, weights=fweights)[0]
        tags = set()
        r = rng.random()
        if r < 0.14:
            tags.add("iso2022jp")
        elif r < 0.20:
            tags.add("sjis")
        elif r < 0.21:
            tags.add("raw8bit_header")
        elif r < 0.22:
            tags.add("no_message_id")
        elif r < 0.225:
            tags.add("bare_lf")
        entries.append((folder, frozenset(tags), None))
    rng.shuffle(entries)
    # a byte-identical copy follows its original (delivered twice)
    ordered: list[tuple] = []
    for e in entries:
        ordered.append(e)
        if "duplicate" in e[1]:
            ordered.append((e[0], frozenset({"duplicate", "duplicate_copy"}), None))
    # dates sorted: APPEND order follows time, like real delivery
    dates = sorted(START + timedelta(seconds=rng.randrange(SPAN_SECONDS)) for _ in ordered)
    plan: list[PlannedMessage] = []
    for idx, (folder, tags, size) in enumerate(ordered):
        date = dates[idx]
        if "duplicate_copy" in tags:
            prev = plan[-1]
            plan.append(PlannedMessage(idx, prev.folder, prev.size, date, prev.flags, tags, prev.index))
            continue
        if size is None:
            size = int(min(p["cap"], max(900, rng.lognormvariate(math.log(p["median"]), p["sigma"]))))
            if "attachment" not in tags and size > 60_000:
                tags = tags | {"attachment"}
        plan.append(PlannedMessage(idx, folder, size, date, _flags(rng, mb, folder, tags, date), tags, None))
    inv._plans[key] = plan
    return plan


def _first_showcase(inv: Inventory) -> Mailbox:
    return next(m for m in inv.mailboxes if m.showcase and m.source_system == SYSTEMS[0].id)


def _big_owner(inv: Inventory, j: int) -> Mailbox:
    imap = [m for m in inv.mailboxes if m.protocol == "imap" and not m.showcase] or \
        [m for m in inv.mailboxes if m.protocol == "imap"]
    return imap[(j * 3 + 1) % len(imap)]


def _flags(rng: random.Random, mb: Mailbox, folder: str, tags: frozenset, date: datetime) -> tuple:
    flags: list[str] = []
    if mb.protocol == "pop3":
        # POP3 "leave on server": what the client downloaded is \Seen at the server
        if rng.random() < 0.5:
            flags.append("\\Seen")
        return tuple(flags)
    if folder == "Drafts" or "draft" in tags:
        return ("\\Draft",) if rng.random() < 0.5 and "draft" not in tags else ("\\Draft", "\\Seen")
    if folder in ("Sent", "Trash") or rng.random() < 0.8:
        flags.append("\\Seen")
    if "answered" in tags or (folder == "INBOX" and rng.random() < 0.1):
        flags.append("\\Answered")
    if "flagged" in tags or rng.random() < 0.04:
        flags.append("\\Flagged")
    if "keyword_forwarded" in tags or (folder == "INBOX" and rng.random() < 0.03):
        flags.append("$Forwarded")
    if "keyword_junk" in tags or (folder == "Junk" and rng.random() < 0.7):
        flags.append("$Junk")
    if "custom_keyword" in tags or rng.random() < 0.01:
        flags.append(CUSTOM_KEYWORD)
    return tuple(flags)


# ---------------------------------------------------------------------------------------------
# messages


def mailbox_messages(inv: Inventory, mb: Mailbox) -> Iterator[Message]:
    """Messages of `mb` in APPEND order, generated lazily (one in memory at a time)."""
    plan = mailbox_plan(inv, mb)
    dup_targets = {pm.dup_of for pm in plan if pm.dup_of is not None}
    cache: dict[int, bytes] = {}
    shared_id = f"<{hashlib.sha256(mb.seed.encode()).hexdigest()[:20]}@mail.legacy.example>"
    for pm in plan:
        if pm.dup_of is not None:
            raw = cache.pop(pm.dup_of)
        else:
            raw = _render(mb, pm, shared_id)
            if pm.index in dup_targets:
                cache[pm.index] = raw
        yield Message(pm.folder, raw, pm.flags, pm.internal_date)


def iter_corpus(inv: Inventory) -> Iterator[tuple[Mailbox, Message]]:
    for mb in inv.mailboxes:
        for m in mailbox_messages(inv, mb):
            yield mb, m


def corpus_sha256(inv: Inventory) -> str:
    """sha256 over every (mailbox, folder, flags, date, raw) of the corpus, in order."""
    h = hashlib.sha256()
    for mb, m in iter_corpus(inv):
        h.update(f"{mb.address}\0{m.folder}\0{' '.join(m.flags)}\0{m.internal_date.isoformat()}\0"
                 f"{len(m.raw)}\0".encode())
        h.update(m.raw)
    return h.hexdigest()


def _rfc2822_date(d: datetime) -> str:
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    off = d.utcoffset() or timedelta(0)
    mins = int(off.total_seconds() // 60)
    sign = "+" if mins >= 0 else "-"
    mins = abs(mins)
    return (f"{days[d.weekday()]}, {d.day:02d} {months[d.month - 1]} {d.year} "
            f"{d.hour:02d}:{d.minute:02d}:{d.second:02d} {sign}{mins // 60:02d}{mins % 60:02d}")


def _b_encode(text: str, charset: str, codec: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(codec)).decode()}?="


def _text(rng: random.Random, ja: bool, n_sentences: int) -> str:
    pool = JA_SENTENCES if ja else EN_SENTENCES
    lines = []
    line = ""
    for _ in range(n_sentences):
        s = pool[rng.randrange(len(pool))]
        if len(line) + len(s) > (34 if ja else 72):
            lines.append(line)
            line = s
        else:
            line = (line + ("" if ja else " ") + s) if line else s
    if line:
        lines.append(line)
    return "\n".join(lines)


def _filler(rng: random.Random, n: int, ja: bool, codec: str, eol: bytes) -> bytes:
    """About n bytes of text lines (encoded with codec), ending with eol."""
    if n <= 0:
        return b""
    pool = JA_SENTENCES if ja else EN_SENTENCES
    # a block of lines cycled from a random start: fast for multi-MB bodies
    start = rng.randrange(len(pool))
    lines = [(pool[(start + i) % len(pool)] + " " + pool[(start + 3 * i + 1) % len(pool)]).encode(codec)
             for i in range(len(pool))]
    out = bytearray()
    i = 0
    while len(out) < n:
        out += lines[i % len(lines)] + eol
        i += 1
    del out[n:]
    # end on a line boundary: replace the tail with ASCII padding + eol so encodings stay valid
    cut = out.rfind(eol)
    if cut < 0:
        return (b"." * max(0, n - len(eol)) + eol)[:max(n, len(eol))]
    tail = n - (cut + len(eol))
    out = out[:cut + len(eol)]
    if tail > len(eol):
        out += b"." * (tail - len(eol)) + eol
    return bytes(out)


def _render(mb: Mailbox, pm: PlannedMessage, shared_id: str) -> bytes:
    rng = random.Random(f"msg:{mb.seed}:{pm.index}")
    tags = pm.tags
    eol = b"\n" if "bare_lf" in tags else b"\r\n"
    domain = mb.address.rsplit("@", 1)[1]
    sur = SURNAMES[rng.randrange(len(SURNAMES))]
    giv = GIVEN[rng.randrange(len(GIVEN))]
    correspondent = f"{giv[1]}.{sur[1]}@example.co.jp"
    ja_name = f"{sur[0]} {giv[0]}"
    outgoing = pm.folder in ("Sent", "Drafts")
    frm_addr, to_addr = (mb.address, correspondent) if outgoing else (correspondent, mb.address)
    ja = rng.random() < 0.6 or bool(tags & {"iso2022jp", "sjis", "raw8bit_header", "raw8bit_sjis_header"})
    subj_ja = ["管理組合総会のお知らせ", "請求書送付の件", "打ち合わせ日程", "旅行の写真", "工事日程のご案内",
               "見積書について", "【重要】契約更新のお知らせ"][rng.randrange(7)]
    subj_en = ["Meeting minutes", "Invoice March", "Re: call on Thursday", "Photos",
               "Maintenance notice", "Your order has shipped"][rng.randrange(6)]

    # charset / headers
    charset, codec, cte = "us-ascii", "ascii", "7bit"
    if "iso2022jp" in tags:
        charset, codec, cte = "ISO-2022-JP", "iso2022_jp", "7bit"
        subject = _b_encode(subj_ja, "ISO-2022-JP", "iso2022_jp").encode()
        from_disp = _b_encode(ja_name, "ISO-2022-JP", "iso2022_jp").encode()
    elif "sjis" in tags:
        charset, codec, cte = "Shift_JIS", "shift_jis", "8bit"
        subject = _b_encode(subj_ja, "Shift_JIS", "shift_jis").encode()
        from_disp = _b_encode(ja_name, "Shift_JIS", "shift_jis").encode()
    elif "raw8bit_header" in tags:
        charset, codec, cte = "UTF-8", "utf-8", "8bit"
        subject = subj_ja.encode("utf-8")  # raw, unencoded UTF-8 in a header
        from_disp = ja_name.encode("utf-8")
    elif "raw8bit_sjis_header" in tags:
        charset, codec, cte = "Shift_JIS", "shift_jis", "8bit"
        subject = subj_ja.encode("shift_jis")  # raw Shift_JIS bytes in a header
        from_disp = ja_name.encode("shift_jis")
    elif ja:
        charset, codec, cte = "UTF-8", "utf-8", "base64" if rng.random() < 0.3 else "8bit"
        subject = _b_encode(subj_ja, "UTF-8", "utf-8").encode()
        from_disp = _b_encode(ja_name, "UTF-8", "utf-8").encode()
    else:
        subject = subj_en.encode()
        from_disp = f"{giv[1].title()} {sur[1].title()}".encode()
        ja = False

    hdr: list[bytes] = []
    date_str = _rfc2822_date(pm.internal_date)
    if not outgoing:
        recv_time = _rfc2822_date(pm.internal_date)
        hdr.append(f"Return-Path: <{correspondent}>".encode())
        hdr.append(f"Received: from mx{rng.randrange(1, 4)}.example.co.jp (mx.example.co.jp [192.0.2.{rng.randrange(1, 254)}])".encode())
        hdr.append(f"\tby mail.{domain} with ESMTP id {rng.getrandbits(40):010X}".encode())
        hdr.append(f"\tfor <{mb.address}>; {recv_time}".encode())
    hdr.append(f"Date: {date_str}".encode())
    if outgoing:
        hdr.append(b"From: " + f"<{frm_addr}>".encode())
        hdr.append(b"To: " + from_disp + f" <{to_addr}>".encode())
    else:
        hdr.append(b"From: " + from_disp + f" <{frm_addr}>".encode())
        hdr.append(f"To: {to_addr}".encode())
    hdr.append(b"Subject: " + subject)
    if "shared_message_id" in tags:
        hdr.append(f"Message-ID: {shared_id}".encode())
    elif "no_message_id" not in tags:
        hdr.append(f"Message-ID: <{pm.internal_date.strftime('%Y%m%d%H%M%S')}.{rng.getrandbits(48):012x}@example.co.jp>".encode())
    hdr.append(b"MIME-Version: 1.0")
    hdr.append(b"X-Mailer: Legacy Mailer 2.1")

    body_intro = _text(rng, ja, rng.randrange(2, 8))
    if "shared_message_id" in tags:
        body_intro += "\n" + f"(copy {pm.index} of a message whose Message-ID is shared)"
    header_bytes = eol.join(hdr) + eol

    if "attachment" in tags:
        boundary = f"----=_Part_{rng.getrandbits(32):08x}_{pm.index}"
        head = header_bytes + f'Content-Type: multipart/mixed; boundary="{boundary}"'.encode() + eol + eol
        tp_head = (f"--{boundary}".encode() + eol +
                   f"Content-Type: text/plain; charset={'UTF-8' if ja and codec == 'ascii' else charset}".encode() + eol +
                   b"Content-Transfer-Encoding: " + (b"8bit" if cte == "base64" else cte.encode()) + eol + eol)
        text_codec = codec if codec != "ascii" else "ascii"
        intro = body_intro.encode(text_codec).replace(b"\n", eol) + eol
        fname = ["請求書.pdf", "見積書.pdf", "photo.jpg", "資料.zip"][rng.randrange(4)]
        fname_enc = "".join(f"%{b:02X}" for b in fname.encode("utf-8"))
        ctype = {"pdf": "application/pdf", "jpg": "image/jpeg", "zip": "application/zip"}[fname.rsplit(".", 1)[1]]
        att_head = (eol + f"--{boundary}".encode() + eol +
                    f"Content-Type: {ctype}".encode() + eol +
                    b"Content-Transfer-Encoding: base64" + eol +
                    f"Content-Disposition: attachment; filename*=UTF-8''{fname_enc}".encode() + eol + eol)
        tail = eol + f"--{boundary}--".encode() + eol
        fixed = len(head) + len(tp_head) + len(intro) + len(att_head) + len(tail)
        remaining = max(600, pm.size - fixed)
        # base64 with 76-char lines + eol: 57 raw bytes -> 76 + len(eol)
        per_line = 76 + len(eol)
        raw_len = max(57, (remaining * 57) // per_line)
        blob = rng.randbytes(raw_len)
        enc = base64.encodebytes(blob)
        if eol != b"\n":
            enc = enc.replace(b"\n", eol)
        enc = enc.rstrip(b"\r\n")
        pad = pm.size - fixed - len(enc)
        filler = _filler(rng, pad, ja and text_codec != "ascii", text_codec, eol) if pad > 2 else b""
        return head + tp_head + intro + filler + att_head + enc + tail

    head = header_bytes + f"Content-Type: text/plain; charset={charset if codec != 'ascii' else 'us-ascii'}".encode() \
        + eol + f"Content-Transfer-Encoding: {cte}".encode() + eol + eol
    if cte == "base64":
        text = body_intro + "\n"
        need = max(0, pm.size - len(head))
        raw_need = (need * 57) // (76 + len(eol))
        payload = text.encode("utf-8")
        payload += _filler(rng, raw_need - len(payload), True, "utf-8", b"\n") if raw_need > len(payload) else b""
        enc = base64.encodebytes(payload)
        if eol != b"\n":
            enc = enc.replace(b"\n", eol)
        return head + enc
    body = body_intro.encode(codec).replace(b"\n", eol) + eol
    pad = pm.size - len(head) - len(body)
    if pad > 2:
        body += _filler(rng, pad, ja and codec != "ascii", codec, eol)
    return head + body


# ---------------------------------------------------------------------------------------------
# exports


def write_exports(inv: Inventory, out_dir, lab_config=None) -> Path:
    """Write the legacy inventory exports of `inv` into out_dir (see mailshift.inventory.exports).

    Files: systems.yaml, <system_id>.csv per source system (format per system), and
    buildings/<building_id>.yaml for the buildings that override the default spec.
    Ports come from `lab_config` (lab.config.LabConfig) when given, else the default lab ports.
    """
    import yaml

    from mailshift.inventory import exports

    out = Path(out_dir)
    (out / "buildings").mkdir(parents=True, exist_ok=True)
    systems = []
    for s in inv.systems:
        host, imap_port, pop3_port, max_conn = "127.0.0.1", None, None, s.max_connections
        if lab_config is not None:
            srv = lab_config.servers[s.lab_server]
            host = getattr(srv, "host", "127.0.0.1")
            imap_port = srv.imap_port
            pop3_port = getattr(srv, "pop3_port", None)
            max_conn = getattr(srv, "max_connections", 0) or s.max_connections
        else:
            base = 14300
            n = 1 + [x.id for x in inv.systems].index(s.id)
            imap_port, pop3_port = base + n, base + 10 + n
        systems.append({
            "id": s.id, "kind": s.kind, "imap_host": host, "imap_port": imap_port,
            "pop3_port": pop3_port, "tls": "none", "max_connections": max_conn,
            "airflow_conn_id": f"mailshift_{s.id.replace('-', '_')}", "export_format": s.export_format,
        })
    doc = {"systems": systems, "domains": [{"name": d, "mx_ttl": 3600} for d in inv.domains]}
    (out / "systems.yaml").write_text(
        "# Source systems of the legacy mail estate (generated by lab.corpus)\n"
        + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")

    buildings = {b.id: b for b in inv.buildings}
    households = {h.id: h for h in inv.households}
    for s in inv.systems:
        rows = []
        for mb in inv.mailboxes:
            if mb.source_system != s.id:
                continue
            h = households[mb.household_id]
            b = buildings[mb.building_id]
            rows.append(exports.ExportRow(
                building_id=b.id, building_name=b.name, domain=b.domain, household_id=h.id,
                room=h.room, contact_name=h.contact_name, phone=h.phone,
                postal_address=h.postal_address, address=mb.address, login=mb.login,
                protocol=mb.protocol, quota_mb=mb.quota_mb))
        (out / f"{s.id}.csv").write_bytes(exports.render(s.export_format, rows))

    for b in inv.buildings:
        if b.spec_override is not None:
            (out / "buildings" / f"{b.id}.yaml").write_text(
                f"# spec override for {b.id} ({b.name})\n"
                + yaml.safe_dump(b.spec_override, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out
