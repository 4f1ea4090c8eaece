"""Fixtures shared by the integration tests."""

from __future__ import annotations

import psycopg2
import pytest

from support.mail import fresh_database


@pytest.fixture
def db(lab_config):
    """A connection to a fresh, migrated mailshift database in the lab (dropped afterwards)."""
    with fresh_database(lab_config) as dsn:
        conn = psycopg2.connect(dsn)
        yield conn
        conn.close()


@pytest.fixture
def fresh_probes(tmp_path, monkeypatch):
    """Each test probes session identity afresh, with its own probe cache (never the shared
    ~/.cache one): the real-server tests change who may log in between tests."""
    from mailshift.protocols.imap.session import forget_probes

    monkeypatch.setenv("MAILSHIFT_IDENTITY_PROBE_CACHE", str(tmp_path / "probe-cache"))
    forget_probes()
    yield
    forget_probes()
