"""Liveness and readiness: ready when rules are loaded and audit records can go to the store or the spool."""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service.app import create_app
from service.config import Settings
from service.store import probe as health
from service.store.probe import StoreProbe
from service.store.schema import make_engine

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def test_healthz_is_liveness_only(client: TestClient) -> None:
    """/healthz answers 200 whenever the process does."""
    assert client.get("/healthz").json() == {"status": "ok"}


def test_ready_with_the_store_reachable(client: TestClient) -> None:
    """Rules loaded and the database answers: ready, writing to the database."""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() | {"active_pack": "…"} == {
        "status": "ready",
        "active_pack": "…",
        "audit": "database",
        "database": True,
        "spooled": 0,
        "dead_letters": 0,
    }


def test_ready_while_spooling_when_the_database_is_down(tmp_path: Path) -> None:
    """PostgreSQL refusing connections does not stop the service: calls are answered, audit spools."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",  # type: ignore[arg-type]
        dev=True,
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert (response.json()["audit"], response.json()["database"]) == ("spooling", False)


def probe_for(engine: Engine, spool_dir: Path, **kwargs: object) -> StoreProbe:
    return StoreProbe(engine, spool_dir, writer_alive=lambda: True, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")


def test_not_ready_when_records_could_go_nowhere(tmp_path: Path) -> None:
    """Database down and no writable spool folder: 503-worthy."""
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    probe = probe_for(engine, tmp_path / "no-such-folder")
    status = asyncio.run(probe.status())
    probe.close()
    assert (status.audit, status.ready) == ("unavailable", False)


def test_not_ready_when_the_audit_writer_has_stopped(tmp_path: Path, engine: Engine) -> None:
    """A dead writer thread means nothing is written, whatever the database says."""
    probe = StoreProbe(engine, tmp_path, writer_alive=lambda: False)
    assert not asyncio.run(probe.status()).ready
    probe.close()


def test_the_database_is_pinged_at_most_once_per_interval(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probes from every kubelet reuse the last answer for ``interval`` seconds."""
    pings: list[float] = []
    monkeypatch.setattr(health, "ping", lambda _: pings.append(time.monotonic()) or True)
    now = [100.0]
    probe = probe_for(engine, tmp_path, interval=5.0, monotonic=lambda: now[0])

    async def probes() -> None:
        for step in (0.0, 1.0, 3.9, 1.2, 0.1):  # t = 100, 101, 104.9, 106.1, 106.2
            now[0] += step
            assert (await probe.status()).database

    asyncio.run(probes())
    probe.close()
    assert len(pings) == 2


def test_a_hung_database_ping_is_bounded_and_not_repeated(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ping that does not return answers 'not reachable' after ``timeout``; the next probe waits on
    the same ping rather than starting another thread."""
    release = threading.Event()
    started: list[int] = []

    def hung(_: Engine) -> bool:
        started.append(1)
        release.wait(10)
        return True

    monkeypatch.setattr(health, "ping", hung)
    probe = probe_for(engine, tmp_path, interval=0.0, timeout=0.1)

    async def probes() -> list[str]:
        return [(await probe.status()).audit for _ in range(3)]

    # Had a probe waited for the hung ping, it would have answered "database" once released.
    assert asyncio.run(probes()) == ["spooling"] * 3
    assert len(started) == 1
    release.set()
    probe.close()
