"""Routes of the assessment: the published FHIR resources, SDC ``$extract`` and the SMART app.

``GET /fhir/{Questionnaire|CodeSystem|ValueSet}/{id}`` serves the resources of
:mod:`fhir_mappings.conformance`; they are public (conformance resources, no patient data).
``GET /app/...`` serves the SMART app's static files (``static/``, LHC-Forms vendored in
``static/vendor/``) with a strict Content-Security-Policy: scripts from this origin only, no
inline script, no eval, no framing except by https pages (an EHR embeds the app).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from cds_hooks.outcome import operation_outcome
from fhir_mappings.conformance import PUBLISHED_TYPES, published
from service.assessment.extract import extract_body
from service.config import Settings
from service.hooks.guards import is_json_media_type
from service.http.deps import BodyTooLargeError, read_body
from service.http.errors import error_response

__all__ = [
    "EXTRACT_BODY",
    "FHIR_JSON",
    "LOOPBACK",
    "STATIC",
    "app_files",
    "app_headers",
    "assessment_router",
    "documented",
    "fhir_response",
]

FHIR_JSON = "application/fhir+json"
STATIC = Path(__file__).parent / "static"
# Loopback http is allowed only in development mode (tests, sandboxes on this machine).
LOOPBACK = "http://127.0.0.1:* http://localhost:*"
_OUTCOME = {"$ref": "#/components/schemas/OperationOutcome"}
_RESOURCE = {"$ref": "#/components/schemas/FhirResource"}


def documented(ok: str, *errors: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI responses in FHIR JSON: ``ok`` on 200, an OperationOutcome on each error status.

    "4XX" is listed too, so that FastAPI adds no 422 of its own (this service answers 400).
    """
    responses: dict[int | str, dict[str, object]] = {
        200: {"description": ok, "content": {FHIR_JSON: {"schema": _RESOURCE}}}
    }
    statuses: list[int | str] = [*errors, "4XX"]
    for status in statuses:
        responses[status] = {"description": "OperationOutcome", "content": {FHIR_JSON: {"schema": _OUTCOME}}}
    return responses


def fhir_response(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON)


# The body $extract takes (SDC): a QuestionnaireResponse, or Parameters holding one.
EXTRACT_BODY = {
    "required": True,
    "content": {
        media: {
            "schema": {
                "type": "object",
                "required": ["resourceType"],
                "properties": {"resourceType": {"enum": ["QuestionnaireResponse", "Parameters"]}},
            }
        }
        for media in (FHIR_JSON, "application/json")
    },
}


def assessment_router(settings: Settings, clock: Callable[[], datetime]) -> APIRouter:
    """The assessment's routes; ``clock`` dates extracted Observations when a response has no ``authored``."""
    router = APIRouter(tags=["assessment"])

    @router.post(
        "/fhir/QuestionnaireResponse/$extract",
        responses=documented("The transaction Bundle: the response and its Observations.", 400, 413, 415),
        openapi_extra={"requestBody": EXTRACT_BODY},
    )
    async def extract_observations(request: Request) -> Response:
        """SDC `$extract`: a QuestionnaireResponse (or Parameters) to a transaction Bundle.

        Public, like the Questionnaire: a pure function of the body that stores and logs nothing;
        the SMART app calls it from the browser, then writes the Bundle to the EHR itself.
        """
        if not is_json_media_type(request.headers.get("content-type")):
            return fhir_response(operation_outcome("the body must be FHIR JSON", code="not-supported"), 415)
        try:
            body = await read_body(request, settings.max_body_bytes)
        except BodyTooLargeError as error:
            return error_response(error, media_type=FHIR_JSON)
        status, answer = extract_body(body, settings, clock())
        return fhir_response(answer, status)

    files = app_files()
    headers = app_headers(dev=settings.dev)

    @router.get("/app", include_in_schema=False)
    async def app_root() -> Response:
        return RedirectResponse("/app/", status_code=308)

    @router.get("/app/{name:path}", include_in_schema=False)
    async def app_file(name: str) -> Response:
        """The SMART app: launch.html (EHR launch URL), index.html (redirect URL and open launch)."""
        path = files.get(name or "index.html")
        if path is None:
            return fhir_response(operation_outcome("no such file in the app", code="not-found"), 404)
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        cache = "public, max-age=86400" if name.startswith("vendor/") else "no-cache"
        return FileResponse(path, media_type=media, headers={**headers, "Cache-Control": cache})

    @router.get("/fhir/{resource_type}/{resource_id}", responses=documented("The resource.", 404))
    async def read_resource(resource_type: str, resource_id: str) -> Response:
        """A published Questionnaire, CodeSystem or ValueSet (FHIR read, no authentication)."""
        resource = published().get((resource_type, resource_id))
        if resource is None:
            kinds = " / ".join(PUBLISHED_TYPES)
            diagnostics = f"no such resource here; this server publishes {kinds} resources only"
            return fhir_response(operation_outcome(diagnostics, code="not-found"), 404)
        return fhir_response(resource)

    return router


def app_files() -> dict[str, Path]:
    """Every file the app serves, by its path under ``/app/``: nothing outside ``static/`` can be named."""
    return {
        path.relative_to(STATIC).as_posix(): path
        for path in sorted(STATIC.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def app_headers(*, dev: bool) -> dict[str, str]:
    """Security headers of every app file. LHC-Forms (Angular) sets inline styles: 'unsafe-inline'
    for styles only. connect-src: this service, and the EHR's FHIR and token endpoints (https)."""
    loopback = f" {LOOPBACK}" if dev else ""
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src 'self' https:{loopback}",
            "base-uri 'none'",
            "form-action 'none'",
            f"frame-ancestors 'self' https:{loopback}",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
