"""What a hook call that must fetch from the FHIR server costs: CPU per call, and the worst wall time
when the FHIR server never answers and the machine is busy.

    python bench/fhir_fetch.py [--calls 200] [--stalled 8] [--hogs 4] [--src DIR]

1. Starts a FHIR server on loopback (a thread of this process: a Patient read and searchset
   Bundles of a few Observations and Conditions) and ``calf-cds serve`` (one in-process worker,
   development mode) from ``--src`` (default: this checkout; pass an export of another commit to
   compare), on free ports.
2. **CPU per fetching call**: ``--calls`` sequential hook calls without prefetch, so that every
   call fetches its three keys; the server process's CPU time (utime + stime from /proc) over the
   run, per call. The same for calls with everything prefetched, for comparison.
3. **A FHIR server that never answers**: a loopback socket that accepts connections and never
   replies. ``--hogs`` busy-looping processes keep the CPUs busy meanwhile; ``--stalled`` calls,
   four at a time, each needing a fetch from it; the wall time of each, from the client. The
   service's fetch budget is ``CALF_CDS_FHIR_TOTAL_BUDGET`` (4 s by default).

Prints one JSON object. Timings only: nothing here asserts (a benchmark is not a test).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu import children, cpu_seconds  # noqa: E402 -- after the path is set
from service.auth.dev_issuer import DevIssuer  # noqa: E402
from tests.fhir_builders import bundle, calf_pain, finding, hook_request, patient, quantity  # noqa: E402

RESOURCES = [
    calf_pain(),
    finding("calf-circumference-difference", quantity(3.4, "cm")),
    finding("entire-leg-swollen"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Fhir(BaseHTTPRequestHandler):
    """A tiny FHIR server: Patient/p1, and Observation / Condition searches."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.endswith("/Patient/p1"):
            body: Any = patient("p1")
        elif path.endswith("/Observation"):
            body = bundle([r for r in RESOURCES if r["resourceType"] == "Observation"])
        elif path.endswith("/Condition"):
            body = bundle([])
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


def black_hole() -> tuple[int, threading.Event]:
    """A port that accepts connections and never answers; set the event to close it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(256)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        server.settimeout(0.2)
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
    return server.getsockname()[1], stop


def hog(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10_000))


def start_service(src: Path, data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALF_CDS_", "PROMETHEUS_"))}
    env |= {"CALF_CDS_DATA_DIR": str(data), "CALF_CDS_DEV": "true", "PYTHONPATH": str(src)}
    code = "import sys; from service.cli import main; sys.exit(main())"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--port", str(port)],
        cwd=src,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the service did not start")


def call(client: httpx.Client, issuer: DevIssuer, url: str, body: dict[str, Any]) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {issuer.token(url, now=time.time())}"}
    started = time.perf_counter()
    response = client.post(url, json=body, headers=headers)
    return response.status_code, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--stalled", type=int, default=8)
    parser.add_argument("--hogs", type=int, default=4)
    parser.add_argument("--src", type=Path, default=ROOT)
    args = parser.parse_args()

    fhir = ThreadingHTTPServer(("127.0.0.1", 0), Fhir)
    threading.Thread(target=fhir.serve_forever, daemon=True).start()
    fhir_url = f"http://127.0.0.1:{fhir.server_address[1]}/fhir"
    hole_port, close_hole = black_hole()
    with tempfile.TemporaryDirectory() as folder:
        data, port = Path(folder) / "data", free_port()
        service = start_service(args.src.resolve(), data, port)
        pids = [service.pid, *children(service.pid)]
        issuer = DevIssuer.load_or_create(data)
        url = f"http://127.0.0.1:{port}/cds-services/calf-pain"
        fetching = hook_request(RESOURCES) | {"fhirServer": fhir_url}
        del fetching["prefetch"]
        prefetched = hook_request(RESOURCES)
        report: dict[str, Any] = {"src": str(args.src), "calls": args.calls}
        try:
            with httpx.Client(timeout=60) as client:
                for name, body in (("fetching", fetching), ("prefetched", prefetched)):
                    for _ in range(10):  # warm-up
                        call(client, issuer, url, body)
                    before = cpu_seconds(pids)
                    statuses = [call(client, issuer, url, body)[0] for _ in range(args.calls)]
                    spent = cpu_seconds(pids) - before
                    report[f"cpu_ms_per_{name}_call"] = round(1000 * spent / args.calls, 2)
                    report[f"{name}_statuses"] = sorted(set(statuses))
                stalled = fetching | {"fhirServer": f"http://127.0.0.1:{hole_port}/fhir"}
                stop = multiprocessing.Event()
                hogs = [multiprocessing.Process(target=hog, args=(stop,)) for _ in range(args.hogs)]
                for process in hogs:
                    process.start()
                try:
                    with ThreadPoolExecutor(4) as pool:
                        answers = list(
                            pool.map(lambda _: call(client, issuer, url, stalled), range(args.stalled))
                        )
                finally:
                    stop.set()
                    for process in hogs:
                        process.join()
                times = sorted(seconds for _, seconds in answers)
                report["never_answering"] = {
                    "statuses": sorted({status for status, _ in answers}),
                    "hogs": args.hogs,
                    "wall_s_max": round(times[-1], 2),
                    "wall_s_median": round(times[len(times) // 2], 2),
                    "wall_s_all": [round(t, 2) for t in times],
                }
        finally:
            service.terminate()
            service.wait(30)
            close_hole.set()
            fhir.shutdown()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
