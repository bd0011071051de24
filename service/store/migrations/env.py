"""Alembic environment: run migrations on the connection (or URL) that ``service.governance.database`` gives.

Online only on a connection passed in ``config.attributes["connection"]`` (the caller holds the
PostgreSQL advisory lock on it), or on ``sqlalchemy.url``; offline (``--sql``) writes the SQL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, MetaData, create_engine

from service.store.schema import auth_metadata
from service.store.schema import metadata as audit_metadata

__all__ = ["run_offline", "run_online", "target_metadata"]


def target_metadata() -> list[MetaData]:
    """Every table the migrations manage, for autogenerate and the schema-drift test."""
    return [audit_metadata, auth_metadata]


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )


def run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no connection and no sqlalchemy.url for the migrations")
    engine = create_engine(url)
    try:
        with engine.begin() as own:
            _configure(own)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
