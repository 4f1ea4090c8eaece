"""Named points where a test can make the process die, to prove crash safety.

Production code calls `hit("name")` at the moments that matter for exactly-once (after the
intents commit, after an APPEND before its ledger commit, ...). Nothing happens unless a test
armed the point, in-process with `arm()` or through MAILSHIFT_FAILPOINTS="name=N,other=M"
(die with SIGKILL on the N-th hit), so the cost in production is one dict lookup.
"""

from __future__ import annotations

import os
import signal

from mailshift import settings

_armed: dict[str, int] = {}


def _from_env() -> None:
    spec = settings.get(settings.FAILPOINTS, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, count = item.partition("=")
        _armed[name] = int(count or 1)


def arm(name: str, countdown: int = 1) -> None:
    _armed[name] = countdown


def disarm() -> None:
    _armed.clear()


def hit(name: str) -> None:
    if not _armed or name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] <= 0:
        os.kill(os.getpid(), signal.SIGKILL)


_from_env()
