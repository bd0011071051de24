"""FHIR OperationOutcome bodies for every error response. No stack trace ever leaves the process."""

from __future__ import annotations

from typing import Any, Literal

from cds_hooks.errors import CdsHooksError, FhirFetchError, PrefetchMissingError, RequestError

IssueType = Literal[
    "invalid",
    "structure",
    "required",
    "value",
    "not-found",
    "too-long",
    "security",
    "login",
    "exception",
    "timeout",
    "incomplete",
    "processing",
    "throttled",
    "not-supported",
]


def operation_outcome(
    diagnostics: str,
    *,
    code: IssueType = "invalid",
    severity: Literal["fatal", "error", "warning", "information"] = "error",
    expression: str | None = None,
) -> dict[str, Any]:
    """A single-issue OperationOutcome; ``expression`` locates the problem (a JSON pointer)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def error_outcome(error: CdsHooksError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OperationOutcome for a protocol error (the service and `calf-cds try`)."""
    if isinstance(error, PrefetchMissingError):
        return 412, operation_outcome(str(error), code="incomplete")
    if isinstance(error, FhirFetchError):
        diagnostics = f"could not read the patient's data from fhirServer: {error}"
        return 412, operation_outcome(diagnostics, code="incomplete")
    if isinstance(error, RequestError):
        return 400, operation_outcome(str(error), code="invalid", expression=error.pointer or None)
    return 400, operation_outcome(str(error), code="invalid")
