"""``calf-cds serve``: worker processes, and a SIGTERM mid-traffic that loses no answered call's audit row."""

from __future__ import annotations

import http.client
import json
import logging.config
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from service import cli
from service.app import app_from_env
from service.auth.dev_issuer import DevIssuer
from service.ops import telemetry, workers
from service.ops.workers import Supervisor
from service.store.schema import hook_calls
from tests.fhir_builders import calf_pain, finding, hook_request, observation, quantity

ROOT = Path(__file__).resolve().parents[2]
CALF_CDS = Path(sys.executable).parent / "calf-cds"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """Capture how ``serve`` starts: uvicorn in process (one worker) or the supervisor (several)."""
    calls: list[dict[str, Any]] = []

    def run(app: str, **kwargs: Any) -> None:
        calls.append({"how": "uvicorn", "app": app, "workers": 1, **kwargs})

    def supervise(self: Supervisor) -> int:
        folder = os.environ.get(telemetry.MULTIPROC_ENV)
        calls.append({"how": "supervisor", "app": self.app, "workers": self.workers, "metrics_dir": folder})
        return 0

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(Supervisor, "run", supervise)
    monkeypatch.setattr(logging.config, "dictConfig", lambda _: None)
    monkeypatch.setattr(workers, "hangup_stops_gracefully", lambda: None)
    monkeypatch.delenv(telemetry.MULTIPROC_ENV, raising=False)
    monkeypatch.setenv("CALF_CDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CALF_CDS_DEV", "true")  # a trusted issuer: serve refuses to start without one
    return calls


def test_serve_defaults_to_one_worker_in_process(
    started: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process, the app factory, graceful drain bounded, uvicorn's access log replaced by ours."""
    monkeypatch.delenv("CALF_CDS_WORKERS", raising=False)
    assert cli.main(["serve", "--port", "9999"]) == 0
    (call,) = started
    assert (call["how"], call["app"], call["factory"]) == ("uvicorn", "service.app:app_from_env", True)
    assert call["timeout_graceful_shutdown"] == cli.DRAIN_SECONDS
    assert call["access_log"] is False
    assert telemetry.MULTIPROC_ENV not in os.environ


def test_workers_come_from_the_environment_and_share_a_fresh_metrics_folder(
    started: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CALF_CDS_WORKERS sets the default; several workers get a metrics folder, removed afterwards."""
    monkeypatch.setenv("CALF_CDS_WORKERS", "3")
    cli.main(["serve"])
    cli.main(["serve", "--workers", "2"])
    assert [(c["how"], c["workers"]) for c in started] == [("supervisor", 3), ("supervisor", 2)]
    folder = started[0]["metrics_dir"]
    assert folder is not None
    assert not Path(folder).exists()
    assert telemetry.MULTIPROC_ENV not in os.environ


def test_workers_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--workers", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_the_app_factory_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each worker builds its app from CALF_CDS_* variables."""
    monkeypatch.setenv("CALF_CDS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CALF_CDS_DEV", "true")
    monkeypatch.setenv("CALF_CDS_MAX_BODY_BYTES", "4096")
    tuned: list[bool] = []
    monkeypatch.setattr("service.app.tune_gc", lambda: tuned.append(True))  # not in the test process
    from starlette.testclient import TestClient

    with TestClient(app_from_env()) as client:
        assert client.app.state.runtime.settings.max_body_bytes == 4096  # type: ignore[attr-defined]
    assert tuned == [True]


# -- a real server, two workers, SIGTERM mid-traffic -------------------------------------------


def hook_body() -> dict[str, Any]:
    """A DVT request with some ordinary observations around it, so that calls take a moment."""
    filler = [
        observation("http://loinc.org", "8867-4", days_ago=d, valueQuantity={"value": 70}) for d in range(120)
    ]
    return hook_request([calf_pain(), finding("calf-circumference-difference", quantity(3.4, "cm")), *filler])


class Traffic:
    """Clients posting hook calls in a loop until the server stops answering, each call signed
    by the development issuer the server trusts (``serve --dev``)."""

    def __init__(self, port: int, clients: int, data: Path) -> None:
        self.port = port
        self.issuer = DevIssuer.load_or_create(data)
        self.audience = f"http://127.0.0.1:{port}/cds-services/calf-pain"
        self.template = hook_body()
        self.answered: dict[str, int] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def client(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        failures = 0
        while failures < 20:
            instance = str(uuid.uuid4())
            body = json.dumps(self.template | {"hookInstance": instance})
            try:
                headers = {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {self.issuer.token(self.audience, now=time.time())}",
                }
                connection.request("POST", "/cds-services/calf-pain", body, headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                failures += 1  # the server closed: refused, reset or closed between calls
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                time.sleep(0.05)
                continue
            with self.lock:
                self.answered[instance] = response.status
        connection.close()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def count(self) -> int:
        with self.lock:
            return len(self.answered)


@pytest.mark.e2e
def test_sigterm_mid_traffic_keeps_every_answered_call_audited(tmp_path: Path) -> None:
    """Two workers under load get SIGTERM: the server drains and exits within the grace period, and
    every call that was answered has its audit row; nothing is left in the spool."""
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALF_CDS_", "PROMETHEUS_"))}
    env |= {"CALF_CDS_DATA_DIR": str(data), "CALF_CDS_WORKERS": "2", "CALF_CDS_DEV": "true"}
    log_path = tmp_path / "serve.log"
    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            [str(CALF_CDS), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        ) as server,
    ):
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                try:
                    connection.request("GET", "/readyz")
                    if connection.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.1)
                finally:
                    connection.close()
            else:
                pytest.fail("server did not start: " + log_path.read_text())
            traffic = Traffic(port, clients=8, data=data)
            traffic.start()
            while traffic.count() < 150 and time.monotonic() < deadline:
                time.sleep(0.02)
            server.send_signal(signal.SIGTERM)
            returncode = server.wait(timeout=25)  # a guard against a hang, not a measurement
            traffic.join(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
    output = log_path.read_text()
    assert returncode in {0, -signal.SIGTERM}, output
    assert set(traffic.answered.values()) == {200}
    engine = create_engine(f"sqlite:///{data / 'audit.sqlite3'}")
    with engine.connect() as connection:
        audited = set(connection.scalars(select(hook_calls.c.hook_instance)))
    engine.dispose()
    missing = set(traffic.answered) - audited
    assert not missing, f"{len(missing)} of {len(traffic.answered)} answered calls have no audit row"
    assert [p.name for p in (data / "spool").iterdir()] == []
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert sum(line["message"] == "Application shutdown complete." for line in lines) == 2


def worker_pids(parent: int) -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{parent}/task").iterdir():
        pids |= {int(pid) for pid in (task / "children").read_text().split()}
    return {pid for pid in pids if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()}


def wait_ready(port: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return True
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    return False


def serve_env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALF_CDS_", "PROMETHEUS_"))}
    return env | {"CALF_CDS_DATA_DIR": str(data), "CALF_CDS_DEV": "true"} | extra


@pytest.mark.e2e
def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    """SIGKILL one of two workers: the supervisor starts another, and the service keeps answering."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            [str(CALF_CDS), "serve", "--port", str(port), "--workers", "2"],
            env=serve_env(tmp_path / "data"),
            stdout=log,
            stderr=subprocess.STDOUT,
        ) as server,
    ):
        try:
            assert wait_ready(port), log_path.read_text()
            deadline = time.monotonic() + 30
            while len(before := worker_pids(server.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            while time.monotonic() < deadline:
                now = worker_pids(server.pid)
                if len(now) == 2 and victim not in now:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("no replacement worker: " + log_path.read_text())
            assert wait_ready(port)
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=25) == 0
        finally:
            if server.poll() is None:
                server.kill()
    assert f"worker {victim} exited" in log_path.read_text()


@pytest.mark.e2e
def test_workers_that_cannot_start_stop_the_server(tmp_path: Path) -> None:
    """A setting that fails every worker at start-up (an unknown rule pack) ends the server with 1,
    rather than restarting workers forever."""
    result = subprocess.run(
        [str(CALF_CDS), "serve", "--port", str(free_port()), "--workers", "2"],
        env=serve_env(tmp_path / "data", CALF_CDS_ACTIVE_PACK="calf-pain@9.9.9"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "failed to start" in result.stderr


def test_an_occupied_port_is_refused_once(tmp_path: Path) -> None:
    """Another process listening on the port: the supervisor says so and exits 1, starting nothing
    (it must not share the port through SO_REUSEPORT)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        supervisor = Supervisor(
            "service.app:app_from_env", host="127.0.0.1", port=port, workers=2, config={}, stop_seconds=1
        )
        assert supervisor.run() == 1
    assert supervisor.processes == []


def test_a_serving_process_freezes_its_start_up_heap() -> None:
    """tune_gc hides what start-up built from the collector and collects the young less often."""
    code = (
        "import gc; from service.ops.workers import tune_gc; tune_gc(); "
        "print(gc.get_freeze_count() > 0, gc.get_threshold()[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.split() == ["True", "100000"]
