"""The app the latency benchmark serves: the real service plus a floor endpoint.

The floor endpoint reads the same body and parses it with orjson, then answers ``{"cards": []}``:
the least any JSON service on this stack can do with the call.
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
    settings = Settings(data_dir=Path(os.environ.get("CALF_CDS_DATA_DIR", ".calf-cds-bench")))
    app = create_app(settings)

    @app.post("/bench/floor")
    async def floor(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(b'{"cards":[]}', media_type="application/json")

    return app
