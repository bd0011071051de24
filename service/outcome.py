"""FHIR OperationOutcome bodies for every error response. No stack trace ever leaves the process."""

from __future__ import annotations

from typing import Any, Literal

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
