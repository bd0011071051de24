"""The EHR-shaped chart cases (tests/charts/cases/*.json): loading, background noise, the hook call.

A case is a patient chart as an EHR's FHIR API returns it (US Core profiles, several codings per
concept, identifiers, categories, encounters, performers) plus the cards the guidance expects. A case
may ask for real Synthea Observations as background noise: ``"background": {"source": FILE, "count": N}``
takes the first N Observations of FILE (relative to this folder, e.g.
``background/synthea-observations.ndjson``), re-points them at the case
patient and shifts their dates so that the newest is ``BACKGROUND_NEWEST_DAYS`` days before the
case's ``now`` (the spacing between them is kept). The file is stored once, not once per case.

The hook call is built the way an EHR answers the service's discovery document: one prefetch
entry per template, each a searchset Bundle of the chart's resources of that template's type
(filtered by any ``code`` / ``category`` token parameters the template carries). Resource types
the service does not ask for are not sent, as an EHR would not send them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

HERE = Path(__file__).parent
CASES_DIR = HERE / "cases"
BACKGROUND_NEWEST_DAYS = 21
DATE_KEYS = frozenset(
    {
        "effectiveDateTime",
        "issued",
        "onsetDateTime",
        "abatementDateTime",
        "recordedDate",
        "assertedDate",
        "authoredOn",
        "performedDateTime",
        "start",
        "end",
        "lastUpdated",
    }
)


def parse_instant(text: str) -> datetime:
    """An ISO dateTime with a zone (``Z`` accepted)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(CASES_DIR.glob("*.json")):
        for case in json.loads(path.read_text("utf-8")):
            case["file"] = path.name
            cases.append(case)
    return cases


@cache
def background_source(source: str) -> tuple[str, ...]:
    """A background NDJSON file's lines, one compact Observation each (parsed afresh per case)."""
    path = (HERE / source).resolve()
    assert path.is_relative_to(HERE), f"background source outside tests/charts: {source}"
    return tuple(line for line in path.read_text("utf-8").splitlines() if line.strip())


def walk_dates(node: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """Every (containing object, key) whose value is a date or dateTime in a FHIR JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in DATE_KEYS and isinstance(value, str):
                yield node, key
            else:
                yield from walk_dates(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_dates(item)


def background(case: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The case's background Observations, re-subjected to its patient and dated relative to `now`."""
    spec = case.get("background")
    if not spec:
        return []
    resources = [json.loads(line) for line in background_source(spec["source"])[: int(spec["count"])]]
    stamps = [parse_instant(holder[key]) for resource in resources for holder, key in walk_dates(resource)]
    shift = parse_instant(case["now"]) - timedelta(days=BACKGROUND_NEWEST_DAYS) - max(stamps)
    reference = {"reference": f"Patient/{case['patient']['id']}"}
    for resource in resources:
        resource["subject"] = dict(reference)
        resource.pop("encounter", None)  # Synthea's urn:uuid encounters are not in this chart
        for holder, key in walk_dates(resource):
            holder[key] = (parse_instant(holder[key]) + shift).isoformat()
    return resources


def chart(case: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every resource of the case's chart except the Patient: its own, then the background."""
    return list(case["resources"]) + background(case)


def search_parameters(template: str) -> tuple[str, list[tuple[str, str]]]:
    """``Type?a=b&c=d`` -> (Type, [(a, b), (c, d)])."""
    resource_type, _, query = template.partition("?")
    return resource_type, parse_qsl(query, keep_blank_values=True)


def token_matches(concepts: Iterable[Mapping[str, Any]], value: str) -> bool:
    """FHIR token search: ``system|code``, ``|code`` or ``code``; comma-separated values are OR."""
    for wanted in value.split(","):
        system, bar, code = wanted.rpartition("|")
        for concept in concepts:
            for coding in concept.get("coding", []):
                if coding.get("code") == code and (not bar or coding.get("system") == (system or None)):
                    return True
    return False


def matches(resource: Mapping[str, Any], parameters: list[tuple[str, str]]) -> bool:
    """Applies the ``code`` and ``category`` parameters of a search; any other parameter is ignored
    (the result then holds more than was asked, never less)."""
    for name, value in parameters:
        if name == "code" and not token_matches([resource.get("code", {})], value):
            return False
        if name == "category":
            categories = resource.get("category", [])
            if isinstance(categories, dict):
                categories = [categories]
            if not token_matches(categories, value):
                return False
    return True


def hook_request(case: Mapping[str, Any], templates: Mapping[str, str], hook_instance: str) -> dict[str, Any]:
    """A patient-view call whose prefetch answers every template with the case's chart."""
    patient = case["patient"]
    resources = chart(case)
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        resource_type, parameters = search_parameters(template)
        if not parameters and "/" in resource_type:  # a read, e.g. Patient/{{context.patientId}}
            if resource_type.startswith("Patient/"):
                prefetch[key] = patient
            continue
        found = [r for r in resources if r["resourceType"] == resource_type and matches(r, parameters)]
        prefetch[key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {
                    "fullUrl": f"https://ehr.example.org/fhir/R4/{r['resourceType']}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in found
            ],
        }
    return {
        "hook": "patient-view",
        "hookInstance": hook_instance,
        "context": {"userId": "Practitioner/epic-prov-4471", "patientId": patient["id"]},
        "prefetch": prefetch,
    }
