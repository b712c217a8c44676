"""Alembic migrations of the management service's database, one history for every engine.

`spcs.management.sql_state.migrate` runs them when the store opens (no alembic.ini: the
script location is this directory, shipped in the package). To change the schema, change
`spcs.management.schema` and add `versions/rNNNN_<what>.py` with `revision = "NNNN"`,
`down_revision` the previous one and an `upgrade()` that makes the same change with
`alembic.op`; tests/management/test_state_store.py checks that a migrated database matches
`schema.metadata` on SQLite and MariaDB.
"""
