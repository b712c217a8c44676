"""Alembic's environment: migrate the connection the store opened (`sql_state.migrate`), or,
run from the `alembic` command line, the database at the config's `sqlalchemy.url`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from spcs.management.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or migrate through spcs.management.sql_state")
    with create_engine(url).connect() as opened:
        _run(opened)
        opened.commit()


main()
