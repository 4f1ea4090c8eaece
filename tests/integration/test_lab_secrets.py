"""The lab's secrets stay readable by their owner only: lab.json, env and the Airflow environment
that `make demo` / `make test` write (lab-only credentials, but credentials)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_secret_files_are_private(lab_config):
    root = Path(lab_config.root)
    files = [root / "lab.json", root / "env"] + [p for p in [root / "airflow.env"] if p.exists()]
    assert len(files) >= 2
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is mode {mode:o}: group/others may read lab credentials"
