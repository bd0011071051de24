"""The poison-record scenario, shared by its test (``test_poison.py``) and ``bench/poison.py``.

``calf-cds serve`` from a source tree (this one, or an export of another commit), two workers, a
PostgreSQL database of its own. Client threads call the hook; every ``POISON_EVERY``-th call is
refused by the database (a trigger rejects its ``hookInstance``, as a constraint would: the call
itself is valid and answered with cards), and every ``BAD_EVERY``-th carries a ``userId`` the audit
schema cannot store (NUL, or longer than its column). Mid-traffic the database goes away (no new
connections, every open one killed) and comes back; then it goes away again, the server gets
SIGTERM (so its workers spool at shutdown), the database comes back and the server starts again.
At the end every answered call is looked up: a ``hook_calls`` row, or a dead letter.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import SQLAlchemyError

from service.auth.dev_issuer import DevIssuer
from tests.fhir_builders import calf_pain, finding, hook_request, quantity
from tests.service.governance.conftest import admin

POISON_EVERY = 25
BAD_EVERY = 20
TRIGGER = [
    "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF NEW.hook_instance LIKE 'poison-%' THEN "
    "RAISE EXCEPTION 'poison record' USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$",
    "CREATE TRIGGER refuse_poison BEFORE INSERT ON hook_calls FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
]


@dataclass
class Outcome:
    answered: dict[str, int] = field(default_factory=dict)  # hookInstance -> HTTP status
    poisoned: set[str] = field(default_factory=set)  # answered calls whose record the database refuses
    stored: set[str] = field(default_factory=set)
    dead: dict[str, str] = field(default_factory=dict)  # hookInstance -> reason
    spool_files_left: list[str] = field(default_factory=list)

    @property
    def lost(self) -> set[str]:
        return set(self.answered) - self.stored - set(self.dead)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ready(port: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return True
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    return False


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


class Traffic:
    """Client threads calling the hook until stopped; every call signed by the development issuer."""

    def __init__(self, port: int, data: Path, outcome: Outcome, clients: int = 4) -> None:
        self.port, self.outcome = port, outcome
        self.issuer = DevIssuer.load_or_create(data)
        self.template = hook_request(
            [calf_pain(), finding("calf-circumference-difference", quantity(3.4, "cm"))]
        )
        self.lock = threading.Lock()
        self.sent = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def next_body(self) -> tuple[str, dict[str, Any], bool]:
        with self.lock:
            self.sent += 1
            number = self.sent
        body = json.loads(json.dumps(self.template))
        poison = number % POISON_EVERY == 0
        instance = f"poison-{uuid.uuid4()}" if poison else str(uuid.uuid4())
        body["hookInstance"] = instance
        if number % BAD_EVERY == 0:
            body["context"]["userId"] = "Practitioner/\x00" if number % (2 * BAD_EVERY) else "u" * 300
        return instance, body, poison

    def client(self) -> None:
        audience = f"http://127.0.0.1:{self.port}/cds-services/calf-pain"
        while not self.stop.is_set():
            instance, body, poison = self.next_body()
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                headers = {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {self.issuer.token(audience, now=time.time())}",
                }
                connection.request("POST", "/cds-services/calf-pain", json.dumps(body), headers)
                status = connection.getresponse().status
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)  # not answered: the server is stopping
                continue
            finally:
                connection.close()
            with self.lock:
                self.outcome.answered[instance] = status
                if poison:
                    self.outcome.poisoned.add(instance)

    def until(self, answered: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.outcome.answered) < answered and time.monotonic() < deadline:
            time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def serve(src: Path, data: Path, url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALF_CDS_", "PROMETHEUS_"))}
    env |= {
        "CALF_CDS_DATA_DIR": str(data),
        "CALF_CDS_DEV": "true",
        "CALF_CDS_WORKERS": "2",
        "CALF_CDS_DATABASE_URL": url,
        "CALF_CDS_DB_MIGRATE": "upgrade",
        "PYTHONPATH": str(src),
    }
    code = "import sys; from service.cli import main; sys.exit(main())"
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--port", str(port)],
            cwd=src,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def run(src: Path, database: str, url: str, folder: Path) -> Outcome:
    """The whole scenario against ``src``; returns what was answered and where each record went."""
    data, log, outcome = folder / "data", folder / "serve.log", Outcome()
    port = _free_port()
    server = serve(src, data, url, port, log)
    try:
        if not _ready(port):
            raise RuntimeError("server did not start: " + log.read_text()[-2000:])
        engine = create_engine(url)
        with engine.begin() as connection:
            for statement in TRIGGER:
                connection.execute(text(statement))
        engine.dispose()
        traffic = Traffic(port, data, outcome)
        traffic.until(60)
        take_down(database)  # an outage mid-traffic: cards go on, records spool
        traffic.until(len(outcome.answered) + 60)
        bring_back(database)
        traffic.until(len(outcome.answered) + 60)
        take_down(database)  # down again, and the server stops: its workers spool at shutdown
        traffic.until(len(outcome.answered) + 30)
        server.send_signal(signal.SIGTERM)
        server.wait(40)
        traffic.finish()
        bring_back(database)
        server = serve(src, data, url, port, log)  # the restart adopts what the last run spooled
        if not _ready(port):
            raise RuntimeError("server did not restart: " + log.read_text()[-2000:])
        _settle(url, outcome, data)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        bring_back(database)
    _count(url, outcome, data)
    return outcome


def _settle(url: str, outcome: Outcome, data: Path, timeout: float = 30) -> None:
    """Wait until every answered call is stored or a dead letter (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _count(url, outcome, data)
        if not outcome.lost:
            return
        time.sleep(0.5)


def _count(url: str, outcome: Outcome, data: Path) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            outcome.stored = set(
                connection.scalars(select(text("hook_instance")).select_from(text("hook_calls")))
            )
            try:
                rows = connection.execute(text("SELECT record, reason FROM audit_dead_letters")).all()
            except SQLAlchemyError:
                rows = []  # a release without dead letters
        outcome.dead = {json.loads(record).get("hook_instance", "?"): reason for record, reason in rows}
    finally:
        engine.dispose()
    spool = data / "spool"
    outcome.spool_files_left = (
        sorted(p.name for p in spool.glob("*.jsonl") if p.stat().st_size) if spool.exists() else []
    )
