"""The app the latency benchmark serves: the real service plus a floor endpoint.

The floor endpoint reads the same body and parses it with orjson, then answers ``{"cards": []}``:
the least any JSON service on this stack can do with the call. It takes no token; the hook
endpoint checks one (ES384, from the development issuer) on every call, as in production.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from service.app import create_app
from service.config import Settings


def build() -> FastAPI:
    # Development mode: the benchmark signs each hook call with the local development issuer.
    settings = Settings(data_dir=Path(os.environ.get("CALF_CDS_DATA_DIR", ".calf-cds-bench")), dev=True)
    app = create_app(settings)

    @app.post("/bench/floor")
    async def floor(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(b'{"cards":[]}', media_type="application/json")

    return app
