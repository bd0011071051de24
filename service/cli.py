"""``calf-cds``: the command line.

calf-cds serve [--host 127.0.0.1] [--port 8080] [--workers N] [--dev]   run the service
calf-cds token --aud URL [--tenant T] [--lifetime S] [--data-dir D]   print a JWT from the development issuer
calf-cds try --fhir-server URL --patient ID          show the cards for a patient on a FHIR server
calf-cds extract RESPONSE.json [--now T]             a QuestionnaireResponse → Observations (SDC $extract)
calf-cds terminology validate --server URL          check the bundled SNOMED CT codes on a terminology server
calf-cds rules|db|report|trail ...                  governance (see service/governance/cli.py)

``main`` is the entry point: it alone reads the wall clock (``clock``, which a test may replace)
and hands it to the command as ``args.clock``. Building the parser imports nothing heavy, so
``--help`` and ``token`` start fast; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.governance.cli import add_commands as add_governance_commands

if TYPE_CHECKING:
    from typing import TypeAlias

    from service.config import Settings

    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "APP",
    "COMMANDS",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "DRAIN_SECONDS",
    "STOP_SECONDS",
    "Clock",
    "build_parser",
    "data_dir_of",
    "main",
    "wall_clock",
]

Clock = Callable[[], datetime]
# The data folder when neither --data-dir nor CALF_CDS_DATA_DIR names one: the default of
# ``Settings.data_dir`` (a test keeps the two equal; importing the settings here would cost
# pydantic-settings' start-up on every `calf-cds token`).
DATA_DIR_ENV = "CALF_CDS_DATA_DIR"
DEFAULT_DATA_DIR = Path(".calf-cds")

# On SIGTERM uvicorn stops accepting connections and lets in-flight calls finish for at most this
# long; then the app's shutdown flushes the audit writer (``service.app.AUDIT_FLUSH_SECONDS``).
# With several workers the parent kills a worker that has not stopped after STOP_SECONDS. All of it
# fits Kubernetes' 30 s grace period less its 5 s preStop pause.
DRAIN_SECONDS = 15
STOP_SECONDS = 24
APP = "service.app:app_from_env"  # each process builds its app from CALF_CDS_* variables

# What each command does: its one-line help in `calf-cds --help`, and the longer description of
# `calf-cds <command> --help` (the governance commands describe themselves in service/governance/cli.py).
COMMANDS: dict[str, tuple[str, str | None]] = {
    "serve": ("run the CDS Hooks service", None),
    "token": (
        "print a JWT signed by the local development issuer (for `calf-cds serve --dev`)",
        "Each token is good for one call: the service refuses a jti it has seen.",
    ),
    "try": (
        "call the service for one patient on a FHIR server and show the cards",
        "Build a patient-view call for a patient on a FHIR server (no prefetch: the service fetches the "
        "data), run it in process or against a running service, print the cards.",
    ),
    "extract": (
        "turn a QuestionnaireResponse to the calf-pain assessment into a transaction Bundle",
        "SDC observation-based extraction, as POST /fhir/QuestionnaireResponse/$extract does.",
    ),
    "terminology": (
        "check the bundled SNOMED CT codes against a FHIR terminology server",
        "validate: ask the server ($validate-code) whether every SNOMED CT code of the bundled value sets "
        "is in the given value set (default: all of SNOMED CT on that server); list the ones it rejects. "
        "Exit 1 if any is rejected, 2 if the server cannot answer.",
    ),
}


def wall_clock() -> datetime:
    """The real time: what ``main`` gives every command unless a test supplies another clock."""
    return datetime.now(UTC)


def _serve(args: argparse.Namespace) -> int:
    import secrets

    from service.auth.errors import AuthConfigError
    from service.auth.trust import trusted_issuers
    from service.config import Settings
    from service.ops.telemetry import log_config

    # Every process reads its settings from the environment (service.app:app_from_env), so what
    # the command line says goes there, as do settings the workers must share.
    exported: dict[str, str] = {}
    if args.dev:
        exported["CALF_CDS_DEV"] = "true"
    with _environment(exported):
        settings = Settings()
        try:
            trusted_issuers(settings)  # refuse to start when no call could ever be accepted
        except AuthConfigError as error:
            print(f"calf-cds: not starting: {error}", file=sys.stderr)
            return 2
        workers = args.workers if args.workers is not None else settings.workers
        if workers > 1 and settings.log_hash_key is None:
            # One key for every worker, so that a patient's log lines share one hash.
            os.environ["CALF_CDS_LOG_HASH_KEY"] = secrets.token_hex(32)
            settings = Settings()
        key = settings.log_hash_key.get_secret_value() if settings.log_hash_key else None
        config: dict[str, Any] = {
            "log_config": log_config(settings.log_level, key),
            "access_log": False,  # service.http.middleware logs every request as a JSON line
            "timeout_graceful_shutdown": DRAIN_SECONDS,
            # uvloop and httptools (dependencies) rather than asyncio and h11: a third less CPU per
            # call with real-sized bodies (bench/load.py); "auto" falls back where not installed.
            "loop": "auto",
            "http": "auto",
        }
        if workers == 1:
            return _serve_in_process(args, config)
        return _supervise(args, settings, workers, config)


def _serve_in_process(args: argparse.Namespace, config: dict[str, Any]) -> int:
    import uvicorn

    from service.ops.workers import hangup_stops_gracefully

    hangup_stops_gracefully()
    uvicorn.run(APP, factory=True, host=args.host, port=args.port, **config)
    return 0


def _supervise(args: argparse.Namespace, settings: Settings, workers: int, config: dict[str, Any]) -> int:
    import logging.config
    import tempfile

    from service.governance.database import prepare as prepare_database
    from service.ops import telemetry
    from service.ops.workers import Supervisor
    from service.store.schema import make_engine

    logging.config.dictConfig(config["log_config"])
    # Migrate (SQLite) or verify (PostgreSQL) the schema once, here, rather than in N workers at
    # once, which would race to create the same tables; each worker then finds it current.
    engine = make_engine(settings.resolved_database_url())
    try:
        prepare_database(settings, engine)
    finally:
        engine.dispose()
    # Workers add up their metrics through files in a folder of this run's own (in /tmp, writable
    # even on a read-only root), unless PROMETHEUS_MULTIPROC_DIR names one.
    own_metrics_dir: Path | None = None
    folder = telemetry.multiprocess_dir()
    if folder is None:
        folder = own_metrics_dir = Path(tempfile.mkdtemp(prefix="calf-cds-metrics-"))
    telemetry.prepare_multiprocess_dir(folder)
    supervisor = Supervisor(
        APP, host=args.host, port=args.port, workers=workers, config=config, stop_seconds=STOP_SECONDS
    )
    try:
        return supervisor.run()
    finally:
        if own_metrics_dir is not None:
            telemetry.remove_multiprocess_dir(own_metrics_dir)
            os.environ.pop(telemetry.MULTIPROC_ENV, None)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` (inherited by worker processes) until the block ends; then
    the environment as it was, keys added inside the block included."""
    before = {name: os.environ.get(name) for name in ("CALF_CDS_DEV", "CALF_CDS_LOG_HASH_KEY")}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def data_dir_of(args: argparse.Namespace) -> Path:
    """``--data-dir``, else ``CALF_CDS_DATA_DIR``, else the settings' default."""
    if args.data_dir is not None:
        return Path(args.data_dir)
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def _token(args: argparse.Namespace) -> int:
    from service.auth.dev_issuer import MAX_LIFETIME_SECONDS, DevIssuer, DevIssuerMissingError

    if not args.aud.startswith(("http://", "https://")):
        print("calf-cds token: --aud must be the full URL of the endpoint you will call", file=sys.stderr)
        return 2
    if not 0 < args.lifetime <= MAX_LIFETIME_SECONDS:
        print(f"calf-cds token: --lifetime must be 1..{MAX_LIFETIME_SECONDS} seconds", file=sys.stderr)
        return 2
    try:
        issuer = DevIssuer.load(data_dir_of(args))  # never creates a key: `serve --dev` does
    except DevIssuerMissingError as error:
        print(f"calf-cds token: {error}", file=sys.stderr)
        return 1
    now = args.clock().timestamp()
    print(issuer.token(args.aud, tenant=args.tenant, lifetime_seconds=args.lifetime, now=now))
    return 0


def _try(args: argparse.Namespace) -> int:
    from service.cli_try import handle

    return handle(args)


def _terminology(args: argparse.Namespace) -> int:
    from service.outbound.terminology_server import validate_command

    return validate_command(args)


def _extract(args: argparse.Namespace) -> int:
    from service.assessment.cli import handle

    return handle(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calf-cds", description="CDS Hooks service for calf pain.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = _command(commands, "serve", _serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="worker processes (default: CALF_CDS_WORKERS, or 1); in Kubernetes scale with replicas instead",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: also trust the local development issuer (see `calf-cds token`)",
    )
    token = _command(commands, "token", _token)
    token.add_argument(
        "--aud",
        required=True,
        help="the exact URL you will call, e.g. http://localhost:8080/cds-services/calf-pain",
    )
    token.add_argument("--tenant", default=None, help="a tenant claim to include")
    token.add_argument("--lifetime", type=int, default=300, help="seconds until it expires (default 300)")
    token.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help=f"the data folder of the `calf-cds serve --dev` to call (default: ${DATA_DIR_ENV}, or {DEFAULT_DATA_DIR})",
    )
    _add_try_command(commands)
    _add_extract_command(commands)
    _add_terminology_command(commands)
    add_governance_commands(commands)
    return parser


def _command(
    commands: Commands, name: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """Register ``calf-cds <name>`` with its help from :data:`COMMANDS`, run by ``handler`` (which
    finds its parser as ``args.parser``)."""
    summary, description = COMMANDS[name]
    parser = commands.add_parser(name, help=summary, description=description)
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def _add_try_command(commands: Commands) -> None:
    """``calf-cds try`` (runs ``service.cli_try``)."""
    parser = _command(commands, "try", _try)
    parser.add_argument("--fhir-server", required=True, metavar="URL", help="FHIR R4 base URL")
    parser.add_argument("--patient", required=True, metavar="ID", help="Patient id on that server")
    parser.add_argument(
        "--bearer", metavar="TOKEN", help="access token for the FHIR server (fhirAuthorization)"
    )
    parser.add_argument(
        "--user", default="Practitioner/calf-cds-try", metavar="REF", help="context.userId (Practitioner/…)"
    )
    parser.add_argument("--service", metavar="URL", help="a running calf-cds (default: run in this process)")
    parser.add_argument("--jwt", metavar="TOKEN", help="client JWT for --service (see `calf-cds token`)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode for the in-process call: accept plain http and loopback FHIR servers",
    )
    parser.add_argument("--json", action="store_true", help="print the raw CDS Hooks response instead")


def _add_extract_command(commands: Commands) -> None:
    """``calf-cds extract`` (runs ``service.assessment.cli``)."""
    parser = _command(commands, "extract", _extract)
    parser.add_argument("response", metavar="FILE", help="the QuestionnaireResponse (JSON); - reads stdin")
    parser.add_argument("--now", metavar="DATETIME", help="the time of extraction (default: now)")


def _add_terminology_command(commands: Commands) -> None:
    """``calf-cds terminology validate`` (runs ``service.outbound.terminology_server``)."""
    parser = _command(commands, "terminology", _terminology)
    parser.add_argument("action", choices=["validate"])
    parser.add_argument("--server", required=True, metavar="URL", help="FHIR R4 terminology server base URL")
    parser.add_argument("--valueset-url", default="http://snomed.info/sct?fhir_vs", metavar="URL")


def main(argv: Sequence[str] | None = None, *, clock: Clock = wall_clock) -> int:
    """Run one command; ``clock`` is the only source of "now" below this point."""
    args = build_parser().parse_args(argv)
    args.clock = clock
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
