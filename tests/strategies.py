"""Hypothesis strategies for patients as facts: every fact documented true, documented false or missing.

Facts are drawn straight from the vocabulary (``fhir_mappings/data/facts.json``), so a fact added there
is covered here without a change. Numbers are drawn from values on both sides of every threshold the
packs use; dates are drawn from a few offsets so that "older than" comparisons go both ways. Per-leg
facts are drawn per leg and combined the way the mapper combines them (the leg-less fact of a per-leg
boolean is true when any side is true, false when every documented side is false).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from hypothesis import strategies as st

from fhir_mappings.facts import LEGS, Fact, Facts, FactSpec, FactValue, vocabulary
from tests.fhir_builders import NOW

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
