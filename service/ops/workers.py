"""Several worker processes on one port, each listening on a socket of its own (``SO_REUSEPORT``).

uvicorn's own ``--workers`` shares one listening socket among its processes, and whichever process
wakes first accepts a new connection. The busiest worker is awake anyway, so it tends to win, and
long-lived keep-alive connections pile up on it: measured with ``bench/load.py`` on two cores, one
worker used 0.6 of a core and the other 0.25, with p99 latency to match. With ``SO_REUSEPORT``
the kernel spreads connections evenly over the workers' sockets as they arrive.

The parent process supervises:

- it starts ``workers`` processes (``multiprocessing`` spawn), each running a uvicorn server with the
  app factory, so each worker builds its own app, audit writer and database pool;
- it starts a worker again when one dies, unless it died while starting up (a bad setting or
  an occupied port fails the same way every time: the parent stops and says so);
- on SIGTERM, SIGINT or SIGHUP it sends SIGTERM to every worker, each of which drains its
  in-flight calls and flushes its audit writer (uvicorn's graceful shutdown, then the app's
  lifespan), and waits for them, killing any that outlive ``stop_seconds``.

A worker treats SIGHUP (a closed terminal) as SIGTERM too: uvicorn would otherwise die of it on
the spot, with audit records still queued in memory.
"""

from __future__ import annotations

import gc
import logging
import logging.config
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import KW_ONLY, dataclass, field
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

__all__ = [
    "RESTART_PAUSE_SECONDS",
    "STARTUP_FAILURE",
    "STOP_SIGNALS",
    "Supervisor",
    "check_port_free",
    "hangup_stops_gracefully",
    "listening_socket",
    "run_worker",
    "tune_gc",
]

log = logging.getLogger("calf_cds.workers")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STARTUP_FAILURE = 3  # uvicorn's exit code when the app or the socket fails at start-up
RESTART_PAUSE_SECONDS = 1.0


def tune_gc(young_threshold: int = 100_000) -> None:
    """Garbage-collector settings for a serving process, applied once start-up is done.

    A call allocates ~5,000 containers (the parsed prefetch) and frees nearly all of them by
    reference counting; the cyclic collector, run every 700 allocations by default, kept
    traversing the ~90,000 long-lived objects of the loaded app and rule packs: 390 µs of a
    1,460 µs call in-process (bench notes in README). ``gc.freeze()`` moves everything alive at
    start-up out of the collector's sight, and a larger young generation runs it less often.
    At 10,000 a 1000-Observation chart (~50,000 containers alive at once) still set off a young
    collection on every call (1.3-1.7 ms of it); at 100,000 none in 300 such calls, with the same
    RSS (``bench/profile_hook.py --gc-threshold``), since what a call allocates it frees by
    reference counting and only cyclic garbage waits for the larger threshold.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, 10, 10)


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to (host, port) with ``SO_REUSEPORT``, listening."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` if anything listens on (host, port) already, even with ``SO_REUSEPORT``
    (a second ``calf-cds serve`` must not silently share the port with the first)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def hangup_stops_gracefully() -> None:
    """Turn SIGHUP into SIGTERM for this process, which uvicorn shuts down gracefully."""
    signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))


def run_worker(app: str, host: str, port: int, config: dict[str, Any]) -> None:
    """One worker process: its own socket, a uvicorn server with the app factory."""
    import uvicorn

    hangup_stops_gracefully()
    try:
        sock = listening_socket(host, port)
    except OSError as error:
        logging.config.dictConfig(config.get("log_config") or {"version": 1})
        log.error("worker cannot listen on %s:%d: %s", host, port, error)
        raise SystemExit(STARTUP_FAILURE) from error
    server = uvicorn.Server(uvicorn.Config(app, factory=True, host=host, port=port, **config))
    server.run(sockets=[sock])


@dataclass
class Supervisor:
    """Start, watch and stop the worker processes (see the module docstring).

    ``app`` is the app factory (``module:function``) each worker runs; ``config`` its uvicorn
    settings.
    """

    app: str
    _: KW_ONLY
    host: str
    port: int
    workers: int
    config: dict[str, Any]
    stop_seconds: float
    processes: list[BaseProcess] = field(default_factory=list, init=False)
    stopping: bool = field(default=False, init=False)
    failed: bool = field(default=False, init=False)
    context: SpawnContext = field(default_factory=lambda: multiprocessing.get_context("spawn"), init=False)

    def _start(self) -> BaseProcess:
        process = self.context.Process(
            target=run_worker, args=(self.app, self.host, self.port, self.config), name="calf-cds-worker"
        )
        process.start()
        return process

    def _signal(self, signum: int, _: object) -> None:
        log.info("received %s: stopping %d workers", signal.Signals(signum).name, len(self.processes))
        self.stopping = True

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 0 after a clean stop, 1 if a worker could not start."""
        try:
            check_port_free(self.host, self.port)  # fail here, once, rather than in every worker
        except OSError as error:
            log.error("cannot listen on %s:%d: %s", self.host, self.port, error)
            return 1
        previous = {sig: signal.signal(sig, self._signal) for sig in STOP_SIGNALS}
        try:
            self.processes = [self._start() for _ in range(self.workers)]
            log.info(
                "started %d workers on %s:%d: %s",
                self.workers,
                self.host,
                self.port,
                [p.pid for p in self.processes],
            )
            while not self.stopping:
                time.sleep(0.2)
                self._replace_dead()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if self.failed else 0

    def _replace_dead(self) -> None:
        from service.ops import telemetry

        for index, process in enumerate(self.processes):
            if process.is_alive() or self.stopping:
                continue
            if process.pid is not None:
                telemetry.worker_gone(process.pid)
            if process.exitcode == STARTUP_FAILURE:
                log.error("worker %s failed to start (exit %d): stopping", process.pid, process.exitcode)
                self.failed = self.stopping = True
                return
            log.warning("worker %s exited (%s): starting another", process.pid, process.exitcode)
            time.sleep(RESTART_PAUSE_SECONDS)
            self.processes[index] = self._start()

    def _stop_all(self) -> None:
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %s did not stop within %.0f s: killing it", process.pid, self.stop_seconds)
                process.kill()
                process.join()
        log.info("all workers stopped")
