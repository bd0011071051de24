"""Nothing is lost: PostgreSQL goes away mid-traffic, cards keep coming, every record arrives later.

The test owns a database of its own on the shared server and makes it unavailable the way an
outage looks to the service — no new connections (``ALLOW_CONNECTIONS false``) and every open
one killed (``pg_terminate_backend``) — while a client keeps calling the hook and sending
feedback. Then it restores the database and counts: one audit row per call, one feedback row
per entry, none twice, the spool files gone.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.governance.feedback import relink
from service.store.schema import feedback, hook_calls
from tests.fhir_builders import NOW, hook_request
from tests.service.governance.conftest import (
    CANDIDATE,
    CLAUDICATION,
    DVT,
    RULE_PACKS,
    admin,
    count,
    sqlalchemy_url,
    wait_for,
)
from tests.signing import dev_client


def take_down(name: str) -> None:
    with admin() as connection:
        connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def bring_back(name: str) -> None:
    with admin() as connection:
        connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


class Traffic(threading.Thread):
    """Calls the hook and sends feedback for every card, until stopped; remembers what it sent."""

    def __init__(self, client: TestClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.instances: list[str] = []
        self.feedback_cards: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        patients = [DVT, CLAUDICATION]
        while not self.stop.is_set():
            instance = str(uuid.uuid4())
            body = hook_request(patients[len(self.instances) % 2], hookInstance=instance)
            response = self.client.post("/cds-services/calf-pain", json=body)
            self.instances.append(instance)
            cards: list[dict[str, Any]] = (
                response.json().get("cards", []) if response.status_code == 200 else []
            )
            if response.status_code != 200 or not cards:
                self.failures.append(f"{response.status_code}: {response.text[:200]}")
                continue
            entry = {"card": cards[0]["uuid"], "outcome": "overridden",
                     "overrideReason": {"userComment": "seen in clinic"}, "outcomeTimestamp": "2026-11-20T09:05:00Z"}  # fmt: skip
            answer = self.client.post("/cds-services/calf-pain/feedback", json={"feedback": [entry]})
            if answer.status_code != 200:
                self.failures.append(f"feedback {answer.status_code}")
            else:
                self.feedback_cards.append(cards[0]["uuid"])
            time.sleep(0.01)

    def wait_for_calls(self, total: int) -> None:
        wait_for(lambda: len(self.instances) >= total, timeout=60)


@pytest.mark.postgres
def test_database_outage_loses_no_record(postgres_database: str, tmp_path: Path) -> None:
    """Cards are answered throughout the outage, and afterwards audit rows == calls, feedback == sent."""
    url = sqlalchemy_url(postgres_database)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=SecretStr(url),
        rules_dir=RULE_PACKS,
        shadow_packs=(CANDIDATE,),
        db_migrate="upgrade",
        dev=True,  # calls are signed by the development issuer (tests/signing.py)
    )
    engine = create_engine(url)
    with dev_client(create_app(settings, clock=lambda: NOW), settings) as client:
        audit = client.app.state.runtime.audit  # type: ignore[attr-defined]
        feedback_writer = client.app.state.governance.feedback  # type: ignore[attr-defined]
        audit.retry_seconds = feedback_writer.retry_seconds = 0.5
        traffic = Traffic(client)
        traffic.start()
        try:
            traffic.wait_for_calls(15)
            wait_for(lambda: count(engine, select(hook_calls)) >= 10)
            engine.dispose()

            take_down(postgres_database)
            during = len(traffic.instances)
            wait_for(lambda: audit.spool_depth() > 0 and feedback_writer.spool_depth() > 0)
            traffic.wait_for_calls(during + 25)
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3).close()
            spooled = audit.spool_depth()

            bring_back(postgres_database)
            traffic.wait_for_calls(len(traffic.instances) + 15)
        finally:
            traffic.stop.set()
            traffic.join(30)
        calls, entries = len(traffic.instances), len(traffic.feedback_cards)
        wait_for(
            lambda: count(engine, select(hook_calls)) >= calls and count(engine, select(feedback)) >= entries
        )
        assert audit.spool_depth() == 0
        assert feedback_writer.spool_depth() == 0
    assert traffic.failures == []
    assert spooled >= 10  # the calls made during the outage went to the spool, not to the database
    with engine.begin() as connection:
        relink(connection)
        stored = list(connection.scalars(select(hook_calls.c.hook_instance)))
        linked = connection.execute(select(feedback.c.card_uuid, feedback.c.call_id)).all()
    engine.dispose()
    assert sorted(stored) == sorted(traffic.instances)  # every call once, none twice
    assert sorted(card for card, _ in linked) == sorted(traffic.feedback_cards)
    assert all(call_id is not None for _, call_id in linked)
