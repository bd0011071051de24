"""One front door for SDC ``$extract``: bytes in, (status, FHIR JSON) out, for the route and the CLI.

The same guards as the hook route (size, JSON limits) come first; then
:func:`fhir_mappings.extraction.extract`. Every failure is a 4xx OperationOutcome; nothing is stored
and nothing of the response is logged (the findings are patient data).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cds_hooks.outcome import operation_outcome
from fhir_mappings.extraction import ExtractionError, extract
from fhir_mappings.questionnaire import bundled_assessment
from service.config import Settings
from service.hooks.guards import BodyTooLargeError, JsonLimits, RequestRefusedError, decode_json_object

__all__ = ["extract_body"]


def extract_body(body: bytes, settings: Settings, now: datetime) -> tuple[int, dict[str, Any]]:
    """The transaction Bundle (200) or an OperationOutcome (400/413) for one request body."""
    try:
        if len(body) > settings.max_body_bytes:
            raise BodyTooLargeError
        document = decode_json_object(body, JsonLimits.from_settings(settings))
    except RequestRefusedError as refusal:
        return refusal.status, refusal.outcome()
    try:
        return 200, extract(document, bundled_assessment(), now=now)
    except ExtractionError as error:
        return 400, operation_outcome(str(error), code="invalid", expression=error.path)
