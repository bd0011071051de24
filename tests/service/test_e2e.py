"""End to end: the real server started as a user starts it, called over HTTP on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CALF_CDS = str(Path(sys.executable).parent / "calf-cds")
pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    base: str
    env: dict[str, str]
    log_path: Path

    def token(self, path: str) -> str:
        """`calf-cds token --aud <url>`, as the README runs it."""
        done = subprocess.run(
            [CALF_CDS, "token", "--aud", self.base + path],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout.strip()


def clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALF_CDS_")}
    return env | {"CALF_CDS_DATA_DIR": str(data_dir)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    env = clean_env(tmp_path_factory.mktemp("data"))
    command = [CALF_CDS, "serve", "--dev", "--port", str(port)]
    log_path = tmp_path_factory.mktemp("log") / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90  # a guard against a server that never starts, on a busy machine
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
    yield Server(base, env, log_path)
    process.terminate()
    process.wait(timeout=15)
    log.close()


def get(server: Server, path: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(server.base + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def post_example(server: Server, token: str) -> tuple[int, bytes]:
    body = (ROOT / "examples" / "patient-view-calf-pain.json").read_bytes()
    request = urllib.request.Request(
        server.base + "/cds-services/calf-pain",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_dev_mode_is_logged_loudly(server: Server) -> None:
    """`serve --dev` says, at WARNING, that it trusts a local development issuer."""
    log = server.log_path.read_text()
    assert "WARNING" in log
    assert "DEVELOPMENT MODE" in log


def test_discovery_over_http(server: Server) -> None:
    """Discovery with a `calf-cds token` for its URL shows the calf-pain service."""
    status, _, body = get(server, "/cds-services", server.token("/cds-services"))
    assert status == 200
    assert [s["id"] for s in json.loads(body)["services"]] == [
        "calf-pain",
        "calf-pain-order-select",
        "calf-pain-order-sign",
    ]


def test_discovery_without_a_token_is_401(server: Server) -> None:
    """No token: 401, RFC 6750's bare `WWW-Authenticate: Bearer` (no error code), an OperationOutcome."""
    status, headers, body = get(server, "/cds-services", None)
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "login"


def test_readme_request_over_http(server: Server) -> None:
    """The README's example request, with a token from `calf-cds token`, returns a duplex-dvt card."""
    status, body = post_example(server, server.token("/cds-services/calf-pain"))
    assert status == 200
    assert [c["source"]["topic"]["code"] for c in json.loads(body)["cards"]] == ["duplex-dvt"]


def test_a_token_is_good_for_one_call(server: Server) -> None:
    """Sending the same token twice: the second call is a replay, 401."""
    token = server.token("/cds-services/calf-pain")
    assert post_example(server, token)[0] == 200
    assert post_example(server, token)[0] == 401


def test_no_token_is_logged(server: Server) -> None:
    """The server log holds no token after the calls above."""
    assert "eyJ" not in server.log_path.read_text()


def test_serve_without_trusted_issuers_refuses_to_start(tmp_path: Path) -> None:
    """`calf-cds serve` with no trusted issuer and no --dev exits at once, saying what to do."""
    done = subprocess.run(
        [CALF_CDS, "serve", "--port", str(free_port())],
        env=clean_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "CALF_CDS_TRUSTED_ISSUERS_FILE" in done.stderr
    assert "--dev" in done.stderr
