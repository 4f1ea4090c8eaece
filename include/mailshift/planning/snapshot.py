"""The inventory snapshot: what the building DAG factory reads at DAG-parse time (never the DB).

Written by `mailshift plan` into a directory (default `$MAILSHIFT_SNAPSHOT_DIR`, else
`<repo>/include/snapshot`):

    manifest.json     {"format": "mailshift-snapshot", "version": 1, "generated_at", "plan_id",
                       "plan_hash", "shards": N, "shard_function", "buildings", "mailboxes",
                       "source_systems": {id: {"pool", "max_connections"}},
                       "waves": [{"number", "name", "kind", "start_date", "buildings"}],
                       "files": [{"name", "shard", "buildings", "mailboxes", "sha256"}]}
    shard_00.json ... {"format": "mailshift-snapshot-shard", "version": 1, "plan_id", "plan_hash",
                       "shard": k, "shards": N, "protocols": {"imap": "i", "pop3": "p"},
                       "buildings": [{"id", "name", "domain", "source_system", "pool", "wave",
                                      "max_connections", "mailbox_ids": [int, ...],
                                      "addresses": [str, ...], "protocols": "iip..."}]}

Mailboxes are stored as columns (one letter per mailbox for the protocol): a shard of ~310
buildings / ~31,000 mailboxes is ~1.2 MB and parses in about a third of the time of
[id, address, protocol] rows. `SnapshotBuilding.mailboxes` builds the tuples on first use.

A building lives in shard `shard_of(id, N)` = blake2b-64 of the UTF-8 id, big-endian, mod N
(stable across processes and Python versions, unlike `hash()`). Buildings in a shard are sorted
by id, mailboxes by id; shard files hold no timestamp, so the same plan gives byte-identical
shard files (unchanged files are not rewritten). Files are written to a temporary name and
renamed; the manifest last. A reader checks that a shard's plan_hash equals the manifest's and
re-reads once if a writer was caught in the middle (`SnapshotError` otherwise).
"""
from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from mailshift import settings
from mailshift.errors import SnapshotError  # noqa: F401  (raised here)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_SHARDS = 32  # 5,000 buildings: ~156 per shard (bench/README.md "DAG parsing")
SHARD_FUNCTION = "blake2b(building_id utf-8, digest_size=8) big-endian mod shards"


class SnapshotMailbox(NamedTuple):
    id: int
    address: str
    protocol: str


class SnapshotBuilding:
    """One building of the snapshot. Mailboxes are kept as columns (`mailbox_ids`, `addresses`,
    `protocols`: one letter per mailbox, i = imap, p = pop3) and turned into `SnapshotMailbox`
    tuples only when `mailboxes` is read, so loading a shard stays cheap."""

    __slots__ = ("id", "name", "domain", "source_system", "pool", "wave", "max_connections",
                 "mailbox_ids", "addresses", "protocols", "_mailboxes")
    FIELDS = ("id", "name", "domain", "source_system", "pool", "wave", "max_connections", "mailboxes")

    def __init__(self, id: str, name: str, domain: str, source_system: str, pool: str, wave: int | None,
                 max_connections: int | None, mailboxes: Iterable[SnapshotMailbox] = ()):
        self.id, self.name, self.domain, self.source_system = id, name, domain, source_system
        self.pool, self.wave, self.max_connections = pool, wave, max_connections
        mbs = tuple(sorted(mailboxes, key=lambda m: m.id))
        self.mailbox_ids = [m.id for m in mbs]
        self.addresses = [m.address for m in mbs]
        self.protocols = "".join(_PROTO_CODE[m.protocol] for m in mbs)
        self._mailboxes = mbs

    @classmethod
    def from_columns(cls, id: str, name: str, domain: str, source_system: str, pool: str, wave: int | None,
                     max_connections: int | None, mailbox_ids: list[int], addresses: list[str],
                     protocols: str) -> SnapshotBuilding:
        """From mailbox columns sorted by id (protocols: one letter per mailbox, i/p)."""
        if not len(mailbox_ids) == len(addresses) == len(protocols):
            raise ValueError(f"building {id}: mailbox columns of different lengths")
        return cls._from_doc({"id": id, "name": name, "domain": domain, "source_system": source_system,
                              "pool": pool, "wave": wave, "max_connections": max_connections,
                              "mailbox_ids": mailbox_ids, "addresses": addresses, "protocols": protocols})

    @classmethod
    def _from_doc(cls, b: dict) -> SnapshotBuilding:
        self = cls.__new__(cls)
        self.id, self.name, self.domain, self.source_system = b["id"], b["name"], b["domain"], b["source_system"]
        self.pool, self.wave, self.max_connections = b["pool"], b["wave"], b["max_connections"]
        self.mailbox_ids, self.addresses, self.protocols = b["mailbox_ids"], b["addresses"], b["protocols"]
        self._mailboxes = None
        return self

    @property
    def mailboxes(self) -> tuple[SnapshotMailbox, ...]:
        if self._mailboxes is None:
            self._mailboxes = tuple(SnapshotMailbox(i, a, _PROTO_NAME[p])
                                    for i, a, p in zip(self.mailbox_ids, self.addresses, self.protocols,
                                                       strict=True))
        return self._mailboxes

    @property
    def mailbox_count(self) -> int:
        return len(self.mailbox_ids)

    def _key(self) -> tuple:
        return (self.id, self.name, self.domain, self.source_system, self.pool, self.wave, self.max_connections,
                list(self.mailbox_ids), list(self.addresses), self.protocols)

    def __eq__(self, other) -> bool:
        return isinstance(other, SnapshotBuilding) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return (f"SnapshotBuilding({self.id!r}, wave={self.wave}, pool={self.pool!r}, "
                f"mailboxes={len(self.mailbox_ids)})")

    def replace(self, **kw) -> SnapshotBuilding:
        vals = {f: getattr(self, f) for f in self.FIELDS}
        vals.update(kw)
        return SnapshotBuilding(**vals)

    def to_doc(self) -> dict:
        return {"id": self.id, "name": self.name, "domain": self.domain, "source_system": self.source_system,
                "pool": self.pool, "wave": self.wave, "max_connections": self.max_connections,
                "mailbox_ids": self.mailbox_ids, "addresses": self.addresses, "protocols": self.protocols}


_PROTO_CODE = {"imap": "i", "pop3": "p"}
_PROTO_NAME = {v: k for k, v in _PROTO_CODE.items()}


def default_dir() -> Path:
    return settings.snapshot_dir()


def pool_name(source_system: str) -> str:
    """Airflow pool of a source system: `src_<id with - as _>`."""
    return "src_" + source_system.replace("-", "_")


def shard_of(building_id: str, shards: int) -> int:
    d = hashlib.blake2b(building_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(d, "big") % shards


def split_shards(buildings: Iterable[SnapshotBuilding], shards: int) -> list[list[SnapshotBuilding]]:
    """Buildings per shard (each list sorted by building id)."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    out: list[list[SnapshotBuilding]] = [[] for _ in range(shards)]
    for b in buildings:
        out[shard_of(b.id, shards)].append(b)
    for lst in out:
        lst.sort(key=lambda b: b.id)
    return out


def shard_file(shard: int) -> str:
    return f"shard_{shard:02d}.json"


def _write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def write_snapshot(directory, buildings: Iterable[SnapshotBuilding], *, plan_id: int | None, plan_hash: str,
                   waves: list[dict] | None = None, source_systems: dict[str, int | None] | None = None,
                   shards: int = DEFAULT_SHARDS, generated_at: dt.datetime | None = None) -> dict:
    """Write the sharded snapshot; returns the manifest. `waves`: [{number, name, kind,
    start_date}]; `source_systems`: {id: max_connections}."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    blist = list(buildings)
    parts = split_shards(blist, shards)
    files = []
    counts_per_wave: dict[int, int] = {}
    for b in blist:
        counts_per_wave[b.wave] = counts_per_wave.get(b.wave, 0) + 1
    for k, lst in enumerate(parts):
        doc = {"format": "mailshift-snapshot-shard", "version": FORMAT_VERSION, "plan_id": plan_id,
               "plan_hash": plan_hash, "shard": k, "shards": shards, "protocols": _PROTO_CODE,
               "buildings": [b.to_doc() for b in lst]}
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        _write_if_changed(d / shard_file(k), data)
        files.append({"name": shard_file(k), "shard": k, "buildings": len(lst),
                      "mailboxes": sum(len(b.mailbox_ids) for b in lst),
                      "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    systems = source_systems if source_systems is not None else {b.source_system: None for b in blist}
    manifest = {
        "format": "mailshift-snapshot", "version": FORMAT_VERSION,
        "generated_at": (generated_at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "plan_id": plan_id, "plan_hash": plan_hash, "shards": shards, "shard_function": SHARD_FUNCTION,
        "buildings": len(blist), "mailboxes": sum(f["mailboxes"] for f in files),
        "source_systems": {s: {"pool": pool_name(s), "max_connections": systems[s]} for s in sorted(systems)},
        "waves": [dict(w, buildings=counts_per_wave.get(w["number"], 0)) for w in (waves or [])],
        # the cutover DAG of a domain waits for the Asset events of exactly these buildings
        "domains": {dom: sorted(b.id for b in blist if b.domain == dom) for dom in sorted({b.domain for b in blist})},
        "files": files,
    }
    _write_if_changed(d / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8"))
    # shards of an earlier, larger shard count
    for p in d.glob("shard_*.json"):
        try:
            k = int(p.stem.split("_", 1)[1])
        except ValueError:
            continue
        if k >= shards:
            p.unlink(missing_ok=True)
    return manifest


def read_manifest(directory) -> dict:
    """The manifest; SnapshotError (never a half-read plan) when missing, broken or of another version."""
    path = Path(directory) / MANIFEST
    try:
        m = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot at {path}: run `mailshift plan`") from None
    except ValueError as exc:
        raise SnapshotError(f"{path}: not valid JSON: {exc}") from None
    if m.get("format") != "mailshift-snapshot" or m.get("version") != FORMAT_VERSION:
        raise SnapshotError(f"{path}: format {m.get('format')!r} version {m.get('version')!r}, "
                            f"expected mailshift-snapshot version {FORMAT_VERSION}")
    return m


def _decode(doc: dict) -> list[SnapshotBuilding]:
    return [SnapshotBuilding._from_doc(b) for b in doc["buildings"]]


def load_shard(directory, shard: int, *, manifest: dict | None = None) -> list[SnapshotBuilding]:
    """The buildings of one shard (sorted by id). Reads the manifest (small) and one shard file."""
    d = Path(directory)
    for attempt in (0, 1):
        m = manifest if (manifest is not None and attempt == 0) else read_manifest(d)
        if not 0 <= shard < m["shards"]:
            raise SnapshotError(f"{d}: shard {shard} out of range 0..{m['shards'] - 1}")
        path = d / shard_file(shard)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SnapshotError(f"{path}: missing (snapshot has {m['shards']} shards)") from None
        enabled = gc.isenabled()
        gc.disable()
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise SnapshotError(f"{path}: not valid JSON: {exc}") from None
        finally:
            if enabled:
                gc.enable()
        if doc.get("plan_hash") == m["plan_hash"] and doc.get("shards") == m["shards"]:
            # tens of thousands of acyclic tuples: don't let the cyclic GC walk the caller's heap
            # (an Airflow parser process holds many objects) several times while decoding
            enabled = gc.isenabled()
            gc.disable()
            try:
                return _decode(doc)
            finally:
                if enabled:
                    gc.enable()
    raise SnapshotError(f"{path}: plan {str(doc.get('plan_hash'))[:12]} does not match the manifest's "
                        f"{str(m['plan_hash'])[:12]} (snapshot being rewritten?)")


def load_all(directory) -> list[SnapshotBuilding]:
    """Every building of the snapshot, sorted by id (tools and tests; DAG files load one shard)."""
    m = read_manifest(directory)
    out: list[SnapshotBuilding] = []
    for k in range(m["shards"]):
        out.extend(load_shard(directory, k, manifest=m))
    out.sort(key=lambda b: b.id)
    return out
