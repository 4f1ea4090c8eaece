"""The ledger: PostgreSQL schema, migrations, state codes.

- ``mailshift.ledger.migrate``: ``upgrade(dsn)``, ``current(dsn)``, ``status(dsn)``
- ``mailshift.ledger.states``: message state / transform codes, sys_flags bits
"""
