"""JSON and OperationOutcome responses, written with orjson (no second serialisation pass)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from cds_hooks.outcome import IssueType, operation_outcome

__all__ = ["JSON_MEDIA", "json_response", "outcome_response"]

JSON_MEDIA = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_MEDIA, headers=headers)


def outcome_response(
    status: int, diagnostics: str, *, code: IssueType, expression: str | None = None
) -> Response:
    return json_response(operation_outcome(diagnostics, code=code, expression=expression), status)
