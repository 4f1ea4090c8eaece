"""Printing helpers shared by the commands: machine-readable output goes to stdout (JSON or
CSV), counts of what was written elsewhere go to stderr, so stdout stays pipeable."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable


def print_json(obj) -> None:
    """Indented JSON on stdout; dates, decimals and paths as strings."""
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def write_csv(rows: list[dict], columns: list[str]) -> None:
    """CSV with a header on stdout; None becomes an empty cell, extra keys are dropped."""
    w = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})


def csv_to(target: str, write: Callable, rows: list, what: str) -> None:
    """CSV to stdout ("-") or to a file, saying on stderr how many rows went where."""
    if target == "-":
        write(rows, sys.stdout)
        return
    with open(target, "w", newline="", encoding="utf-8") as f:
        write(rows, f)
    print(f"wrote {len(rows)} {what} to {target}", file=sys.stderr)
