"""Hypothesis strategies shared by the tests, in three families.

Patients as facts (for the rule packs): every fact documented true, documented false or missing.
Facts are drawn straight from the vocabulary (``fhir_mappings/data/facts.json``), so a fact added there
is covered here without a change. Numbers are drawn from values on both sides of every threshold the
packs use; dates are drawn from a few offsets so that "older than" comparisons go both ways. Per-leg
facts are drawn per leg and combined the way the mapper combines them (the leg-less fact of a per-leg
boolean is true when any side is true, false when every documented side is false).

JSON, FHIR resources (plausible and hostile) and hook requests (for the service): the FHIR strategies
draw codes the mapper really reads (every code of the project's value sets and every finding of the
fact vocabulary), so generated resources reach the rules, and then damage a share of them: a member
replaced by arbitrary JSON of the wrong type, a status or date that is not one, another patient's
subject. Requests are for the patient `p1`.

Rule expressions (for the expression language): every form, nested, over the small namespace of
:data:`EXPRESSION_NAMES` (facts of each type, a definition, a score, an option).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fhir_mappings.facts import LEGS, Fact, Facts, FactSpec, FactValue, vocabulary
from tests.fhir_builders import FINDING, LOINC, NOW, SNOMED, UCUM

# --- patients as facts -------------------------------------------------------------------------

VOCABULARY = vocabulary()
DECLARED = frozenset(VOCABULARY.types())

# Values on both sides of each threshold (ABI 0.90/0.91, 0.99/1.00, 1.40/1.41; TBI 0.70; D-dimer
# FEU 500 and DDU 250 ng/mL and their age-adjusted forms; calf 3 cm; fever 38.0 °C; ages 50 and 65).
NUMBERS: Mapping[str, tuple[float, ...]] = {
    "abi": (0.35, 0.89, 0.90, 0.91, 0.99, 1.00, 1.10, 1.40, 1.41, 1.60),
    "toe_brachial_index": (0.45, 0.69, 0.70, 0.71, 0.90),
    "d_dimer_feu": (100.0, 499.0, 500.0, 501.0, 690.0, 700.0, 2000.0),
    "d_dimer_ddu": (50.0, 249.0, 250.0, 251.0, 345.0, 350.0, 1000.0),
    "d_dimer_feu_preliminary": (100.0, 499.0, 500.0, 2000.0),
    "d_dimer_ddu_preliminary": (50.0, 249.0, 250.0, 1000.0),
    "calf_circumference_difference": (0.0, 0.5, 2.9, 3.0, 4.5),
    "body_temperature": (36.5, 37.9, 38.0, 39.4),
    "age_years": (19.0, 46.0, 49.0, 50.0, 51.0, 58.0, 64.0, 65.0, 70.0, 88.0),
    "pain_severity": (2.0, 9.0),
    "walking_distance_to_onset": (50.0, 400.0),
    "symptom_duration_weeks": (1.0, 8.0),
    "episode_duration_minutes": (2.0, 15.0),
}
# Documented values that reassure (what a clinician would record as "normal"): missing data must be
# treated at least as cautiously as these.
REASSURING: Mapping[str, float] = {
    "abi": 1.10,
    "toe_brachial_index": 0.90,
    "d_dimer_feu": 100.0,
    "d_dimer_ddu": 50.0,
    "d_dimer_feu_preliminary": 100.0,
    "d_dimer_ddu_preliminary": 50.0,
    "calf_circumference_difference": 0.0,
    "body_temperature": 36.8,
    "pain_severity": 2.0,
}
HOURS_AGO = (1.0, 18.0, 30.0, 96.0, 24.0 * 60, 24.0 * 200, 24.0 * 400)

# What is drawn for one fact: (value, when); value None = not documented.
Drawn = tuple[FactValue, datetime | None]


def _choices(spec: FactSpec) -> tuple[FactValue, ...]:
    """The documented values a fact can take here (not documented is always possible too)."""
    if spec.type == "boolean":
        return (True, False)
    if spec.type == "code":
        return tuple(spec.answers) or ("male", "female")
    return NUMBERS.get(spec.name, (0.0, 1.0, 10.0, 100.0, 1000.0))


# Every fact name the vocabulary produces, with the documented values it may take. A patient is one
# byte per name: the low five bits say "not documented" (small values, so Hypothesis shrinks towards
# patients with less documented) or which value, the high three bits pick the date. One draw per
# patient keeps the property tests fast.
SLOTS: tuple[tuple[str, tuple[FactValue, ...]], ...] = tuple(
    (name, _choices(spec)) for spec in VOCABULARY.specs.values() for name in spec.names()
)


# How sparse a record is: the share of facts documented (sparse records exercise "not documented").
DENSITIES = (0.06, 0.15, 0.3, 0.5)


def _decode(raw: bytes) -> dict[str, Drawn]:
    values: dict[str, Drawn] = {}
    density, cells = DENSITIES[raw[0] % len(DENSITIES)], raw[1:]
    missing_below = round(32 * (1 - density))
    for (name, choices), byte in zip(SLOTS, cells, strict=True):
        low = byte & 0x1F
        if low < missing_below:
            values[name] = (None, None)
            continue
        hours = HOURS_AGO[(byte >> 5) % len(HOURS_AGO)]
        values[name] = (choices[(low - missing_below) % len(choices)], NOW - timedelta(hours=hours))
    return values


def fact_values() -> st.SearchStrategy[dict[str, Drawn]]:
    """Every fact of the vocabulary drawn independently, per leg where the fact is per leg.

    For a per-leg fact the leg-less name holds what was recorded without a side; :func:`as_facts`
    combines the sides. The first byte picks how sparse the record is (:data:`DENSITIES`).
    """
    size = len(SLOTS) + 1
    return st.binary(min_size=size, max_size=size).map(_decode)


def combine_legs(values: Mapping[str, Drawn]) -> dict[str, Drawn]:
    """The leg-less fact of each per-leg boolean, combined from the legs (and the side-less record)
    as the mapper does."""
    combined = dict(values)
    for spec in VOCABULARY.specs.values():
        if not (spec.per_leg and spec.type == "boolean"):
            continue
        sides = [values.get(f"{spec.name}_{leg}", (None, None)) for leg in LEGS]
        sides.append(values.get(spec.name, (None, None)))
        documented = [side for side in sides if side[0] is not None]
        if not documented:
            combined[spec.name] = (None, None)
            continue
        chosen = [side for side in documented if side[0] is True] or documented
        combined[spec.name] = (chosen[0][0], max(when for _, when in chosen if when is not None))
    return combined


def as_facts(values: Mapping[str, Drawn]) -> Facts:
    """The drawn values as the mapper would return them."""
    by_name = {
        name: Fact(name, value, (), when)
        for name, (value, when) in combine_legs(values).items()
        if value is not None
    }
    return Facts(by_name=by_name, declared=DECLARED)


def patients() -> st.SearchStrategy[Facts]:
    """Arbitrary combinations of facts, as Facts."""
    return fact_values().map(as_facts)


def base_name(name: str) -> str:
    """The vocabulary entry a (possibly per-leg) fact name belongs to."""
    for leg in LEGS:
        if name.endswith(f"_{leg}") and name.removesuffix(f"_{leg}") in VOCABULARY.specs:
            return name.removesuffix(f"_{leg}")
    return name


# Findings that can raise a red flag (GUIDANCE §1.4), by vocabulary entry (per-leg sides included).
RED_FLAG_FINDINGS = (
    "acute_limb_ischaemia",
    "sudden_onset",
    "cold_pale_limb",
    "clti",
    "rest_pain_relieved_by_dependency",
    "entire_leg_swollen",
    "cyanosis",
    "compartment_syndrome_acute",
    "direct_trauma",
    "plaster_cast_immobilisation",
    "pain_out_of_proportion",
    "pain_on_passive_stretch",
    "tense_compartment",
    "cauda_equina",
    "saddle_anaesthesia",
    "bladder_bowel_dysfunction",
    "deficit_progressing",
    "fever",
    "body_temperature",
    "cellulitis",
    # red-flag inputs read from pack 1.1.0 on
    "compartment_syndrome_traumatic",
    "compartment_syndrome_chronic",
    "leg_fracture_recent",
    "unreadable_red_flag_finding",
)


def msk_presentations() -> st.SearchStrategy[dict[str, Drawn]]:
    """Right calf pain with a strain and no red-flag finding documented, everything else arbitrary:
    the patients for whom conservative care is on the table and only the DVT question decides."""

    def shape(values: dict[str, Drawn]) -> dict[str, Drawn]:
        shaped = dict(values)
        for entry in RED_FLAG_FINDINGS:
            for name in VOCABULARY.specs[entry].names():
                shaped[name] = (None, None)
        shaped["calf_pain_right"] = (True, NOW - timedelta(hours=6))
        shaped["muscle_belly_tenderness_right"] = (True, NOW - timedelta(hours=3))
        return shaped

    return fact_values().map(shape)


def order_presentations() -> st.SearchStrategy[dict[str, Drawn]]:
    """A current leg complaint, no red-flag finding, and one or more kinds being ordered (each also
    among the drafts), everything else arbitrary: the patients the order-hook rules advise on."""
    kinds = sorted(
        name.removeprefix("order_")
        for name, spec in VOCABULARY.specs.items()
        if spec.origin == "draft-orders" and name.startswith("order_")
    )

    def shape(values: dict[str, Drawn], ordered: set[str]) -> dict[str, Drawn]:
        shaped = dict(values)
        for entry in RED_FLAG_FINDINGS:
            for name in VOCABULARY.specs[entry].names():
                shaped[name] = (None, None)
        shaped["calf_pain_right"] = (True, NOW - timedelta(hours=6))
        for kind in ordered:
            shaped[f"order_{kind}"] = (True, NOW)
            shaped[f"draft_{kind}"] = (True, NOW)
        return shaped

    return st.builds(shape, fact_values(), st.sets(st.sampled_from(kinds), min_size=1, max_size=3))


# --- JSON, FHIR resources and hook requests ----------------------------------------------------

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
def patient_resources(draw: st.DrawFn) -> dict[str, Any]:
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
        "patient": draw(st.one_of(damaged(patient_resources()), st.none())),
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


# --- fail-safe: one DVT or red-flag finding, and what an EHR does to it ----------------------
# A chart is a right-sided calf complaint plus a few concern findings as EHRs write them; a
# perturbation removes, blurs (unsided, unreadable unit, text-only flag, free text) or ages one of them.

V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SIDES = {
    "right": {"coding": [{"system": SNOMED, "code": "62175007", "display": "Structure of right lower limb"}]},
    "left": {"coding": [{"system": SNOMED, "code": "32153003", "display": "Structure of left lower limb"}]},
}
DUPLEX_BY_SIDE = {"right": "39443-7", "left": "39432-0"}
#: name → (concern, how the record is written); each writes a positive (worrying) record.
CONCERN_FINDINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "tenderness": ("dvt", {"code": (SNOMED, "247348008"), "valueBoolean": True}),
    "pitting-oedema": ("dvt", {"code": (SNOMED, "421605005"), "valueBoolean": True}),
    "leg-swelling": ("dvt", {"code": (SNOMED, "102572006"), "valueBoolean": True}),
    "entire-leg-swollen": ("dvt", {"code": (FINDING, "entire-leg-swollen"), "valueBoolean": True}),
    "warmth": ("dvt", {"code": (FINDING, "warmth"), "valueBoolean": True}),
    "d-dimer": ("dvt", {"code": (LOINC, "48065-7"), "valueQuantity": {"value": 1.8, "unit": "ug/mL{FEU}"}}),
    "duplex": (
        "dvt",
        {
            "code": (LOINC, "duplex"),
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "10828004"}]},
        },
    ),
    "cold-pale-limb": ("red_flag", {"code": (FINDING, "cold-pale-limb"), "valueBoolean": True}),
    "passive-stretch": ("red_flag", {"code": (FINDING, "pain-on-passive-stretch"), "valueBoolean": True}),
    "erythema": ("red_flag", {"code": (SNOMED, "247441003"), "valueBoolean": True}),
    "saddle": ("red_flag", {"code": (FINDING, "saddle-anaesthesia"), "valueBoolean": True}),
    "fever": ("red_flag", {"code": (LOINC, "8310-5"), "valueQuantity": {"value": 38.9, "unit": "Cel"}}),
}
BLURS = ("unside", "unit", "text-flag", "free-text")
PERTURBATIONS = ("remove", "age", *BLURS)


def concern_record(name: str, side: str, hours_ago: float, index: int) -> dict[str, Any]:
    """One concern finding as an Observation, positive, on ``side``, ``hours_ago`` before NOW."""
    _, shape = CONCERN_FINDINGS[name]
    system, code = shape["code"]
    if code == "duplex":
        code = DUPLEX_BY_SIDE[side]
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"concern-{index}",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": (NOW - timedelta(hours=hours_ago)).isoformat(),
        **{k: json.loads(json.dumps(v)) for k, v in shape.items() if k != "code"},
    }
    if name not in ("d-dimer", "fever", "saddle", "duplex"):
        resource["bodySite"] = SIDES[side]
    return resource


def perturb(resource: dict[str, Any], how: str) -> dict[str, Any] | None:
    """The record after one perturbation (None: removed)."""
    changed = json.loads(json.dumps(resource))
    value_keys = [k for k in changed if k.startswith("value")]
    if how == "remove":
        return None
    if how == "age":
        changed["effectiveDateTime"] = (NOW - timedelta(days=400)).isoformat()
    elif how == "unside":
        changed.pop("bodySite", None)
        if changed["code"]["coding"][0]["code"] in DUPLEX_BY_SIDE.values():
            changed["code"]["coding"][0]["code"] = "30881-7"  # the unsided venous duplex LOINC
    elif how == "unit" and "valueQuantity" in changed:
        changed["valueQuantity"]["unit"] = "U/?"
    elif how in ("unit", "free-text"):
        for key in value_keys:
            del changed[key]
        changed["valueString"] = "see clinician note"
    elif how == "text-flag":
        for key in value_keys:
            del changed[key]
        changed["interpretation"] = [{"text": "Abnormal - see note"}]
    return changed


@st.composite
def concern_charts(draw: st.DrawFn) -> tuple[list[dict[str, Any]], int]:
    """A chart (right calf pain + 1-4 concern findings) and the index of the one to perturb."""
    names = draw(st.lists(st.sampled_from(sorted(CONCERN_FINDINGS)), min_size=1, max_size=4, unique=True))
    chart: list[dict[str, Any]] = [
        {
            "resourceType": "Observation",
            "id": "calf-pain",
            "status": "final",
            "code": {"coding": [{"system": SNOMED, "code": "300954003"}]},
            "subject": {"reference": f"Patient/{PATIENT_ID}"},
            "effectiveDateTime": (NOW - timedelta(hours=6)).isoformat(),
            "valueBoolean": True,
            "bodySite": SIDES["right"],
        }
    ]
    for index, name in enumerate(names):
        side = draw(st.sampled_from(["right", "left"]))
        hours = draw(st.sampled_from([2.0, 12.0, 30.0]))
        chart.append(concern_record(name, side, hours, index))
    return chart, draw(st.integers(min_value=1, max_value=len(chart) - 1))


# --- the other resource types the mapper reads (issue 11), plausible and then damaged ----------------


@st.composite
def clinical_records(draw: st.DrawFn) -> dict[str, Any]:
    """A Procedure, MedicationRequest/Statement, Encounter or DiagnosticReport for ``p1``, with
    members drawn from the values the mapper reads and from arbitrary JSON."""
    kind = draw(
        st.sampled_from(
            ["Procedure", "MedicationRequest", "MedicationStatement", "Encounter", "DiagnosticReport"]
        )
    )
    resource: dict[str, Any] = {"resourceType": kind, "id": draw(ids), "subject": draw(subjects)}
    resource["status"] = draw(
        st.sampled_from(["completed", "active", "stopped", "finished", "in-progress", "final", "preliminary"])
        | json_values
    )
    resource["code"] = draw(codeable_concepts | json_values)
    resource["category"] = draw(st.lists(codeable_concepts, max_size=2) | json_values)
    resource["medicationCodeableConcept"] = draw(
        st.fixed_dictionaries({"coding": st.just([{"system": "http://www.whocc.no/atc", "code": "B01AF01"}])})
        | st.fixed_dictionaries({"text": st.sampled_from(["apixaban 5 mg", "paclitaxel", "aspirin"])})
        | json_values
    )
    resource["class"] = draw(
        st.fixed_dictionaries({"code": st.sampled_from(["IMP", "AMB", "ACUTE"])}) | json_values
    )
    resource["period"] = draw(st.fixed_dictionaries({"start": date_times, "end": date_times}) | json_values)
    for key in ("performedDateTime", "authoredOn", "effectiveDateTime", "issued"):
        resource[key] = draw(date_times | json_values)
    resource["conclusionCode"] = draw(st.lists(codeable_concepts, max_size=2) | json_values)
    resource["conclusion"] = draw(st.text(max_size=30) | json_values)
    resource["bodySite"] = draw(st.lists(codeable_concepts, max_size=1) | json_values)
    return resource


# --- rule expressions --------------------------------------------------------------------------

EXPRESSION_NAMES: dict[str, Any] = {
    "fact_types": {"a": "boolean", "b": "boolean", "n": "number", "m": "number", "c": "code"},
    "definitions": frozenset({"d"}),
    "scores": frozenset({"s"}),
    "options": frozenset({"o"}),
}
_numbers = st.integers(-1000, 1000) | st.floats(-1000, 1000, allow_nan=False)
_operators = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
_any_fact = st.sampled_from(["a", "b", "n", "m", "c"])
_number_fact = st.sampled_from(["n", "m"])
_codes = st.text("abcxyz-", min_size=1, max_size=6)
_leaf_expressions = (
    st.builds(lambda name: {"fact": name}, st.sampled_from(["a", "b"]))
    | st.builds(lambda name: {"known": name}, _any_fact)
    | st.builds(lambda name, op, value: {"cmp": [name, op, value]}, _number_fact, _operators, _numbers)
    | st.builds(
        lambda name, op, other, times: {"cmp": [name, op, {"fact": other, **times}]},
        _number_fact,
        _operators,
        _number_fact,
        st.just({}) | st.builds(lambda k: {"times": k}, _numbers),
    )
    | st.builds(lambda codes: {"is": ["c", codes]}, _codes | st.lists(_codes, min_size=1, max_size=3))
    | st.builds(lambda first, second: {"older": [first, second]}, _any_fact, _any_fact)
    | st.just({"def": "d"})
    | st.builds(
        lambda form, op, value: {form: ["s", op, value]},
        st.sampled_from(["score", "points"]),
        _operators,
        _numbers,
    )
    | st.just({"option": "o"})
    | st.builds(lambda value: {"const": value}, st.booleans())
)
expressions = st.recursive(
    _leaf_expressions,
    lambda inner: (
        st.builds(
            lambda form, parts: {form: parts},
            st.sampled_from(["all", "any"]),
            st.lists(inner, min_size=1, max_size=3),
        )
        | st.builds(lambda form, part: {form: part}, st.sampled_from(["not", "true"]), inner)
    ),
    max_leaves=12,
)
