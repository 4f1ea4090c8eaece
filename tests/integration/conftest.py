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
