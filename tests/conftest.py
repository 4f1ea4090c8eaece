"""Shared pytest fixtures."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def lab_config():
    """The running local lab (`python -m lab up`), as `lab.config.LabConfig`.

    Skips when the lab has not been started, unless MAILSHIFT_REQUIRE_LAB=1 (CI), which fails.
    """
    from lab import proc
    from lab.config import LabConfig, LabNotConfigured

    try:
        cfg = LabConfig.load()
    except LabNotConfigured as e:
        if os.environ.get("MAILSHIFT_REQUIRE_LAB") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))
    if not proc.port_listening(cfg.dest.host, cfg.dest.imap_port):
        msg = f"lab at {cfg.root} is not running: run `python -m lab up`"
        if os.environ.get("MAILSHIFT_REQUIRE_LAB") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return cfg
