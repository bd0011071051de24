"""``calf-cds``: the command line.

calf-cds serve [--host 127.0.0.1] [--port 8080]     run the service on its embedded defaults
calf-cds try --fhir-server URL --patient ID          show the cards for a patient on a FHIR server
calf-cds rules|db|report|trail ...                  governance (see service/governance/cli.py)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from service.cli_try import add_try_command
from service.config import Settings
from service.governance.cli import add_commands as add_governance_commands


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines show FHIR queries (patient ids)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level.lower(), access_log=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calf-cds", description="CDS Hooks service for calf pain.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
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
