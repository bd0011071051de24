"""Processes the benchmarks measure: the real service (``calf-cds serve``) and the floor app, on
free loopback ports, with their worker pids and memory.

The service runs as ``calf-cds serve`` does in production: its own settings from ``CALF_CDS_*``
variables (trusted issuers from a file, a public base URL, the audit store), uvloop and httptools,
one ``SO_REUSEPORT`` socket per worker, the collector tuned after start-up. The floor app
(``bench/floor_app.py``) runs under the same uvicorn options and the same worker scheme.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import children

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server process on ``port``, its log file and the pids of the processes that serve."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    workers: list[int]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def all_pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (a graceful stop: in-flight calls finish, the audit writer flushes); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode


def _wait_ready(name: str, process: subprocess.Popen[bytes], port: int, workers: int, log: Path) -> list[int]:
    deadline = time.monotonic() + 120  # a busy machine starts the server slowly
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                ready = b" 200 " in sock.recv(200)
        except OSError:
            ready = False
        if ready:
            pids = worker_pids(process.pid, workers)
            if len(pids) >= workers:
                time.sleep(0.5 if workers == 1 else 1.5)  # every worker up (they start one by one)
                return worker_pids(process.pid, workers)
        time.sleep(0.2)
    process.kill()
    process.wait()
    raise SystemExit(f"the {name} did not start:\n" + log.read_text(errors="replace")[-4000:])


def worker_pids(pid: int, workers: int) -> list[int]:
    """The processes that serve: the process itself with one worker, its spawned workers otherwise."""
    if workers == 1:
        return [pid]
    found = []
    for child in children(pid):
        try:
            if "spawn_main" in Path(f"/proc/{child}/cmdline").read_text(errors="replace"):
                found.append(child)
        except OSError:
            continue
    return found


def start_service(env: dict[str, str], folder: Path, *, workers: int = 1, log_level: str = "INFO") -> Server:
    """``calf-cds serve --workers N`` on a free port; ``env`` carries its ``CALF_CDS_*`` settings."""
    port = free_port()
    return start_service_on(port, env, folder, workers=workers, log_level=log_level)


def start_service_on(
    port: int,
    env: dict[str, str],
    folder: Path,
    *,
    workers: int = 1,
    log_level: str = "INFO",
    root: Path = ROOT,
) -> Server:
    """``calf-cds serve`` on ``port``. ``root``: the source tree it runs from (another checkout, such as
    an export of main, to compare against; it comes first on the path, before this environment's)."""
    folder.mkdir(parents=True, exist_ok=True)
    full_env = os.environ | {"CALF_CDS_LOG_LEVEL": log_level, "PYTHONPATH": str(root)} | env
    full_env.pop("CALF_CDS_DEV", None)  # never development mode
    # One explanation-link key for every worker, as a deployment with replicas sets it. Without it each
    # worker of a fresh data folder races to create the key file (a worker that reads it before the
    # other has written it refuses to start).
    full_env.setdefault("CALF_CDS_EXPLANATION_SECRET", secrets.token_hex(32))
    log = folder / f"service-{port}.log"
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=root, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    pids = _wait_ready("service", process, port, workers, log)
    return Server("service", process, port, log, pids)


def start_floor(folder: Path, *, workers: int = 1, guard: GuardSettings | None = None) -> Server:
    """The floor app (``bench/floor_app.py``) on a free port, with ``workers`` processes; with
    ``guard``, its ``--guarded`` form (client JWT, replay and JSON limits checked)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    name = "floor" if guard is None else "guarded"
    log = folder / f"{name}-{port}.log"
    command = [sys.executable, "-m", "bench.floor_app", "--port", str(port), "--workers", str(workers)]
    if guard is not None:
        command += [
            "--guarded",
            "--issuers",
            str(guard.issuers),
            "--audience",
            f"http://127.0.0.1:{port}{guard.path}",
            "--data",
            str(folder / f"data-{name}-{port}"),
            "--max-items",
            str(guard.max_items),
        ]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    pids = _wait_ready(f"{name} floor app", process, port, workers, log)
    return Server(name, process, port, log, pids)


@dataclass(frozen=True)
class GuardSettings:
    """What the ``--guarded`` floor checks against: the service's trusted-issuer file, the path its
    tokens' ``aud`` names on the floor's own port, and the items allowed per array."""

    issuers: Path
    path: str
    max_items: int


# -- memory --------------------------------------------------------------------------------------


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start or the last :func:`reset_peak`) of a process, in kB."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    except OSError:
        pass
    return found


def reset_peak(pid: int) -> bool:
    """Start a new peak-RSS window (``5`` to ``/proc/PID/clear_refs``); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
