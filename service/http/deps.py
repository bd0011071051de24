"""The dependencies routes share: the app's runtime, built once at start-up by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.hooks.fhir_server_guard import FhirServerGuard
from service.hooks.pipeline import CalfPainService, Fetcher
from service.store.audit import AuditWriter
from service.store.probe import StoreProbe

__all__ = ["Runtime", "RuntimeDep", "get_runtime"]


@dataclass
class Runtime:
    """Everything one app instance owns, built at start-up."""

    settings: Settings
    service: CalfPainService
    audit: AuditWriter
    fetcher: Fetcher | None
    guard: FhirServerGuard
    store_probe: StoreProbe | None = None


async def get_runtime(request: Request) -> Runtime:
    """The runtime of the app serving ``request`` (built in the lifespan).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency on a worker thread, a thread
    hop per call for a field lookup.
    """
    value: Runtime = request.app.state.runtime
    return value


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
