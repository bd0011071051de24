"""Fixtures for the governance tests: an audit database on SQLite *and* on the real PostgreSQL.

``database_url`` is parametrized: every test that takes it runs twice, the PostgreSQL run marked
``postgres`` and skipped only when no server answers on 127.0.0.1:5432. Each PostgreSQL run gets
a database of its own, dropped afterwards (the shared server is never stopped).
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.sql import Select

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.fhir_builders import NOW, SNOMED, calf_pain, finding, hook_request, observation, quantity
from tests.signing import dev_client

PG_ADMIN = os.environ.get("CALF_CDS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RULE_PACKS = Path(__file__).parents[2] / "data" / "rule-packs"
ACTIVE = "calf-pain@0.1.0"
CANDIDATE = "calf-pain@0.1.1"

# Patients whose cards the candidate pack 0.1.1 changes, or not (see tests/data/rule-packs/README.md).
DVT = [
    calf_pain(),
    finding("calf-circumference-difference", quantity(3.4, "cm")),
    finding("entire-leg-swollen"),
]
CLAUDICATION = [calf_pain(), finding("exertional-leg-pain"), finding("relief-standing-still")]
CRAMP = [calf_pain(), observation(SNOMED, "55300003", valueBoolean=True)]
STRAIN = [calf_pain(), finding("acute-onset-during-sport-with-pop"), finding("muscle-belly-tenderness")]
SLIGHT_SWELLING = [calf_pain(), finding("calf-circumference-difference", quantity(0.5, "cm"))]


@pytest.fixture(autouse=True)
def _no_operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads CALF_CDS_* like `serve` does: start every test from none but the active pack.

    These tests compare the released 0.1.0 with the candidate fixture 0.1.1, so they pin 0.1.0 as
    the active pack whatever the default becomes when later versions are released.
    """
    for name in list(os.environ):
        if name.startswith("CALF_CDS_") and not name.startswith("CALF_CDS_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CALF_CDS_ACTIVE_PACK", ACTIVE)


@cache
def postgres_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)


def sqlalchemy_url(database: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; yields its name and drops it afterwards."""
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"calf_test_{uuid.uuid4().hex[:12]}"
    with admin() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin() as connection:
            connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty audit database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    name: str = request.getfixturevalue("postgres_database")
    return sqlalchemy_url(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def gov_settings(tmp_path: Path, database_url: str) -> Settings:
    """The service on ``database_url``, with the candidate pack 0.1.1 running in shadow mode."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=SecretStr(database_url),
        rules_dir=RULE_PACKS,
        shadow_packs=(CANDIDATE,),
        db_migrate="upgrade",  # as an init job would; `auto` only verifies on PostgreSQL
        dev=True,  # calls are signed by the development issuer (tests/signing.py)
    )


@pytest.fixture
def gov_client(gov_settings: Settings) -> Iterator[TestClient]:
    with dev_client(create_app(gov_settings, clock=lambda: NOW), gov_settings) as client:
        yield client


def call(client: TestClient, resources: list[dict[str, Any]], patient_id: str = "p1") -> list[dict[str, Any]]:
    """POST one hook call; returns its cards."""
    resources = [dict(r, subject={"reference": f"Patient/{patient_id}"}) for r in resources]
    body = hook_request(resources, patient_id=patient_id)
    response = client.post("/cds-services/calf-pain", json=body)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


def count(engine: Engine, query: Select[Any]) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(query.subquery())) or 0)


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the audit trail")
        time.sleep(0.05)
