"""``calf-cds``: the command line.

calf-cds serve [--host 127.0.0.1] [--port 8080] [--dev]   run the service on its embedded defaults
calf-cds token --aud URL [--tenant T] [--lifetime S]     print a JWT from the development issuer
calf-cds try --fhir-server URL --patient ID          show the cards for a patient on a FHIR server
calf-cds rules|db|report|trail ...                  governance (see service/governance/cli.py)
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import sys
from collections.abc import Callable, Sequence

from service.cli_try import add_try_command
from service.config import Settings
from service.governance.cli import add_commands as add_governance_commands


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.client_auth import AuthConfigError, trusted_issuers
    from service.log_privacy import logging_config

    settings = Settings(dev=True) if args.dev else Settings()
    try:
        trusted_issuers(settings)  # refuse to start when no call could ever be accepted
    except AuthConfigError as error:
        print(f"calf-cds: not starting: {error}", file=sys.stderr)
        return 2
    key = settings.log_hash_key.get_secret_value() if settings.log_hash_key else None
    log_config = logging_config(settings.log_level, key)
    logging.config.dictConfig(log_config)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines show FHIR queries (patient ids)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        log_config=log_config,
        access_log=False,
    )
    return 0


def _token(args: argparse.Namespace) -> int:
    from service.dev_issuer import MAX_LIFETIME_SECONDS, DevIssuer

    if not args.aud.startswith(("http://", "https://")):
        print("calf-cds token: --aud must be the full URL of the endpoint you will call", file=sys.stderr)
        return 2
    if not 0 < args.lifetime <= MAX_LIFETIME_SECONDS:
        print(f"calf-cds token: --lifetime must be 1..{MAX_LIFETIME_SECONDS} seconds", file=sys.stderr)
        return 2
    issuer = DevIssuer.load_or_create(Settings().data_dir)
    print(issuer.token(args.aud, tenant=args.tenant, lifetime_seconds=args.lifetime))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calf-cds", description="CDS Hooks service for calf pain.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: also trust the local development issuer (see `calf-cds token`)",
    )
    serve.set_defaults(handler=_serve)
    token = commands.add_parser(
        "token",
        help="print a JWT signed by the local development issuer (for `calf-cds serve --dev`)",
        description="Each token is good for one call: the service refuses a jti it has seen.",
    )
    token.add_argument(
        "--aud",
        required=True,
        help="the exact URL you will call, e.g. http://localhost:8080/cds-services/calf-pain",
    )
    token.add_argument("--tenant", default=None, help="a tenant claim to include")
    token.add_argument("--lifetime", type=int, default=300, help="seconds until it expires (default 300)")
    token.set_defaults(handler=_token)
    add_try_command(commands)
    add_governance_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
