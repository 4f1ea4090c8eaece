"""Progress on the terminal for long commands (copy, verify, inventory load, audit of POP3 logs).

A bar with done/total, rate and ETA (rich.progress) on stderr; a spinner with the elapsed time
when the total is unknown. Off when stderr is not a terminal or the command prints JSON for a
machine (`enabled=False`), so logs and pipes never get control characters; `force=True` (the
commands' `--progress`) turns it on anyway.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager


def wanted(json_output: bool = False, force: bool = False) -> bool:
    """Show progress? Only on a terminal, never with --json, unless forced."""
    if force:
        return True
    return not json_output and sys.stderr.isatty()


def wanted_by(args) -> bool:
    """From a command's `--progress/--no-progress` (None: decide by the terminal) and `--json`."""
    choice = getattr(args, "progress", None)
    if choice is not None:
        return bool(choice)
    return wanted(json_output=bool(getattr(args, "json", False)))


def add_flag(parser) -> None:
    import argparse

    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar with rate and ETA on stderr (default: only when stderr is a terminal)")


class Bar:
    """One task of a rich Progress; every method is a no-op when disabled."""

    def __init__(self, progress, task):
        self._p, self._t = progress, task

    def advance(self, n: float = 1, **fields) -> None:
        if self._p is not None:
            self._p.update(self._t, advance=n, **fields)

    def update(self, completed: float | None = None, total: float | None = None, **fields) -> None:
        if self._p is not None:
            kw = {k: v for k, v in (("completed", completed), ("total", total)) if v is not None}
            self._p.update(self._t, **kw, **fields)


def _columns(unit: str, total_known: bool):
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    cols = [SpinnerColumn(), TextColumn("{task.description}")]
    if total_known:
        cols += [BarColumn(), DownloadColumn() if unit == "bytes" else MofNCompleteColumn()]
    cols += [TransferSpeedColumn() if unit == "bytes" else TextColumn("{task.fields[speed_text]}"),
             TextColumn("{task.fields[note]}"), TimeElapsedColumn()]
    if total_known:
        cols += [TextColumn("ETA"), TimeRemainingColumn()]
    return cols


@contextmanager
def progress(description: str, total: float | None = None, *, unit: str = "messages", enabled: bool = True):
    """`with progress("verifying B-1", total=40, unit="mailboxes") as bar: bar.advance()`."""
    if not enabled:
        yield Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(*_columns(unit, total is not None), console=Console(file=sys.stderr), transient=False,
                  refresh_per_second=4) as p:
        task = p.add_task(description, total=total, note="", speed_text="")
        bar = _RateBar(p, task, unit)
        yield bar


class _RateBar(Bar):
    """A Bar that also shows `<rate> <unit>/s` for non-byte units."""

    def __init__(self, progress, task, unit: str):
        super().__init__(progress, task)
        self.unit = unit

    def _speed(self) -> str:
        speed = self._p.tasks[self._t].speed if self._p is not None else None
        return f"{speed:,.1f} {self.unit}/s" if speed else ""

    def advance(self, n: float = 1, **fields) -> None:
        super().advance(n, **fields)
        super().update(speed_text=self._speed())

    def update(self, completed: float | None = None, total: float | None = None, **fields) -> None:
        super().update(completed, total, **fields)
        if self._p is not None:
            self._p.update(self._t, speed_text=self._speed())


class CopyProgress:
    """The copier's progress callback (`copy_one(..., progress=CopyProgress(bar, expected))`).

    The denominator is the mailbox's message count at the source, `expected`, counted before
    the pass starts (`cli.copy.source_count`); the copier's own count (`summary.source_messages`)
    grows folder by folder, so it only raises the total when the source grew meanwhile or could
    not be counted. Done = every message the pass has settled: copied, already at the
    destination, refused or stored altered (the note counts the last two)."""

    def __init__(self, bar: Bar, expected: int | None = None):
        self.bar, self.expected = bar, expected or 0

    def __call__(self, s) -> None:
        refused, altered = getattr(s, "refused", 0), getattr(s, "altered", 0)
        done = s.copied + s.already + refused + altered
        total = max(s.source_messages, self.expected, done)
        note = ", ".join(f"{label} {n}" for label, n in (("refused", refused), ("altered", altered)) if n)
        self.bar.update(completed=done, total=total, note=note)
