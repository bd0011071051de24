"""``calf-cds``: the command line.

calf-cds serve [--host 127.0.0.1] [--port 8080] [--workers N]     run the service on its embedded defaults
calf-cds try --fhir-server URL --patient ID          show the cards for a patient on a FHIR server
calf-cds rules|db|report|trail ...                  governance (see service/governance/cli.py)
"""

from __future__ import annotations

import argparse
import logging.config
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.cli_try import add_try_command
from service.config import Settings
from service.governance.cli import add_commands as add_governance_commands

# On SIGTERM uvicorn stops accepting connections and lets in-flight calls finish for at most this
# long; then the app's shutdown flushes the audit writer (``service.app.AUDIT_FLUSH_SECONDS``).
# With several workers the parent kills a worker that has not stopped after STOP_SECONDS. All of it
# fits Kubernetes' 30 s grace period less its 5 s preStop pause.
DRAIN_SECONDS = 15
STOP_SECONDS = 24
APP = "service.app:app_from_env"  # each process builds its app from CALF_CDS_* variables


def _serve(args: argparse.Namespace) -> int:
    from service import metrics
    from service.logging_setup import log_config

    settings = Settings()
    workers = args.workers if args.workers is not None else settings.workers
    config: dict[str, Any] = {
        "log_config": log_config(settings.log_level),
        "access_log": False,  # service.middleware logs every request as a JSON line
        "timeout_graceful_shutdown": DRAIN_SECONDS,
        # uvloop and httptools (dependencies) rather than asyncio and h11: a third less CPU per call
        # with real-sized bodies (bench/load.py); "auto" falls back where they cannot be installed.
        "loop": "auto",
        "http": "auto",
    }
    from service.workers import Supervisor, hangup_stops_gracefully

    if workers == 1:
        import uvicorn

        hangup_stops_gracefully()
        uvicorn.run(APP, factory=True, host=args.host, port=args.port, **config)
        return 0

    # Migrate (SQLite) or verify (PostgreSQL) the schema once, here, rather than in N workers at
    # once, which would race to create the same tables; each worker then finds it current.
    from service.audit import make_engine
    from service.governance.database import prepare as prepare_database

    engine = make_engine(settings.resolved_database_url())
    try:
        prepare_database(settings, engine)
    finally:
        engine.dispose()
    # Workers add up their metrics through files in a folder of this run's own (in /tmp, writable
    # even on a read-only root), unless PROMETHEUS_MULTIPROC_DIR names one.
    own_metrics_dir: Path | None = None
    folder = metrics.multiprocess_dir()
    if folder is None:
        folder = own_metrics_dir = Path(tempfile.mkdtemp(prefix="calf-cds-metrics-"))
    metrics.prepare_multiprocess_dir(folder)
    logging.config.dictConfig(config["log_config"])
    supervisor = Supervisor(
        APP, host=args.host, port=args.port, workers=workers, config=config, stop_seconds=STOP_SECONDS
    )
    try:
        return supervisor.run()
    finally:
        if own_metrics_dir is not None:
            metrics.remove_multiprocess_dir(own_metrics_dir)
            os.environ.pop(metrics.MULTIPROC_ENV, None)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calf-cds", description="CDS Hooks service for calf pain.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="worker processes (default: CALF_CDS_WORKERS, or 1); in Kubernetes scale with replicas instead",
    )
    serve.set_defaults(handler=_serve)
    add_try_command(commands)
    add_governance_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
