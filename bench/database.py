"""A PostgreSQL database of the benchmarks' own on the server at 127.0.0.1:5432: created fresh with
the audit schema, counted, dropped. Each benchmark names its own database, so that it never
touches another's (or the tests' schemas in ``test``)."""

from __future__ import annotations

import psycopg

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def reachable(admin: str = ADMIN) -> bool:
    try:
        with psycopg.connect(admin, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def create(admin: str, name: str) -> str:
    """A fresh database ``name`` with the audit tables; its SQLAlchemy URL."""
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")
    from sqlalchemy import create_engine

    from service.governance.database import upgrade

    params = psycopg.conninfo.conninfo_to_dict(psycopg.conninfo.make_conninfo(admin, dbname=name))
    sqlalchemy_url = (
        f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}"
        f":{params.get('port', 5432)}/{name}"
    )
    engine = create_engine(sqlalchemy_url)
    upgrade(engine)  # what `calf-cds db upgrade` does; the service only verifies the schema on PostgreSQL
    engine.dispose()
    return sqlalchemy_url


def audit_rows(admin: str, name: str) -> int:
    with psycopg.connect(psycopg.conninfo.make_conninfo(admin, dbname=name)) as connection:
        row = connection.execute("SELECT count(*) FROM hook_calls").fetchone()
    return int(row[0]) if row else 0


def backends(admin: str, name: str) -> list[int]:
    """Pids of the PostgreSQL backends connected to ``name``."""
    with psycopg.connect(admin) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
