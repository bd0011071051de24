"""Hypothesis strategies shared by the tests: JSON, FHIR resources (plausible and hostile), hook requests.

The FHIR strategies draw codes the mapper really reads (every code of the project's value sets and
every finding of the fact vocabulary), so generated resources reach the rules, and then damage a
share of them: a member replaced by arbitrary JSON of the wrong type, a status or date that is
not one, another patient's subject. Requests are for the patient `p1`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.fhir_builders import FINDING, LOINC, NOW, SNOMED, UCUM

DATA = Path(__file__).resolve().parents[1] / "fhir_mappings" / "data"
PATIENT_ID = "p1"

_VALUESETS = json.loads((DATA / "valuesets.json").read_text())["valuesets"]
KNOWN_CODES: list[tuple[str, str]] = sorted(
    {(code["system"], code["code"]) for valueset in _VALUESETS.values() for code in valueset["codes"]}
)
FINDING_CODES: list[str] = sorted(
    set(re.findall(r'"finding":\s*"([a-z0-9-]+)"', (DATA / "facts.json").read_text()))
)

# --- JSON ------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

# --- FHIR pieces -----------------------------------------------------------------------------

codings = st.one_of(
    st.sampled_from(KNOWN_CODES).map(lambda pair: {"system": pair[0], "code": pair[1]}),
    st.sampled_from(FINDING_CODES).map(lambda code: {"system": FINDING, "code": code}),
    st.fixed_dictionaries(
        {"system": st.sampled_from([SNOMED, LOINC, "urn:example"]), "code": st.text(max_size=12)}
    ),
)
codeable_concepts = st.fixed_dictionaries(
    {"coding": st.lists(codings, min_size=1, max_size=3)}, optional={"text": st.text(max_size=20)}
)
recent_date_times = st.integers(min_value=0, max_value=60 * 24 * 30).map(
    lambda minutes: (NOW - timedelta(minutes=minutes)).isoformat()
)
date_times = st.one_of(
    recent_date_times,
    st.datetimes(
        min_value=datetime(1990, 1, 1, tzinfo=UTC).replace(tzinfo=None),  # Hypothesis wants naive bounds
        max_value=datetime(2030, 12, 31, tzinfo=UTC).replace(tzinfo=None),
        timezones=st.just(UTC),
    ).map(lambda moment: moment.isoformat()),
    st.integers(min_value=0, max_value=4000).map(
        lambda days: (NOW - timedelta(days=days)).date().isoformat()
    ),
    st.sampled_from(["2026", "2026-11", "not a date", "2026-13-45T99:00:00Z", ""]),
)
quantities = st.fixed_dictionaries(
    {
        "value": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers()),
        "unit": st.sampled_from(
            ["cm", "mm", "kg", "mg/L", "ug/mL", "ng/mL{FEU}", "min", "wk", "1", "Cel", "[degF]", "%"]
        ),
    },
    optional={
        "system": st.just(UCUM),
        "code": st.sampled_from(["cm", "mm", "mg/L", "ug/mL", "1", "Cel", "{ratio}"]),
    },
)
values = st.one_of(
    st.fixed_dictionaries({"valueBoolean": st.booleans()}),
    st.fixed_dictionaries({"valueQuantity": quantities}),
    st.fixed_dictionaries({"valueCodeableConcept": codeable_concepts}),
    st.fixed_dictionaries({"valueInteger": st.integers(min_value=-(2**31), max_value=2**31 - 1)}),
    st.fixed_dictionaries({"valueString": st.text(max_size=30)}),
    st.fixed_dictionaries({"dataAbsentReason": codeable_concepts}),
    st.just({}),
)
subjects = st.one_of(
    st.just({"reference": f"Patient/{PATIENT_ID}"}),
    st.just({"reference": f"https://ehr.example.org/fhir/Patient/{PATIENT_ID}"}),
    st.just({"reference": "urn:uuid:5d3f2a1e-0000-4000-8000-000000000001"}),
)
ids = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)


def damaged(resources: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Resources of which about one in three has a member replaced (or added) with arbitrary JSON."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        resource = draw(resources)
        if draw(st.integers(min_value=0, max_value=2)) == 0:
            key = draw(st.sampled_from([*sorted(resource), "extension", "component", "contained"]))
            resource[key] = draw(json_values)
        return resource

    return build()


@st.composite
def observations(draw: st.DrawFn) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": draw(ids),
        "status": draw(
            st.sampled_from(
                ["final", "amended", "corrected", "preliminary", "entered-in-error", "unknown", "bogus"]
            )
        ),
        "code": draw(codeable_concepts),
        "subject": draw(subjects),
        **draw(values),
    }
    if draw(st.booleans()):
        resource["effectiveDateTime"] = draw(date_times)
    else:
        resource["effectivePeriod"] = {"start": draw(date_times), "end": draw(date_times)}
    if draw(st.booleans()):
        resource["bodySite"] = draw(codeable_concepts)
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        resource["component"] = draw(
            st.lists(
                st.builds(lambda code, value: {"code": code, **value}, codeable_concepts, values), max_size=3
            )
        )
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        resource["interpretation"] = draw(st.lists(codeable_concepts, max_size=2))
    return resource


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    status = "http://terminology.hl7.org/CodeSystem/condition-"
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": draw(ids),
        "clinicalStatus": {
            "coding": [
                {
                    "system": status + "clinical",
                    "code": draw(
                        st.sampled_from(
                            ["active", "recurrence", "relapse", "inactive", "remission", "resolved", "x"]
                        )
                    ),
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": status + "ver-status",
                    "code": draw(
                        st.sampled_from(
                            ["confirmed", "provisional", "differential", "refuted", "entered-in-error", "x"]
                        )
                    ),
                }
            ]
        },
        "code": draw(codeable_concepts),
        "subject": draw(subjects),
    }
    for key in ("recordedDate", "onsetDateTime", "abatementDateTime"):
        if draw(st.booleans()):
            resource[key] = draw(date_times)
    if draw(st.booleans()):
        resource["bodySite"] = [draw(codeable_concepts)]
    return resource


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": PATIENT_ID}
    if draw(st.booleans()):
        resource["birthDate"] = draw(st.one_of(date_times, st.dates().map(lambda day: day.isoformat())))
    if draw(st.booleans()):
        resource["gender"] = draw(st.sampled_from(["male", "female", "other", "unknown", "x"]))
    return resource


def bundles(resources: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.lists(resources, max_size=8).map(
        lambda found: {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in found],
        }
    )


def calf_pain_observations() -> st.SearchStrategy[dict[str, Any]]:
    """A recent, final calf-pain finding on one side or both: the complaint every rule starts from."""
    side = st.sampled_from(["62175007", "32153003", "40927001"])
    return st.builds(
        lambda identifier, site, when: {
            "resourceType": "Observation",
            "id": identifier,
            "status": "final",
            "code": {"coding": [{"system": SNOMED, "code": "300954003"}]},
            "subject": {"reference": f"Patient/{PATIENT_ID}"},
            "effectiveDateTime": when,
            "bodySite": {"coding": [{"system": SNOMED, "code": site}]},
        },
        ids,
        side,
        recent_date_times,
    )


@st.composite
def hook_requests(draw: st.DrawFn) -> dict[str, Any]:
    """patient-view requests for `p1` with plausible, often damaged, FHIR prefetch.

    Most of them document calf pain, so that rules fire and cards come back.
    """
    found = draw(st.lists(damaged(observations()), max_size=8))
    if draw(st.integers(min_value=0, max_value=4)) > 0:
        found.append(draw(calf_pain_observations()))
    entries = [{"resource": resource} for resource in draw(st.permutations(found))]
    prefetch: dict[str, Any] = {
        "patient": draw(st.one_of(damaged(patients()), st.none())),
        "observations": draw(
            st.one_of(
                st.just({"resourceType": "Bundle", "type": "searchset", "entry": entries}),
                damaged(observations()),
                st.none(),
            )
        ),
        "conditions": draw(st.one_of(bundles(damaged(conditions())), st.none())),
    }
    return {
        "hook": "patient-view",
        "hookInstance": draw(st.uuids()).hex,
        "context": {"userId": "Practitioner/example", "patientId": PATIENT_ID},
        "prefetch": prefetch,
    }


def damaged_requests() -> st.SearchStrategy[dict[str, Any]]:
    """Hook requests with, now and then, a top-level member or a prefetch key replaced by any JSON."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        request = draw(hook_requests())
        target = draw(st.sampled_from(["none", "none", "none", "top", "prefetch", "context"]))
        if target == "top":
            request[
                draw(
                    st.sampled_from(
                        ["hook", "hookInstance", "context", "prefetch", "fhirServer", "fhirAuthorization"]
                    )
                )
            ] = draw(json_values)
        elif target == "prefetch":
            request["prefetch"][draw(st.sampled_from(["patient", "observations", "conditions"]))] = draw(
                json_values
            )
        elif target == "context":
            request["context"][draw(st.sampled_from(["patientId", "userId", "encounterId"]))] = draw(
                json_values
            )
        return request

    return build()
