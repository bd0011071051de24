"""The OpenAPI document: what the CDS Hooks endpoints take and answer, for people and for fuzzers.

The hook endpoint reads its raw body itself (size limits first, orjson, then the models), so
FastAPI cannot see its request schema; `install_openapi(app)` adds it, together with the card
response, the discovery response and the OperationOutcome of every error status, all generated
from the `cds_hooks.models` classes so that the document cannot drift from the code.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from cds_hooks.models import DiscoveryResponse, FeedbackRequest, HookRequest, HookResponse, PatientViewContext
from service.hooks.discovery import HOOK, OPTIONAL_KEYS, PREFETCH_TEMPLATES, SERVICE_ID

__all__ = [
    "DISCOVERY_PATH",
    "ERRORS",
    "FEEDBACK_PATH",
    "FHIR_RESOURCE",
    "JSON",
    "OPERATION_OUTCOME",
    "REF",
    "REPORT_PATH",
    "REQUIRED_KEYS",
    "SERVICE_PATH",
    "describe",
    "install_openapi",
]

REF = "#/components/schemas/{model}"
JSON = "application/json"
SERVICE_PATH = "/cds-services/{service_id}"
DISCOVERY_PATH = "/cds-services"
FEEDBACK_PATH = "/cds-services/{service_id}/feedback"
REPORT_PATH = "/governance/report"

OPERATION_OUTCOME: dict[str, Any] = {
    "title": "OperationOutcome",
    "description": "FHIR R4 OperationOutcome: every error answer (never a stack trace).",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"type": "string", "enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
FHIR_RESOURCE: dict[str, Any] = {
    "title": "FhirResource",
    "description": "A FHIR R4 resource (JSON), or a searchset Bundle of them.",
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
    "additionalProperties": True,
}
ERRORS: dict[int, str] = {
    400: "The request is malformed, inconsistent (another patient, wrong hook, wrong resource types) or over a JSON limit.",
    401: 'No valid CDS Client JWT: `WWW-Authenticate: Bearer` (no token) or `Bearer error="invalid_token", error_description="<category>"` (RFC 6750).',
    404: "No CDS service with this id.",
    412: "Prefetch is missing and cannot be fetched from fhirServer.",
    413: "The body is larger than the configured limit.",
    415: "The body is declared as something other than JSON.",
    503: "The service is still starting (authentication not ready); try again.",
}

# Without a fhirServer, the prefetch must hold every key but the optional ones (missing = no data).
REQUIRED_KEYS = [key for key in PREFETCH_TEMPLATES if key not in OPTIONAL_KEYS]


def _component_schemas() -> dict[str, Any]:
    _, document = models_json_schema(
        [
            (HookRequest, "validation"),
            (PatientViewContext, "validation"),
            (HookResponse, "serialization"),
            (DiscoveryResponse, "serialization"),
            (FeedbackRequest, "validation"),
        ],
        ref_template=REF,
    )
    schemas: dict[str, Any] = document["$defs"]
    request = copy.deepcopy(schemas["HookRequest"])
    request["title"] = "CalfPainRequest"
    request["description"] = (
        f"A `{HOOK}` request to `{SERVICE_ID}`. Prefetch keys the service asks for: "
        + ", ".join(f"`{key}` = `{template}`" for key, template in PREFETCH_TEMPLATES.items())
        + "; a key that is absent (or an OperationOutcome) is fetched from fhirServer when one is given."
    )
    properties = request["properties"]
    properties["hook"] = {"type": "string", "enum": [HOOK]}
    properties["context"] = {"$ref": REF.format(model="PatientViewContext")}
    properties["prefetch"] = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    key: {"description": f"`{template}`", **_prefetch_value(template)}
                    for key, template in PREFETCH_TEMPLATES.items()
                },
                "additionalProperties": True,
            },
            {"type": "null"},
        ]
    }
    fhir_server = {"type": "string", "pattern": "^https?://[^/?#\\s\\x00]+[^\\x00]*$", "maxLength": 2048}
    properties["fhirServer"] = {"anyOf": [fhir_server, {"type": "null"}]}
    # Without a fhirServer to fetch from, the prefetch must hold every key (else 412).
    request["anyOf"] = [
        {"required": ["fhirServer"], "properties": {"fhirServer": fhir_server}},
        {"required": ["prefetch"], "properties": {"prefetch": {"required": REQUIRED_KEYS}}},
    ]
    # cds-r-1: fhirAuthorization needs a fhirServer.
    request["if"] = {
        "required": ["fhirAuthorization"],
        "properties": {"fhirAuthorization": {"type": "object"}},
    }
    request["then"] = {"required": ["fhirServer"], "properties": {"fhirServer": fhir_server}}
    schemas["CalfPainRequest"] = request
    _feedback_rules(schemas)
    schemas["FhirResource"] = FHIR_RESOURCE
    schemas["OperationOutcome"] = OPERATION_OUTCOME
    return schemas


def _prefetch_value(template: str) -> dict[str, Any]:
    """What a prefetch key may hold: the resource its template reads, or for a search a Bundle
    (searchset or collection) or a single resource of the type searched; an OperationOutcome (the
    client could not prefetch it); or null. (A read must also be the context's resource: that is
    checked by the service, and is a 400 when it is not.)"""
    resource_type = template.split("?", 1)[0].split("/", 1)[0]
    resource = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"const": resource_type}},
    }
    outcome = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"const": "OperationOutcome"}},
    }
    if "?" not in template:
        return {"anyOf": [resource, outcome, {"type": "null"}]}
    entry = {
        "type": "object",
        "required": ["resource"],
        "properties": {"resource": {"$ref": REF.format(model="FhirResource")}},
    }
    bundle = {
        "type": "object",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": ["searchset", "collection"]},
            "entry": {"type": "array", "items": entry},
        },
    }
    return {"anyOf": [bundle, resource, outcome, {"type": "null"}]}


def _feedback_rules(schemas: dict[str, Any]) -> None:
    """The feedback rules the models check in code (cds-fb-2, cds-fb-3), written as JSON Schema."""
    entry = schemas["FeedbackEntry"]
    entry["properties"]["outcomeTimestamp"]["format"] = "date-time"
    entry["if"] = {"properties": {"outcome": {"const": "accepted"}}}
    entry["then"] = {
        "required": ["acceptedSuggestions"],
        "properties": {"acceptedSuggestions": {"minItems": 1}, "overrideReason": {"type": "null"}},
    }
    entry["else"] = {"properties": {"acceptedSuggestions": {"maxItems": 0}}}
    schemas["OverrideReason"]["anyOf"] = [
        {"required": ["reason"], "properties": {"reason": {"type": "object"}}},
        {"required": ["userComment"], "properties": {"userComment": {"type": "string", "minLength": 1}}},
    ]


def _json_content(schema: str) -> dict[str, Any]:
    return {JSON: {"schema": {"$ref": REF.format(model=schema)}}}


def _json(schema: str, description: str) -> dict[str, Any]:
    """A JSON response of the component ``schema``."""
    return {"description": description, "content": _json_content(schema)}


def _json_body(schema: str) -> dict[str, Any]:
    """A required JSON request body of the component ``schema`` (the routes read it themselves)."""
    return {"required": True, "content": _json_content(schema)}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json("OperationOutcome", ERRORS[status]) for status in statuses}


def describe(document: dict[str, Any]) -> dict[str, Any]:
    """Add request and response schemas to the document FastAPI generated."""
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(_component_schemas())
    paths = document.get("paths", {})
    discovery = paths.get(DISCOVERY_PATH, {}).get("get")
    if discovery is not None:
        discovery["responses"] = {
            "200": _json("DiscoveryResponse", "The CDS services offered here."),
            **_errors(401),
        }
    service = paths.get(SERVICE_PATH, {}).get("post")
    if service is not None:
        service["requestBody"] = _json_body("CalfPainRequest")
        for parameter in service.get("parameters", []):
            if parameter.get("name") == "service_id":
                parameter["schema"] = {"type": "string", "enum": [SERVICE_ID], "title": "Service Id"}
        service["responses"] = {
            "200": _json("HookResponse", "Cards (possibly none), each checked against CDS Hooks 2.0.1."),
            **_errors(400, 401, 404, 412, 413, 415, 503),
        }
    feedback = paths.get(FEEDBACK_PATH, {}).get("post")
    if feedback is not None:
        feedback["requestBody"] = _json_body("FeedbackRequest")
        feedback["responses"] = {
            "200": {"description": "The feedback is queued for the audit trail; the body is empty."},
            **_errors(400, 401, 404, 413, 503),
        }
    report = paths.get(REPORT_PATH, {}).get("get")
    if report is not None:
        report["responses"] = {
            "200": {
                "description": "The governance report.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
            **_errors(400, 401, 503),
        }
    _drop_unused(components["schemas"], ("HTTPValidationError", "ValidationError"), paths)
    return document


def _drop_unused(schemas: dict[str, Any], names: tuple[str, ...], paths: dict[str, Any]) -> None:
    """Remove FastAPI's 422 schemas once no operation refers to them (we answer 400 instead)."""
    for name in names:
        reference = json.dumps(REF.format(model=name))
        if reference not in json.dumps(paths) and reference not in json.dumps(schemas):
            schemas.pop(name, None)


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` return the described document (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
