"""The floor the hook is measured against: a bare FastAPI app that parses the body and answers.

``POST /cds-services/calf-pain`` reads the body, parses it with orjson and answers
``{"cards": []}``: the least any JSON service on this stack can do with the call. No middleware,
no token check, no audit. It runs under the same uvicorn options as ``calf-cds serve`` (uvloop,
httptools, no access log) and, with several workers, the same one-``SO_REUSEPORT``-socket-per-worker
scheme, so that the two differ only in what the service does with a call.

``--guarded`` adds to it only what CDS Hooks and this project's rules oblige any service to do with
a call before reading it, each done the cheapest way this stack offers, and nothing clinical:

- the client's JWT, read once and verified against the trusted issuer's key, parsed once at
  start-up (``cryptography``, OpenSSL: the signature; ``iss``, ``aud``, ``exp``, ``iat``, ``jti``);
- the replay check: one ``INSERT … ON CONFLICT DO NOTHING`` of the ``jti`` into a SQLite file on a
  connection of its own, in autocommit (as the service does it);
- the body's JSON limits (depth, items, string length) with the service's own walk
  (``service.hooks.guards.check_json_limits``) under the same limits as the service.

It answers 401 or 400 on a failed check. The hook's ratio to this floor is what the service's own
work costs; this floor's ratio to the bare one is what the obligations cost (``bench/hook_speed.py``).

    python -m bench.floor_app --port 8081 [--workers 2]
    python -m bench.floor_app --port 8082 --guarded --issuers FILE --audience URL --data DIR [--max-items N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

APP = "bench.floor_app:build"
#: the ``--guarded`` floor, in a module of its own so that the bare floor imports nothing it needs
GUARDED_APP = "bench.guarded_floor:build"
EMPTY = b'{"cards":[]}'
#: where ``--guarded`` passes its settings to the app factory (uvicorn's factories take no arguments)
GUARD_ENV = "CALF_CDS_BENCH_GUARD"
#: ``--max-items`` by default: the service's default items per array
DEFAULT_MAX_ITEMS = 10_000


def build() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/cds-services/{service_id}")
    async def floor(service_id: str, request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(EMPTY, media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--guarded", action="store_true", help="verify the client JWT, check replay and limits"
    )
    parser.add_argument("--issuers", type=Path, help="--guarded: the trusted-issuer file the service reads")
    parser.add_argument("--audience", help="--guarded: the URL the tokens name as aud")
    parser.add_argument("--data", type=Path, help="--guarded: a folder for the replay file")
    parser.add_argument("--max-items", type=int, default=DEFAULT_MAX_ITEMS, help="--guarded: items per array")
    args = parser.parse_args()
    app = APP
    if args.guarded:
        if not (args.issuers and args.audience and args.data):
            parser.error("--guarded needs --issuers, --audience and --data")
        os.environ[GUARD_ENV] = json.dumps(
            {
                "issuers": str(args.issuers),
                "audience": args.audience,
                "data": str(args.data),
                "max_items": args.max_items,
            }
        )
        app = GUARDED_APP
    config: dict[str, Any] = {
        "access_log": False,
        "log_level": "warning",
        "loop": "auto",
        "http": "auto",
        "timeout_graceful_shutdown": 5,
        # a round of 10,000-Observation calls to the service can leave the floor's connection idle
        # for longer than uvicorn's 5 s default: keep it, rather than reconnect (bench/hook_speed.py)
        "timeout_keep_alive": 75,
    }
    if args.workers == 1:
        import uvicorn

        uvicorn.run(app, factory=True, host="127.0.0.1", port=args.port, **config)
        return 0
    from service.ops.workers import Supervisor  # the service's own worker scheme, for a like-for-like floor

    supervisor = Supervisor(
        app, host="127.0.0.1", port=args.port, workers=args.workers, config=config, stop_seconds=10
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
