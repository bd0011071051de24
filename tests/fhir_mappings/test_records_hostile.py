"""The readers of Procedure, medications, Encounter and DiagnosticReport are total on hostile JSON."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_mappings.facts import vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from tests.fhir_builders import NOW, patient
from tests.strategies import clinical_records, damaged

MAPPER = Mapper(vocabulary(), bundled_terminology())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(damaged(clinical_records()), max_size=5))
def test_other_resource_types_never_raise(resources: list[dict[str, Any]]) -> None:
    """Any mix of damaged Procedures, medications, Encounters and reports gives facts, never an exception."""
    facts = MAPPER.map(patient_id="p1", patient=patient(), resources=resources, now=NOW)
    for fact in facts.by_name.values():
        assert fact.value is None or isinstance(fact.value, bool | float | str)
