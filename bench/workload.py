"""Realistic ``patient-view`` request bodies for the load benchmark.

Each body is one patient's chart: ~100 real Observations (FHIR R4 searchset, vitals and labs,
``../shared/fhir-data/derived/observations-1000-searchset.json``) and ~20 real Conditions (Synthea
bulk export, ``../shared/fhir-data/synthea-bulk-10-patients/Condition.000.ndjson``), re-pointed at
the patient, plus the findings of one calf-pain pattern taken from the clinical test cases in
``tests/rules/cases`` (written from the guidance, independently of the rules), dated relative to
now. Patterns, and how often a chart shows each:

    nothing        40 %   no calf complaint (gate case): no cards
    strain         20 %   calf strain during sport: conservative care with a safety net
    claudication   15 %   exertional calf pain, no ABI on file: resting ABI
    dvt            15 %   DVT signs (Wells ≥ 2): duplex ultrasound within 4 h
    red-flag       10 %   acute limb ischaemia: urgent referral (critical)

Bodies are encoded once; every request gets a fresh ``hookInstance`` by replacing a placeholder of
the same length in the bytes.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FHIR_DATA = ROOT.parent / "shared" / "fhir-data"
OBSERVATIONS = FHIR_DATA / "derived" / "observations-1000-searchset.json"
CONDITIONS = FHIR_DATA / "synthea-bulk-10-patients" / "Condition.000.ndjson"
CASES = ROOT / "tests" / "rules" / "cases"
PLACEHOLDER = b"00000000-hook-instance-placeholder00"  # as long as a UUID

# pattern → (case file, preferred case id, expected topics, share of the traffic)
PATTERNS: dict[str, tuple[str, str, tuple[str, ...], float]] = {
    "nothing": ("gate.json", "gate-no-complaint-vascular-risk-factors", (), 0.40),
    "strain": (
        "musculoskeletal.json",
        "msk-calf-strain-pop-icd-conservative-safety-net",
        ("conservative",),
        0.20,
    ),
    "claudication": ("arterial.json", "art-claudication-no-abi-resting-abi", ("abi",), 0.15),
    "dvt": ("venous.json", "ven-entire-leg-swollen-plus-collateral-veins-likely", ("duplex-dvt",), 0.15),
    "red-flag": ("red-flags.json", "rf-ali-sudden-onset-cold-pale-limb", ("urgent-referral",), 0.10),
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2}))?$")


@dataclass(frozen=True)
class Body:
    pattern: str
    template: bytes  # JSON with PLACEHOLDER where the hookInstance goes
    resources: int = 0  # Observations and Conditions in its prefetch

    def render(self, hook_instance: str) -> bytes:
        return self.template.replace(PLACEHOLDER, hook_instance.encode(), 1)


def _case(file_name: str, case_id: str, topics: tuple[str, ...]) -> dict[str, Any]:
    """The preferred case, or the first in the file that expects the same topics."""
    cases: list[dict[str, Any]] = json.loads((CASES / file_name).read_text("utf-8"))
    for case in cases:
        if case["id"] == case_id:
            return case
    for case in cases:
        if tuple(case["expect"].get("topics", ())) == topics:
            return case
    raise LookupError(f"no case in {file_name} expects {topics}")


def _shift(value: Any, delta: timedelta) -> Any:
    """Move every FHIR date and dateTime in ``value`` by ``delta`` (keeps ages and intervals)."""
    if isinstance(value, dict):
        return {k: _shift(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, delta) for v in value]
    if isinstance(value, str) and _DATE.match(value):
        if "T" not in value:
            return (datetime.fromisoformat(value) + delta).date().isoformat()
        return (datetime.fromisoformat(value.replace("Z", "+00:00")) + delta).isoformat()
    return value


def _repoint(resource: dict[str, Any], patient_id: str) -> dict[str, Any]:
    resource = dict(resource, subject={"reference": f"Patient/{patient_id}"})
    resource.pop("encounter", None)
    return resource


def background(
    observations: int = 100, conditions: int = 20
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ordinary chart: the first ``observations`` Observations and ``conditions`` Conditions of the
    real data sets. Past the 1,000 real Observations they repeat, each copy with an id of its own."""
    source = [e["resource"] for e in json.loads(OBSERVATIONS.read_text("utf-8"))["entry"]]
    chart = source[:observations]
    while len(chart) < observations:
        chart += [
            dict(resource, id=f"{resource.get('id', 'obs')}-{len(chart) + index}")
            for index, resource in enumerate(source[: observations - len(chart)])
        ]
    with CONDITIONS.open(encoding="utf-8") as lines:
        found = [json.loads(line) for _, line in zip(range(conditions), lines, strict=False)]
    return chart, found


def build_bodies(patients_per_pattern: int = 20, now: datetime | None = None) -> list[Body]:
    """``patients_per_pattern`` charts for every pattern, each with its own patient id."""
    now = now or datetime.now(UTC)
    observations, conditions = background()
    return [
        _chart_body(pattern, f"bench-{pattern}-{number}", observations, conditions, now)
        for pattern in PATTERNS
        for number in range(patients_per_pattern)
    ]


def sized_body(
    observations: int, conditions: int = 20, pattern: str = "dvt", now: datetime | None = None
) -> tuple[Body, int]:
    """One chart of ``observations`` real Observations and ``conditions`` real Conditions plus the
    findings of ``pattern``; the body and how many resources it holds."""
    background_obs, background_cond = background(observations, conditions)
    body = _chart_body(
        pattern, f"bench-{pattern}-{observations}", background_obs, background_cond, now or datetime.now(UTC)
    )
    return body, body.resources


def _chart_body(
    pattern: str,
    patient_id: str,
    observations: list[dict[str, Any]],
    conditions: list[dict[str, Any]],
    now: datetime,
) -> Body:
    file_name, case_id, topics, _ = PATTERNS[pattern]
    case = _case(file_name, case_id, topics)
    delta = now - datetime.fromisoformat(case["now"].replace("Z", "+00:00"))
    own = [_repoint(r, patient_id) for r in _shift(case["resources"], delta)]
    patient = _shift(case["patient"], delta)
    chart_obs = [_repoint(r, patient_id) for r in observations] + [
        r for r in own if r["resourceType"] == "Observation"
    ]
    chart_cond = [_repoint(r, patient_id) for r in conditions] + [
        r for r in own if r["resourceType"] == "Condition"
    ]
    document = {
        "hook": "patient-view",
        "hookInstance": PLACEHOLDER.decode(),
        "context": {"userId": "Practitioner/bench", "patientId": patient_id},
        "prefetch": {
            "patient": dict(patient, id=patient_id),
            "observations": _bundle(chart_obs),
            "conditions": _bundle(chart_cond),
        },
    }
    encoded = json.dumps(document, separators=(",", ":")).encode()
    return Body(pattern, encoded, len(chart_obs) + len(chart_cond))


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }


def expected_topics() -> dict[str, tuple[str, ...]]:
    return {pattern: spec[2] for pattern, spec in PATTERNS.items()}


def pick(bodies_by_pattern: dict[str, list[Body]], rng: random.Random) -> Body:
    """One body, patterns in their traffic shares."""
    (pattern,) = rng.choices(list(PATTERNS), weights=[spec[3] for spec in PATTERNS.values()])
    return rng.choice(bodies_by_pattern[pattern])
