"""The FHIR R4 OperationOutcome: the body of every error answer, and which protocol error answers what.

CDS Hooks 3.0 (ballot) has a service answer an error with an OperationOutcome; this service does so
for every error (no stack trace ever leaves the process). The model covers what the service
writes: one or more issues, each with a severity, a code from FHIR's ``issue-type`` value set, the
diagnostics, and the JSON pointer of the offending member as the issue's ``expression``.

- :class:`OperationOutcome`, :class:`OutcomeIssue`: the model (``to_json()`` omits absent members);
- :func:`operation_outcome`: the single-issue body, as JSON;
- :func:`error_outcome`: the status and body of a :class:`~cds_hooks.errors.CdsHooksError`, for
  the service and `calf-cds try` alike (``service.http.errors`` answers every other error).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cds_hooks.errors import CdsHooksError, FhirFetchError, PrefetchMissingError, RequestError

__all__ = [
    "IssueSeverity",
    "IssueType",
    "OperationOutcome",
    "OutcomeIssue",
    "error_outcome",
    "operation_outcome",
]

IssueSeverity = Literal["fatal", "error", "warning", "information"]
# The codes of FHIR R4's issue-type value set (http://hl7.org/fhir/R4/valueset-issue-type.html)
# that this service uses.
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
    "transient",
    "not-supported",
]


class OutcomeIssue(BaseModel):
    """One issue: how bad, what kind, what happened and (a JSON pointer) where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: IssueSeverity
    code: IssueType
    diagnostics: str | None = None
    expression: list[str] | None = Field(default=None, min_length=1)


class OperationOutcome(BaseModel):
    """A FHIR R4 OperationOutcome with at least one issue."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    resource_type: Literal["OperationOutcome"] = Field(default="OperationOutcome", alias="resourceType")
    issue: list[OutcomeIssue] = Field(min_length=1)

    def to_json(self) -> dict[str, Any]:
        """The resource as FHIR JSON, without absent members."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def operation_outcome(
    diagnostics: str,
    *,
    code: IssueType = "invalid",
    severity: IssueSeverity = "error",
    expression: str | None = None,
) -> dict[str, Any]:
    """A single-issue OperationOutcome as JSON; ``expression`` locates the problem (a JSON pointer)."""
    issue = OutcomeIssue(
        severity=severity, code=code, diagnostics=diagnostics, expression=[expression] if expression else None
    )
    return OperationOutcome(issue=[issue]).to_json()


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
