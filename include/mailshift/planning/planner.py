"""The wave planner: partitions buildings into waves. Pure logic (no database, no clock).

Input: one `BuildingLoad` per building (households, mailboxes, estimated bytes/messages, blackout
dates, operator pin, and `locked_wave` when the building is already in a wave that has started)
and `PlanLimits`. Output: `Plan(waves=[Wave(...)])`, every building in exactly one wave, with a
`Reason(code, text)` per building. The same input always gives the same plan (and `plan_hash`),
whatever the input order.

Rules, in this order:
1. **locked**: a building in a started wave (`locked_wave`) stays there. Started waves
   (`PlanLimits.closed_waves`) accept no other building.
2. **pinned**: the operator's pin (`pinned_wave`, from the building spec) is obeyed. Impossible
   pins are errors naming the building (pin on a blackout date, into a started wave, beyond
   `max_waves`), and so are pins that together break a wave's limits (a single pinned building
   may exceed the limits alone).
3. **pilot** (wave 1, when `pilot_buildings > 0`): the smallest eligible buildings, taken round
   robin over the source systems so that the pilot exercises every legacy system. Buildings pinned
   to wave 1 count towards the pilot. The pilot wave takes no other building.
4. **fill**: the other buildings, ordered by domain (smallest domain first, so a domain's
   buildings land in consecutive waves and its MX swap can follow its last wave) then building id,
   go into the first wave where they fit every limit and whose cutover window misses their
   blackout dates. Buildings are never split. A building that alone exceeds a limit goes alone
   into the first empty wave (**oversize**). The reason says which waves were skipped and why
   (**capacity** / **blackout**).

Dates: wave n starts (its cutover window opens) on `start_date + (n-1) * days_between` and the
window lasts `window_days` days; a building may not be in a wave whose window contains one of
its blackout dates.

Sizes: mailbox sizes are estimates. `read_mailbox_sizes(csv)` reads measured sizes
(`address,bytes[,messages]`); without one, `estimate_mailbox(quota_bytes)` gives
`DEFAULT_MAILBOX_BYTES` (200 MiB), capped by the mailbox quota, and messages =
bytes / `DEFAULT_MESSAGE_BYTES` (64 KiB).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mailshift.errors import PlanError  # noqa: F401  (raised here)

DEFAULT_MAILBOX_BYTES = 200 * 1024 * 1024
DEFAULT_MESSAGE_BYTES = 64 * 1024

REASON_CODES = ("locked", "pinned", "pilot", "fill", "capacity", "blackout", "oversize")


# -- inputs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildingLoad:
    id: str
    domain: str
    source_system: str
    households: int
    mailboxes: int
    bytes: int                      # estimated mailbox bytes (sum over the building)
    messages: int = 0               # estimated messages (sum)
    blackout_dates: frozenset[dt.date] = frozenset()
    pinned_wave: int | None = None  # operator's pin (building spec `pinned_wave`)
    locked_wave: int | None = None  # already in a started wave: never moved
    name: str = ""


@dataclass(frozen=True)
class SystemLimit:
    """Per-wave capacity of one source system (None = unlimited)."""
    max_mailboxes: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class PlanLimits:
    start_date: dt.date
    days_between: int = 7
    window_days: int = 1
    pilot_buildings: int = 5
    pilot_max_households: int | None = None      # None: max_households
    max_households: int | None = 10_000
    max_mailboxes: int | None = 12_500
    max_bytes: int | None = None
    system_limits: Mapping[str, SystemLimit] = field(default_factory=dict)
    closed_waves: frozenset[int] = frozenset()  # started waves: no new buildings
    max_waves: int = 1000

    def to_dict(self) -> dict:
        return {
            "start_date": self.start_date.isoformat(), "days_between": self.days_between,
            "window_days": self.window_days, "pilot_buildings": self.pilot_buildings,
            "pilot_max_households": self.pilot_max_households,
            "max_households": self.max_households, "max_mailboxes": self.max_mailboxes,
            "max_bytes": self.max_bytes,
            "system_limits": {k: {"max_mailboxes": v.max_mailboxes, "max_bytes": v.max_bytes}
                              for k, v in sorted(self.system_limits.items())},
            "closed_waves": sorted(self.closed_waves), "max_waves": self.max_waves,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> PlanLimits:
        """Inverse of to_dict (e.g. the limits of the latest stored plan)."""
        kw = dict(d)
        kw["start_date"] = dt.date.fromisoformat(kw["start_date"])
        kw["system_limits"] = {k: SystemLimit(v.get("max_mailboxes"), v.get("max_bytes"))
                               for k, v in (kw.get("system_limits") or {}).items()}
        kw["closed_waves"] = frozenset(kw.get("closed_waves") or ())
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in kw.items() if k in names})

    def wave_start(self, number: int) -> dt.date:
        return self.start_date + dt.timedelta(days=(number - 1) * self.days_between)

    def wave_window(self, number: int) -> frozenset[dt.date]:
        s = self.wave_start(number)
        return frozenset(s + dt.timedelta(days=i) for i in range(self.window_days))


def derive_system_limits(max_connections: Mapping[str, int], *, mailboxes_per_connection: int | None = None,
                         bytes_per_connection: int | None = None) -> dict[str, SystemLimit]:
    """Per-wave capacity proportional to each source system's connection limit."""
    return {s: SystemLimit(None if mailboxes_per_connection is None else n * mailboxes_per_connection,
                           None if bytes_per_connection is None else n * bytes_per_connection)
            for s, n in sorted(max_connections.items())}


_SUFFIX = {"": 1, "B": 1, "K": 1 << 10, "KB": 1000, "KIB": 1 << 10, "M": 1 << 20, "MB": 1000 ** 2,
           "MIB": 1 << 20, "G": 1 << 30, "GB": 1000 ** 3, "GIB": 1 << 30, "T": 1 << 40, "TB": 1000 ** 4,
           "TIB": 1 << 40}


def parse_size(text: str) -> int:
    """'500G' / '1.5TiB' / '2TB' / '123' -> bytes (K, M, G, T and KiB.. are binary; KB.. decimal)."""
    t = text.strip().upper().replace(" ", "").replace("_", "")
    num = t.rstrip("KMGTIB")
    unit = t[len(num):]
    if unit not in _SUFFIX or not num:
        raise ValueError(f"not a size: {text!r} (examples: 500G, 1.5TiB, 2000000)")
    return int(float(num) * _SUFFIX[unit])


# -- sizes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MailboxSize:
    bytes: int
    messages: int


def estimate_mailbox(quota_bytes: int | None, default_bytes: int = DEFAULT_MAILBOX_BYTES) -> MailboxSize:
    """Documented default when no size was measured: `default_bytes`, capped by the quota."""
    b = default_bytes if quota_bytes is None else min(quota_bytes, default_bytes)
    return MailboxSize(b, b // DEFAULT_MESSAGE_BYTES)


def read_mailbox_sizes(path) -> dict[str, MailboxSize]:
    """CSV `address,bytes[,messages]` (header required, UTF-8) -> {lowercased address: size}."""
    out: dict[str, MailboxSize] = {}
    problems: list[str] = []
    with Path(path).open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "address" not in cols or "bytes" not in cols:
            raise PlanError([f"{path}:1: header must have columns address,bytes[,messages], got {cols}"])
        for i, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            try:
                b = int(row["bytes"])
                m = int(row["messages"]) if row.get("messages") else b // DEFAULT_MESSAGE_BYTES
                if b < 0 or m < 0:
                    raise ValueError("negative")
            except ValueError:
                problems.append(f"{path}:{i}: bad bytes/messages {row.get('bytes')!r}/{row.get('messages')!r}")
                continue
            if not row.get("address"):
                problems.append(f"{path}:{i}: empty address")
                continue
            out[row["address"].lower()] = MailboxSize(b, m)
    if problems:
        raise PlanError(problems)
    return out


# -- outputs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    buildings: int = 0
    households: int = 0
    mailboxes: int = 0
    bytes: int = 0
    messages: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Reason:
    code: str   # one of REASON_CODES
    text: str


@dataclass(frozen=True)
class Wave:
    number: int
    name: str
    kind: str                              # pilot | regular
    start_date: dt.date
    buildings: tuple[str, ...]             # building ids, sorted
    totals: Totals
    totals_by_system: Mapping[str, Totals]  # sorted by system id
    reasons: Mapping[str, Reason]          # building id -> why it is in this wave
    notes: tuple[str, ...] = ()            # wave-level remarks (started, pins over limits, empty)

    def to_dict(self) -> dict:
        return {
            "number": self.number, "name": self.name, "kind": self.kind,
            "start_date": self.start_date.isoformat(), "totals": self.totals.to_dict(),
            "totals_by_system": {k: v.to_dict() for k, v in self.totals_by_system.items()},
            "notes": list(self.notes),
            "buildings": [{"id": b, "reason": self.reasons[b].code, "why": self.reasons[b].text}
                          for b in self.buildings],
        }


@dataclass(frozen=True)
class Plan:
    waves: tuple[Wave, ...]
    limits: PlanLimits
    plan_hash: str
    assignment: Mapping[str, int]          # building id -> wave number

    @property
    def totals(self) -> Totals:
        return _sum_totals(w.totals for w in self.waves)

    def wave_of(self, building_id: str) -> Wave:
        return self.waves[self.assignment[building_id] - 1]

    def to_dict(self) -> dict:
        return {"plan_hash": self.plan_hash, "limits": self.limits.to_dict(),
                "totals": self.totals.to_dict(), "waves": [w.to_dict() for w in self.waves]}

    def summary(self) -> dict:
        """Per-wave totals without the building lists (stored in wave_plan.summary)."""
        return {"totals": self.totals.to_dict(),
                "waves": [{k: v for k, v in w.to_dict().items() if k != "buildings"}
                          | {"buildings": len(w.buildings)} for w in self.waves]}


def _sum_totals(items: Iterable[Totals]) -> Totals:
    b = h = m = y = g = 0
    for t in items:
        b += t.buildings
        h += t.households
        m += t.mailboxes
        y += t.bytes
        g += t.messages
    return Totals(b, h, m, y, g)


# -- planning ---------------------------------------------------------------------------------
class _W:
    """A wave being filled."""
    __slots__ = ("number", "kind", "ids", "reasons", "h", "m", "b", "sys_m", "sys_b", "notes", "alone")

    def __init__(self, number: int, kind: str = "regular"):
        self.number = number
        self.kind = kind
        self.ids: list[str] = []
        self.reasons: dict[str, Reason] = {}
        self.h = self.m = self.b = 0
        self.sys_m: dict[str, int] = {}
        self.sys_b: dict[str, int] = {}
        self.notes: list[str] = []
        self.alone = False     # holds a building over the limits: takes no other building

    def add(self, bl: BuildingLoad, reason: Reason) -> None:
        self.ids.append(bl.id)
        self.reasons[bl.id] = reason
        self.h += bl.households
        self.m += bl.mailboxes
        self.b += bl.bytes
        s = bl.source_system
        self.sys_m[s] = self.sys_m.get(s, 0) + bl.mailboxes
        self.sys_b[s] = self.sys_b.get(s, 0) + bl.bytes


def _fmt(n: int) -> str:
    return f"{n:,}"


def _fmt_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class _Checker:
    def __init__(self, limits: PlanLimits):
        self.l = limits
        self.pilot_h = limits.pilot_max_households if limits.pilot_max_households is not None \
            else limits.max_households

    def violation(self, w: _W, bl: BuildingLoad) -> str | None:
        """Name of the first limit that adding `bl` to `w` would break (None: it fits)."""
        lim = self.l
        max_h = self.pilot_h if w.kind == "pilot" else lim.max_households
        if max_h is not None and w.h + bl.households > max_h:
            return "max_households"
        if lim.max_mailboxes is not None and w.m + bl.mailboxes > lim.max_mailboxes:
            return "max_mailboxes"
        if lim.max_bytes is not None and w.b + bl.bytes > lim.max_bytes:
            return "max_bytes"
        sl = lim.system_limits.get(bl.source_system)
        if sl is not None:
            s = bl.source_system
            if sl.max_mailboxes is not None and w.sys_m.get(s, 0) + bl.mailboxes > sl.max_mailboxes:
                return f"{s} max_mailboxes"
            if sl.max_bytes is not None and w.sys_b.get(s, 0) + bl.bytes > sl.max_bytes:
                return f"{s} max_bytes"
        return None

    def alone(self, bl: BuildingLoad) -> str | None:
        """Which limit the building breaks on its own, with the figures (None: fits a wave)."""
        lim = self.l
        checks = [("households", bl.households, lim.max_households, _fmt),
                  ("mailboxes", bl.mailboxes, lim.max_mailboxes, _fmt),
                  ("bytes", bl.bytes, lim.max_bytes, _fmt_bytes)]
        sl = lim.system_limits.get(bl.source_system)
        if sl is not None:
            checks += [(f"mailboxes of {bl.source_system}", bl.mailboxes, sl.max_mailboxes, _fmt),
                       (f"bytes of {bl.source_system}", bl.bytes, sl.max_bytes, _fmt_bytes)]
        over = [f"{f(v)} {what} > limit {f(mx)}" for what, v, mx, f in checks if mx is not None and v > mx]
        return "; ".join(over) or None


def _validate(buildings: list[BuildingLoad], limits: PlanLimits) -> list[str]:
    problems = []
    if limits.days_between < 1:
        problems.append(f"days_between must be >= 1, got {limits.days_between}")
    if limits.window_days < 1:
        problems.append(f"window_days must be >= 1, got {limits.window_days}")
    if limits.pilot_buildings < 0:
        problems.append(f"pilot_buildings must be >= 0, got {limits.pilot_buildings}")
    for name in ("pilot_max_households", "max_households", "max_mailboxes", "max_bytes"):
        v = getattr(limits, name)
        if v is not None and v < 1:
            problems.append(f"{name} must be >= 1 (or unset), got {v}")
    for s, sl in sorted(limits.system_limits.items()):
        for name in ("max_mailboxes", "max_bytes"):
            v = getattr(sl, name)
            if v is not None and v < 1:
                problems.append(f"source system {s}: {name} must be >= 1 (or unset), got {v}")
    seen: set[str] = set()
    for bl in buildings:
        if bl.id in seen:
            problems.append(f"building {bl.id}: listed twice")
        seen.add(bl.id)
        for what in ("households", "mailboxes", "bytes", "messages"):
            if getattr(bl, what) < 0:
                problems.append(f"building {bl.id}: negative {what}")
    return problems


class _Planner:
    """The state of one planning run: the waves being filled and the buildings placed so far.
    Each rule of the module docstring is one method, called in the documented order."""

    def __init__(self, blist: list[BuildingLoad], limits: PlanLimits):
        self.limits = limits
        self.blist = blist
        self.by_id = {bl.id: bl for bl in blist}
        self.chk = _Checker(limits)
        self.pilot = limits.pilot_buildings > 0
        self.waves: dict[int, _W] = {}
        self.placed: set[str] = set()

    def wave(self, n: int) -> _W:
        """Wave n, created on first use (a pin may name a wave beyond the others)."""
        w = self.waves.get(n)
        if w is None:
            w = self.waves[n] = _W(n, "pilot" if (self.pilot and n == 1) else "regular")
        return w

    def blocked(self, bl: BuildingLoad, n: int) -> list[dt.date]:
        """The building's blackout dates inside wave n's cutover window."""
        if not bl.blackout_dates:
            return []
        return sorted(self.limits.wave_window(n) & bl.blackout_dates)

    def rest(self) -> list[BuildingLoad]:
        return [bl for bl in self.blist if bl.id not in self.placed]

    # 1 -------------------------------------------------------------------------------------
    def place_locked(self) -> None:
        """A building in a started wave stays there, whatever its pin says now."""
        for bl in self.blist:
            if bl.locked_wave is None:
                continue
            note = ""
            if bl.pinned_wave is not None and bl.pinned_wave != bl.locked_wave:
                note = f"; its pin to wave {bl.pinned_wave} is ignored"
            self.wave(bl.locked_wave).add(bl, Reason("locked", f"already in wave {bl.locked_wave}, "
                                                               f"which has started: not moved{note}"))
            self.placed.add(bl.id)

    # 2 -------------------------------------------------------------------------------------
    def pin_problem(self, bl: BuildingLoad, n: int) -> str | None:
        """Why the operator's pin cannot be obeyed (None: it can)."""
        limits = self.limits
        if n < 1 or n > limits.max_waves:
            return f"building {bl.id}: pinned to wave {n}, outside 1..{limits.max_waves}"
        if n in limits.closed_waves:
            return (f"building {bl.id}: pinned to wave {n}, which has already started "
                    f"(no building can join it); change its pinned_wave")
        bad = self.blocked(bl, n)
        if bad:
            return (f"building {bl.id}: pinned to wave {n} (cutover window from "
                    f"{limits.wave_start(n)}), but {', '.join(map(str, bad))} is one of its "
                    f"blackout dates; change its pinned_wave or blackout_dates")
        return None

    def place_pinned(self, problems: list[str]) -> None:
        """Obey every possible pin; each impossible one is a problem naming the building."""
        for bl in self.blist:
            if bl.id in self.placed or bl.pinned_wave is None:
                continue
            problem = self.pin_problem(bl, bl.pinned_wave)
            if problem:
                problems.append(problem)
                continue
            self.wave(bl.pinned_wave).add(bl, Reason("pinned", f"pinned by the operator to wave {bl.pinned_wave}"))
            self.placed.add(bl.id)

    def check_pinned_waves(self, problems: list[str]) -> None:
        """Pins that together break a wave's limits are errors; one pinned building over the
        limits alone is allowed, and then its wave takes no other building."""
        chk = self.chk
        for n in sorted(self.waves):
            w = self.waves[n]
            pinned = [i for i in w.ids if w.reasons[i].code == "pinned"]
            if not pinned or len(w.ids) < 2:
                if pinned and chk.alone(self.by_id[pinned[0]]):
                    w.notes.append(f"pinned building {pinned[0]} alone exceeds the limits: "
                                   f"{chk.alone(self.by_id[pinned[0]])}")
                    w.alone = True
                continue
            trial = _W(n, w.kind)
            for i in w.ids:
                v = chk.violation(trial, self.by_id[i])
                if v is not None:
                    problems.append(f"wave {n}: the buildings pinned to it ({', '.join(pinned)}) do not fit "
                                    f"together: {v} exceeded when adding {i}; pin fewer buildings to "
                                    f"wave {n} or raise the limit")
                    break
                trial.add(self.by_id[i], w.reasons[i])

    # 3 -------------------------------------------------------------------------------------
    def fill_pilot(self) -> None:
        """The smallest eligible buildings, round robin over the source systems, so that the
        pilot exercises every legacy system."""
        w1 = self.wave(1)
        if 1 in self.limits.closed_waves:
            w1.notes.append("pilot has started: no building added")
            return
        need = self.limits.pilot_buildings - len(w1.ids)
        by_sys: dict[str, list[BuildingLoad]] = {}
        for bl in self.rest():
            if not self.blocked(bl, 1) and self.chk.alone(bl) is None:
                by_sys.setdefault(bl.source_system, []).append(bl)
        for lst in by_sys.values():
            lst.sort(key=lambda b: (b.households, b.mailboxes, b.bytes, b.id))
        queues = {s: 0 for s in sorted(by_sys)}
        while need > 0 and queues:
            for s in list(queues):
                if need <= 0:
                    break
                lst, i = by_sys[s], queues[s]
                while i < len(lst) and self.chk.violation(w1, lst[i]) is not None:
                    i += 1
                if i >= len(lst):
                    del queues[s]
                    continue
                bl = lst[i]
                queues[s] = i + 1
                w1.add(bl, Reason("pilot", f"smallest eligible building of source system "
                                           f"{s} ({_fmt(bl.households)} households)"))
                self.placed.add(bl.id)
                need -= 1
        if need > 0:
            w1.notes.append(f"pilot has {len(w1.ids)} of {self.limits.pilot_buildings} buildings: "
                            f"no other building fits the pilot limits")

    # 4 -------------------------------------------------------------------------------------
    def first_wave_for(self, bl: BuildingLoad, over: str | None) -> tuple[int, Counter, list[int]]:
        """The first wave that can take `bl`, with the waves skipped (why -> how many) and the
        waves skipped for its blackout dates."""
        limits = self.limits
        skipped: Counter = Counter()
        blackout_waves: list[int] = []
        n = 2 if self.pilot else 1
        while True:
            if n > limits.max_waves:
                raise PlanError([f"building {bl.id}: no wave up to max_waves {limits.max_waves} "
                                 f"can take it ({dict(skipped)})"])
            w = self.waves.get(n)
            if n in limits.closed_waves or (w is not None and w.kind == "pilot"):
                why = None
            elif w is not None and w.alone:
                why = "occupied by an oversize building"
            elif self.blocked(bl, n):
                why = "blackout"
                blackout_waves.append(n)
            elif over is not None:
                why = "occupied" if w is not None and w.ids else ""
            else:
                why = (self.chk.violation(w, bl) if w is not None else None) or ""
            if why == "":
                return n, skipped, blackout_waves
            if why is not None:
                skipped[why] += 1
            n += 1

    def fill_reason(self, over: str | None, skipped: Counter, blackout_waves: list[int]) -> Reason:
        """Why the building is where it is, so an operator can check the plan building by building."""
        if over is not None:
            return Reason("oversize", f"alone in its wave: {over} (buildings are kept whole)")
        parts = []
        cap = {k: c for k, c in skipped.items() if k != "blackout"}
        if cap:
            parts.append(f"{sum(cap.values())} earlier wave(s) full ("
                         + ", ".join(f"{k} x{c}" if c > 1 else k for k, c in sorted(cap.items())) + ")")
        if blackout_waves:
            parts.append("wave(s) " + ", ".join(f"{x} ({self.limits.wave_start(x)})" for x in blackout_waves[:3])
                         + (" ..." if len(blackout_waves) > 3 else "") + " on its blackout dates")
        if not parts:
            return Reason("fill", "first wave with room (order: domain, building id)")
        return Reason("capacity" if cap else "blackout", "; ".join(parts) + "; first wave with room")

    def fill(self) -> None:
        """Domain by domain (smallest domain first, so a domain's MX swap can follow its last
        wave), then building id, into the first wave with room."""
        rest = self.rest()
        dom_h: dict[str, int] = {}
        for bl in rest:
            dom_h[bl.domain] = dom_h.get(bl.domain, 0) + bl.households
        rest.sort(key=lambda b: (dom_h[b.domain], b.domain, b.id))
        for bl in rest:
            over = self.chk.alone(bl)
            n, skipped, blackout_waves = self.first_wave_for(bl, over)
            self.wave(n).add(bl, self.fill_reason(over, skipped, blackout_waves))
            if over is not None:
                self.waves[n].alone = True

    # 5 -------------------------------------------------------------------------------------
    def result_wave(self, n: int, assignment: dict[str, int]) -> Wave:
        """Wave n as the plan shows it (an empty one if nothing landed there)."""
        limits = self.limits
        w = self.waves.get(n) or _W(n, "pilot" if (self.pilot and n == 1) else "regular")
        if not w.ids:
            w.notes.append("empty: nothing needs this wave (a later wave is pinned or started)")
        if n in limits.closed_waves:
            w.notes.insert(0, "started: only its own buildings")
        per_sys: dict[str, list[int]] = {}
        for i in w.ids:
            bl = self.by_id[i]
            t = per_sys.setdefault(bl.source_system, [0, 0, 0, 0, 0])
            t[0] += 1
            t[1] += bl.households
            t[2] += bl.mailboxes
            t[3] += bl.bytes
            t[4] += bl.messages
            assignment[i] = n
        by_system = {s: Totals(*per_sys[s]) for s in sorted(per_sys)}
        ids = tuple(sorted(w.ids))
        return Wave(n, "pilot" if w.kind == "pilot" else f"wave {n}", w.kind, limits.wave_start(n),
                    ids, _sum_totals(by_system.values()), by_system,
                    {i: w.reasons[i] for i in ids}, tuple(w.notes))

    def result(self) -> Plan:
        """The plan; gaps (a pin beyond the last needed wave) become empty waves."""
        last = max(self.waves) if self.waves else 0
        assignment: dict[str, int] = {}
        out = [self.result_wave(n, assignment) for n in range(1, last + 1)]
        body = {"limits": self.limits.to_dict(), "waves": [w.to_dict() for w in out]}
        h = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        return Plan(tuple(out), self.limits, h, assignment)


def plan_waves(buildings: Iterable[BuildingLoad], limits: PlanLimits) -> Plan:
    """Partition `buildings` into waves (see the module docstring). Raises PlanError."""
    blist = sorted(buildings, key=lambda b: b.id)
    problems = _validate(blist, limits)
    if problems:
        raise PlanError(problems)
    p = _Planner(blist, limits)
    p.place_locked()
    p.place_pinned(problems)
    p.check_pinned_waves(problems)
    if problems:
        raise PlanError(problems)
    if p.pilot:
        p.fill_pilot()
    p.fill()
    return p.result()


# -- presentation -----------------------------------------------------------------------------
def render_table(plan: Plan, loads: Mapping[str, BuildingLoad] | None = None, *, brief: bool = False) -> str:
    """Human-readable plan: a header line per wave, its per-system totals, then (unless `brief`)
    one row per building with the reason."""
    lines = []
    t = plan.totals
    lines.append(f"plan {plan.plan_hash[:12]}: {len(plan.waves)} waves, {_fmt(t.buildings)} buildings, "
                 f"{_fmt(t.households)} households, {_fmt(t.mailboxes)} mailboxes, {_fmt_bytes(t.bytes)}")
    for w in plan.waves:
        wt = w.totals
        lines.append("")
        lines.append(f"== wave {w.number} ({w.kind}) from {w.start_date}: {_fmt(wt.buildings)} buildings, "
                     f"{_fmt(wt.households)} households, {_fmt(wt.mailboxes)} mailboxes, {_fmt_bytes(wt.bytes)}, "
                     f"~{_fmt(wt.messages)} messages")
        for s, st in w.totals_by_system.items():
            lines.append(f"   {s:<12} {_fmt(st.buildings):>7} buildings {_fmt(st.mailboxes):>9} mailboxes "
                         f"{_fmt_bytes(st.bytes):>11}")
        for note in w.notes:
            lines.append(f"   note: {note}")
        if brief or not w.buildings:
            continue
        lines.append(f"   {'building':<12} {'domain':<24} {'system':<10} {'househ.':>8} {'mailb.':>8} "
                     f"{'bytes':>11}  reason")
        for bid in w.buildings:
            r = w.reasons[bid]
            bl = loads.get(bid) if loads else None
            if bl is not None:
                lines.append(f"   {bid:<12} {bl.domain:<24} {bl.source_system:<10} {_fmt(bl.households):>8} "
                             f"{_fmt(bl.mailboxes):>8} {_fmt_bytes(bl.bytes):>11}  {r.code}: {r.text}")
            else:
                lines.append(f"   {bid:<12} {r.code}: {r.text}")
    return "\n".join(lines)
