"""Routes of the assessment: the published FHIR resources and SDC ``$extract``.

``GET /fhir/{Questionnaire|CodeSystem|ValueSet}/{id}`` serves the resources of
:mod:`fhir_mappings.conformance`; they are public (conformance resources, no patient data).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_mappings.conformance import PUBLISHED_TYPES, published
from service.assessment.extract import extract_body
from service.config import Settings
from service.http_body import BodyTooLargeError, read_body
from service.outcome import operation_outcome
from service.request_guard import is_json_media_type

FHIR_JSON = "application/fhir+json"
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


def assessment_router(settings: Settings, clock: Callable[[], datetime]) -> APIRouter:
    """The assessment's routes; ``clock`` dates extracted Observations when a response has no ``authored``."""
    router = APIRouter(tags=["assessment"])

    @router.post(
        "/fhir/QuestionnaireResponse/$extract",
        responses=documented("The transaction Bundle: the response and its Observations.", 400, 413, 415),
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
        except BodyTooLargeError:
            return fhir_response(operation_outcome("request body too large", code="too-long"), 413)
        status, answer = extract_body(body, settings, clock())
        return fhir_response(answer, status)

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
