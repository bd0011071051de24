"""Small builders for FHIR R4 JSON used across the tests (real shapes, verified codes only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
FINDING = "http://calf-cds.org/fhir/CodeSystem/finding"
UCUM = "http://unitsofmeasure.org"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
RIGHT_LEG = {"coding": [{"system": SNOMED, "code": "62175007", "display": "Structure of right lower limb"}]}
LEFT_LEG = {"coding": [{"system": SNOMED, "code": "32153003", "display": "Structure of left lower limb"}]}
_counter = iter(range(1, 10**9))


def patient(
    patient_id: str = "p1", *, birth_date: str = "1960-05-01", gender: str = "male"
) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "birthDate": birth_date, "gender": gender}


def observation(
    system: str,
    code: str,
    *,
    days_ago: float = 1,
    status: str = "final",
    patient_id: str = "p1",
    body_site: dict[str, Any] | None = None,
    **value: Any,
) -> dict[str, Any]:
    """An Observation dated ``days_ago`` before NOW, with any ``value[x]`` given as keyword."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"obs-{next(_counter)}",
        "status": status,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": (NOW - timedelta(days=days_ago)).isoformat(),
    }
    if body_site is not None:
        resource["bodySite"] = body_site
    resource.update(value)
    return resource


def finding(code: str, value: Any = True, **kwargs: Any) -> dict[str, Any]:
    """A finding from the project's CodeSystem; booleans become valueBoolean."""
    if isinstance(value, bool):
        return observation(FINDING, code, valueBoolean=value, **kwargs)
    return observation(FINDING, code, **value, **kwargs)


def quantity(value: float, unit: str) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def calf_pain(side: dict[str, Any] = RIGHT_LEG, **kwargs: Any) -> dict[str, Any]:
    return observation(SNOMED, "300954003", body_site=side, **kwargs)


def condition(
    system: str,
    code: str,
    *,
    clinical: str = "active",
    verification: str = "confirmed",
    patient_id: str = "p1",
    days_ago: float = 10,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"cond-{next(_counter)}",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}
            ]
        },
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}
            ]
        },
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "recordedDate": (NOW - timedelta(days=days_ago)).isoformat(),
    }
    resource.update(extra)
    return resource


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }


#: The search prefetch keys of the calf-pain service and the resource type under each.
PREFETCH_KEYS = {
    "observations": "Observation",
    "conditions": "Condition",
    "procedures": "Procedure",
    "medication_requests": "MedicationRequest",
    "medication_statements": "MedicationStatement",
    "diagnostic_reports": "DiagnosticReport",
    "encounters": "Encounter",
}


def hook_request(
    resources: list[dict[str, Any]],
    *,
    patient_resource: dict[str, Any] | None = None,
    patient_id: str = "p1",
    **extra: Any,
) -> dict[str, Any]:
    """A patient-view request with every prefetch key filled (each resource under the key of its type)."""
    of_type = {kind: [r for r in resources if r["resourceType"] == kind] for kind in PREFETCH_KEYS.values()}
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
        "prefetch": {
            "patient": patient_resource or patient(patient_id),
            **{key: bundle(of_type[kind]) for key, kind in PREFETCH_KEYS.items()},
        },
    }
    body.update(extra)
    return body
