"""How fast a hook call fails when the EHR's FHIR server is down or hangs: time to the 412.

    uv run --frozen --group bench python bench/failures.py [--calls 20] [--timeout 0.2] [--budget 0.5]

The tests check *what* happens (a 412 OperationOutcome, retries, the budget applied, no hang); how
long it takes is measured here. The app runs in process (development mode, a token per call) and
fetches missing prefetch over real loopback sockets from (a) a port nobody listens on, so every
connection is refused and retried, and (b) a server that accepts connections and never answers, so
each request runs into ``--timeout`` and the call into ``--budget``. Prints p50 and max per case.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.testclient import TestClient

from service.app import create_app
from service.auth.dev_issuer import DevIssuer
from service.config import Settings

HOOK = "/cds-services/calf-pain"


def refused_base() -> str:
    """A loopback URL whose port had a listener a moment ago and has none now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/fhir"


def hanging_base(stop: threading.Event) -> str:
    """A loopback server that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)
        for connection in held:
            connection.close()
        server.close()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/fhir"


def call_body(fhir_server: str) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server,
        "fhirAuthorization": {
            "access_token": "bench",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "bench",
        },
        "context": {"userId": "Practitioner/bench", "patientId": "bench"},
    }


def time_calls(client: TestClient, issuer: DevIssuer, fhir_server: str, calls: int) -> list[float]:
    seconds = []
    for _ in range(calls):
        token = issuer.token(f"http://testserver{HOOK}", now=time.time())
        started = time.perf_counter()
        response = client.post(
            HOOK, json=call_body(fhir_server), headers={"Authorization": f"Bearer {token}"}
        )
        seconds.append(time.perf_counter() - started)
        if response.status_code != 412:
            raise SystemExit(f"expected 412, got {response.status_code}: {response.text[:200]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per case")
    parser.add_argument("--timeout", type=float, default=0.2, help="CALF_CDS_FHIR_REQUEST_TIMEOUT (s)")
    parser.add_argument("--budget", type=float, default=0.5, help="CALF_CDS_FHIR_TOTAL_BUDGET (s)")
    args = parser.parse_args()
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            data_dir=Path(folder), dev=True, fhir_request_timeout=args.timeout, fhir_total_budget=args.budget
        )
        issuer = DevIssuer.load_or_create(settings.data_dir)
        cases = {"connection refused": refused_base(), "server never answers": hanging_base(stop)}
        with TestClient(create_app(settings)) as client:
            print(
                f"time to the 412 (request timeout {args.timeout} s, budget {args.budget} s, {args.calls} calls)"
            )
            for name, base in cases.items():
                seconds = time_calls(client, issuer, base, args.calls)
                print(
                    f"  {name:<22} p50 {statistics.median(seconds) * 1000:7.1f} ms   max {max(seconds) * 1000:7.1f} ms"
                )
        stop.set()


if __name__ == "__main__":
    main()
