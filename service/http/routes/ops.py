"""Operations routes: liveness, readiness and Prometheus metrics (outside the OpenAPI document)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.http.deps import Runtime, json_response
from service.ops import telemetry

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response:
    """Readiness: rules loaded, and the audit store reachable or spooling to disk."""
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is None or rt.store_probe is None:
        return json_response({"status": "starting"}, 503)
    store = await rt.store_probe.status()
    body = {
        "active_pack": rt.service.active.key,
        "audit": store.audit,
        "database": store.database,
        "spooled": rt.audit.spool_depth(),  # this worker's; the metric sums every worker's
        "dead_letters": store.dead_letters,  # refused records kept with their reason (None: unknown)
    }
    if not store.ready:
        return json_response({"status": "not ready", **body}, 503)
    return json_response({"status": "ready", **body})


@router.get("/metrics", include_in_schema=False)
async def get_metrics(request: Request) -> Response:
    """Prometheus text exposition, summed over worker processes."""
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    if rt is not None:
        rt.audit.report_metrics()
    return Response(telemetry.render(), media_type=telemetry.CONTENT_TYPE)
