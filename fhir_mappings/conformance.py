"""The FHIR resources the project publishes: the assessment Questionnaire, its CodeSystems, its ValueSets.

Every resource is built from the bundled data (``data/*.json``), so what is published is what the
mapper reads: the ValueSets are ``valuesets.json`` as FHIR ``ValueSet`` resources (one
``compose.include`` per code system, each code with its display), the CodeSystems are the bundled
CodeSystem files, the Questionnaire is :func:`~fhir_mappings.questionnaire.bundled_assessment`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from fhir_mappings.questionnaire import BASE, bundled_assessment, finding_codesystem

__all__ = ["PUBLISHED_TYPES", "bundled_codesystem", "published", "valueset_resource"]

PUBLISHED_TYPES = ("Questionnaire", "CodeSystem", "ValueSet")


def valueset_resource(name: str, body: Mapping[str, Any], version: str) -> dict[str, Any]:
    """One entry of ``valuesets.json`` as a FHIR R4 ValueSet (each code's evidence kept as a comment)."""
    includes: dict[str, list[dict[str, str]]] = {}
    for code in body["codes"]:
        includes.setdefault(str(code["system"]), []).append(
            {"code": str(code["code"]), "display": str(code["display"])}
        )
    return {
        "resourceType": "ValueSet",
        "id": name,
        "url": f"{BASE}/ValueSet/{name}",
        "version": version,
        "name": "".join(part.capitalize() for part in name.split("-")),
        "title": str(body.get("title", name)),
        "status": "active",
        "experimental": False,
        "publisher": "calf-cds",
        "description": str(body.get("description") or body.get("title", name)),
        "compose": {
            "include": [{"system": system, "concept": concepts} for system, concepts in includes.items()]
        },
    }


def _data(name: str) -> Any:
    return json.loads(resources.files("fhir_mappings").joinpath(f"data/{name}").read_text("utf-8"))


#: The project's CodeSystems shipped as files (``data/CodeSystem-<id>.json``); the finding
#: CodeSystem is built from the assessment instead.
BUNDLED_CODESYSTEMS = ("recommendation", "override-reason", "orderable")


@cache
def bundled_codesystem(codesystem_id: str) -> Mapping[str, Any]:
    """The bundled CodeSystem ``codesystem_id`` (one of :data:`BUNDLED_CODESYSTEMS`), read once."""
    if codesystem_id not in BUNDLED_CODESYSTEMS:
        raise KeyError(codesystem_id)
    document: Mapping[str, Any] = _data(f"CodeSystem-{codesystem_id}.json")
    return document


@cache
def published() -> Mapping[tuple[str, str], Mapping[str, Any]]:
    """Every published resource by (resource type, id)."""
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    questionnaire = bundled_assessment().to_questionnaire()
    out["Questionnaire", questionnaire["id"]] = questionnaire
    for codesystem in (finding_codesystem(), *map(bundled_codesystem, BUNDLED_CODESYSTEMS)):
        out["CodeSystem", str(codesystem["id"])] = codesystem
    document = _data("valuesets.json")
    for name, body in document["valuesets"].items():
        out["ValueSet", name] = valueset_resource(name, body, str(document["version"]))
    return out
