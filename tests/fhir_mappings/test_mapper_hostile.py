"""The mapper is total on hostile resources: wrong types anywhere give facts, never an exception."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_mappings.facts import vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from tests.fhir_builders import NOW, calf_pain, finding, patient, quantity
from tests.strategies import PATIENT_ID, conditions, damaged, json_values, observations, patient_resources

MAPPER = Mapper(vocabulary(), bundled_terminology())
HOSTILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def finite_everywhere(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_everywhere(v) for v in value)
    return True


@given(
    resources=st.lists(
        st.one_of(
            damaged(observations()), damaged(conditions()), json_values.filter(lambda v: isinstance(v, dict))
        ),
        max_size=6,
    ),
    subject=st.one_of(damaged(patient_resources()), st.none()),
)
@HOSTILE
def test_mapping_never_raises_and_facts_stay_json(resources: list[Any], subject: Any) -> None:
    """Damaged Observations, Conditions and Patients map to facts whose JSON is finite and serialisable."""
    facts = MAPPER.map(patient_id=PATIENT_ID, patient=subject, resources=resources, now=NOW)
    document = facts.to_json()
    json.dumps(document, allow_nan=False)
    assert finite_everywhere(document)


@pytest.mark.parametrize("status", [["final"], {"x": 1}, 7, None])
def test_status_of_the_wrong_type_is_ignored(status: Any) -> None:
    facts = MAPPER.map(patient_id="p1", patient=patient(), resources=[calf_pain(status=status)], now=NOW)
    assert not facts["calf_pain"].documented


@pytest.mark.parametrize("code", [["300954003"], {"code": "x"}, 300954003])
def test_codes_of_the_wrong_type_are_ignored(code: Any) -> None:
    observation = calf_pain()
    observation["code"]["coding"][0]["code"] = code
    facts = MAPPER.map(patient_id="p1", patient=patient(), resources=[observation], now=NOW)
    assert not facts["calf_pain"].documented


def test_a_quantity_that_overflows_is_not_documented() -> None:
    """1e308 km in cm is infinite: not a number we can show, store or compare."""
    observation = finding("calf-circumference-difference", quantity(1e308, "km"))
    facts = MAPPER.map(patient_id="p1", patient=patient(), resources=[calf_pain(), observation], now=NOW)
    assert all(finite_everywhere(fact) for fact in [facts.to_json()])
