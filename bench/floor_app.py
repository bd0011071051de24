"""The floor the hook is measured against: a bare FastAPI app that parses the body and answers.

``POST /cds-services/calf-pain`` reads the body, parses it with orjson and answers
``{"cards": []}``: the least any JSON service on this stack can do with the call. No middleware,
no token check, no audit. It runs under the same uvicorn options as ``calf-cds serve`` (uvloop,
httptools, no access log) and, with several workers, the same one-``SO_REUSEPORT``-socket-per-worker
scheme, so that the two differ only in what the service does with a call.

    python -m bench.floor_app --port 8081 [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

APP = "bench.floor_app:build"
EMPTY = b'{"cards":[]}'


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
    args = parser.parse_args()
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

        uvicorn.run(APP, factory=True, host="127.0.0.1", port=args.port, **config)
        return 0
    from service.ops.workers import Supervisor  # the service's own worker scheme, for a like-for-like floor

    supervisor = Supervisor(
        APP, host="127.0.0.1", port=args.port, workers=args.workers, config=config, stop_seconds=10
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
