"""End to end: the real server started as a user starts it, called over HTTP on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = os.environ | {"CALF_CDS_DATA_DIR": str(tmp_path_factory.mktemp("data"))}
    command = [str(Path(sys.executable).parent / "calf-cds"), "serve", "--port", str(port)]
    log_path = tmp_path_factory.mktemp("log") / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        process.wait()
        log.close()
        pytest.fail("server did not start: " + log_path.read_text())
    yield base
    process.terminate()
    process.wait(timeout=15)
    log.close()


def test_discovery_over_http(server: str) -> None:
    """`curl localhost:8080/cds-services` shows the calf-pain service."""
    with urllib.request.urlopen(server + "/cds-services", timeout=5) as response:
        services = json.load(response)["services"]
    assert [s["id"] for s in services] == ["calf-pain"]


def test_readme_request_over_http(server: str) -> None:
    """The README's example request, sent over HTTP, returns a duplex-dvt card."""
    body = (ROOT / "examples" / "patient-view-calf-pain.json").read_bytes()
    request = urllib.request.Request(
        server + "/cds-services/calf-pain", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        cards = json.load(response)["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["duplex-dvt"]
