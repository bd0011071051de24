"""Latency of the calf-pain hook against a parse-only floor, at 10, 100 and 1000 Observations.

    python bench/latency.py [--requests 300]

Starts the real server (uvicorn, one process) on a free loopback port, sends the same bodies to
``/cds-services/calf-pain`` and to a floor endpoint that only parses the body with orjson, in
alternation, and prints p50/p99 for both and their ratio. The Observations are real (FHIR R4
searchset, ../shared/fhir-data/derived/observations-1000-searchset.json) re-pointed at one patient,
plus a few calf-pain findings so that the rules have work to do and cards come back.

Every hook call carries its own JWT from the development issuer (the server runs in development
mode), made before the clock starts: the hook's timings include verifying it, the floor's do not.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from service.auth.dev_issuer import DevIssuer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "fhir-data" / "derived" / "observations-1000-searchset.json"
SIZES = (10, 100, 1000)
FINDING = "http://calf-cds.org/fhir/CodeSystem/finding"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def body_with(observations: list[dict[str, Any]]) -> bytes:
    today = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    findings = [
        {
            "resourceType": "Observation",
            "id": f"bench-{code}",
            "status": "final",
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": "Patient/bench"},
            "effectiveDateTime": today,
            **value,
        }
        for system, code, value in (
            ("http://snomed.info/sct", "300954003", {}),
            (FINDING, "exertional-leg-pain", {"valueBoolean": True}),
            (FINDING, "entire-leg-swollen", {"valueBoolean": True}),
        )
    ]
    entries = [{"resource": {**o, "subject": {"reference": "Patient/bench"}}} for o in observations]
    entries += [{"resource": f} for f in findings]
    return json.dumps(
        {
            "hook": "patient-view",
            "hookInstance": "bench",
            "context": {"userId": "Practitioner/bench", "patientId": "bench"},
            "prefetch": {
                "patient": {
                    "resourceType": "Patient",
                    "id": "bench",
                    "birthDate": "1950-01-01",
                    "gender": "male",
                },
                "observations": {"resourceType": "Bundle", "type": "searchset", "entry": entries},
                "conditions": {"resourceType": "Bundle", "type": "searchset"},
            },
        }
    ).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per size and endpoint")
    args = parser.parse_args()
    observations = [e["resource"] for e in json.loads(DATA.read_text())["entry"]]
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="calf-bench-")
    env = os.environ | {"CALF_CDS_DATA_DIR": data_dir, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.floor_app:build",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 120  # a busy machine starts the server slowly
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the benchmark server did not start") from None
                    time.sleep(0.1)
            print(
                f"{'obs':>5} {'body kB':>8} {'hook p50':>9} {'hook p99':>9} {'floor p50':>10} "
                f"{'floor p99':>10} {'p50 ratio':>10} {'p99 ratio':>10} cards"
            )
            issuer = DevIssuer.load_or_create(Path(data_dir))
            audience = base + "/cds-services/calf-pain"
            for size in SIZES:
                body = body_with(observations[:size])
                timings: dict[str, list[float]] = {"hook": [], "floor": []}
                paths = {"hook": "/cds-services/calf-pain", "floor": "/bench/floor"}
                for round_ in range(args.requests + 20):
                    for name, path in paths.items():
                        headers = {"content-type": "application/json"}
                        if name == "hook":
                            headers["authorization"] = f"Bearer {issuer.token(audience, now=time.time())}"
                        started = time.perf_counter()
                        response = client.post(path, content=body, headers=headers)
                        elapsed = (time.perf_counter() - started) * 1000
                        response.raise_for_status()
                        if round_ >= 20:  # warm-up
                            timings[name].append(elapsed)
                headers = {
                    "content-type": "application/json",
                    "authorization": f"Bearer {issuer.token(audience, now=time.time())}",
                }
                cards = len(client.post(paths["hook"], content=body, headers=headers).json()["cards"])
                hook, floor = timings["hook"], timings["floor"]
                print(
                    f"{size:>5} {len(body) / 1000:>8.0f} {statistics.median(hook):>8.2f}ms "
                    f"{percentile(hook, 0.99):>8.2f}ms {statistics.median(floor):>9.2f}ms "
                    f"{percentile(floor, 0.99):>9.2f}ms {statistics.median(hook) / statistics.median(floor):>10.2f} "
                    f"{percentile(hook, 0.99) / percentile(floor, 0.99):>10.2f} {cards}"
                )
    finally:
        server.terminate()
        server.wait(timeout=15)
    print("target: hook p50 ≤ 2× floor p50 at 100 and 1000 Observations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
