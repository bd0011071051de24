"""Resources → facts: status, look-back, laterality, units, conditions, patient ownership."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fhir_mappings.facts import Facts, vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from tests.fhir_builders import (
    ICD10CM,
    LEFT_LEG,
    LOINC,
    NOW,
    RIGHT_LEG,
    SNOMED,
    calf_pain,
    condition,
    finding,
    observation,
    patient,
    quantity,
)


@pytest.fixture(scope="module")
def mapper() -> Mapper:
    return Mapper(vocabulary(), bundled_terminology())


def facts_of(mapper: Mapper, *resources: dict[str, Any], birth_date: str = "1960-05-01") -> Facts:
    return mapper.map(patient_id="p1", patient=patient(birth_date=birth_date), resources=resources, now=NOW)


def test_final_amended_corrected_count(mapper: Mapper) -> None:
    """Final, amended and corrected Observations are facts."""
    for status in ("final", "amended", "corrected"):
        assert facts_of(mapper, finding("warmth", True, status=status))["warmth"].value is True


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "registered", "unknown"])
def test_other_statuses_are_ignored(mapper: Mapper, status: str) -> None:
    """Entered-in-error, cancelled and others are not facts."""
    assert facts_of(mapper, finding("warmth", True, status=status))["warmth"].value is None


def test_preliminary_rules_in_but_never_out(mapper: Mapper) -> None:
    """A preliminary positive counts; a preliminary negative is not documented."""
    assert facts_of(mapper, finding("warmth", True, status="preliminary"))["warmth"].value is True
    assert facts_of(mapper, finding("warmth", False, status="preliminary"))["warmth"].value is None


def test_most_recent_value_wins(mapper: Mapper) -> None:
    """Of two final values the more recent one wins."""
    older, newer = finding("warmth", True, days_ago=3), finding("warmth", False, days_ago=1)
    assert facts_of(mapper, older, newer)["warmth"].value is False


def test_look_back_window(mapper: Mapper) -> None:
    """A finding older than its window (warmth: 7 days) is not documented."""
    assert facts_of(mapper, finding("warmth", True, days_ago=6))["warmth"].value is True
    assert facts_of(mapper, finding("warmth", True, days_ago=8))["warmth"].value is None


def test_data_absent_reason_is_not_a_value(mapper: Mapper) -> None:
    """An Observation carrying dataAbsentReason documents nothing."""
    absent = finding("warmth", True)
    del absent["valueBoolean"]
    absent["dataAbsentReason"] = {"text": "not asked"}
    assert facts_of(mapper, absent)["warmth"].value is None


def test_finding_without_value_asserts_it(mapper: Mapper) -> None:
    """A finding-coded Observation with no value states the finding is present."""
    assert facts_of(mapper, calf_pain())["calf_pain"].value is True


def test_laterality_from_body_site(mapper: Mapper) -> None:
    """Per-leg facts read laterality from the lateralised limb structure in bodySite."""
    facts = facts_of(mapper, calf_pain(side=LEFT_LEG))
    assert (facts["calf_pain_left"].value, facts["calf_pain_right"].value) == (True, None)


def test_abi_per_leg_never_averaged(mapper: Mapper) -> None:
    """ABI is kept per leg, rounded to 2 decimals."""
    right = observation(SNOMED, "446841001", body_site=RIGHT_LEG, **quantity(0.854, "1"))
    left = observation(SNOMED, "446841001", body_site=LEFT_LEG, **quantity(1.1, "1"))
    facts = facts_of(mapper, right, left)
    assert (facts["abi_right"].value, facts["abi_left"].value) == (0.85, 1.1)


def test_abi_panel_components(mapper: Mapper) -> None:
    """An ABI panel with per-leg components is read as per-leg values."""
    panel = observation(SNOMED, "446841001")
    panel["component"] = [
        {
            "code": {
                "coding": [{"system": SNOMED, "code": "446841001"}],
                "text": "Right ankle-brachial index",
            },
            **quantity(0.72, "1"),
        },
        {
            "code": {
                "coding": [{"system": SNOMED, "code": "446841001"}],
                "text": "Left ankle-brachial index",
            },
            **quantity(1.02, "{ratio}"),
        },
    ]
    facts = facts_of(mapper, panel)
    assert (facts["abi_right"].value, facts["abi_left"].value) == (0.72, 1.02)


def test_units_are_converted(mapper: Mapper) -> None:
    """A D-dimer in mg/L is read in ng/mL; an unknown unit is not documented."""
    facts = facts_of(mapper, observation(LOINC, "48065-7", days_ago=0.5, **quantity(0.6, "mg/L")))
    assert facts["d_dimer_feu"].value == pytest.approx(600)
    odd = observation(LOINC, "48065-7", days_ago=0.5, **quantity(0.6, "furlongs"))
    assert facts_of(mapper, odd)["d_dimer_feu"].value is None


def test_lab_interpretation(mapper: Mapper) -> None:
    """The laboratory's H/N flag on a D-dimer is read as positive/negative."""
    flag = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}
        ]
    }
    dimer = observation(LOINC, "48066-5", days_ago=0.5, interpretation=[flag], **quantity(300, "ng/mL"))
    assert facts_of(mapper, dimer)["d_dimer_lab_positive"].value is True


def test_icd10cm_condition_with_laterality(mapper: Mapper) -> None:
    """A Condition coded in ICD-10-CM matches, laterality from the code itself."""
    facts = facts_of(mapper, condition(ICD10CM, "M79.662"))
    assert (facts["calf_pain_left"].value, facts["calf_pain_right"].value) == (True, None)


def test_refuted_and_entered_in_error_conditions_are_ignored(mapper: Mapper) -> None:
    for verification in ("refuted", "entered-in-error"):
        facts = facts_of(mapper, condition(SNOMED, "363346000", verification=verification))
        assert facts["active_cancer"].value is None


def test_resolved_dvt_still_counts_as_previous(mapper: Mapper) -> None:
    """A resolved confirmed DVT is 'previously documented DVT' but not an active one."""
    facts = facts_of(mapper, condition(SNOMED, "128053003", clinical="resolved", days_ago=900))
    assert (facts["previous_dvt"].value, facts["dvt_active"].value) == (True, None)


def test_abated_condition_is_not_active(mapper: Mapper) -> None:
    resolved = condition(SNOMED, "363346000", abatementDateTime="2026-01-01")
    assert facts_of(mapper, resolved)["active_cancer"].value is None


def test_resources_of_another_patient_are_ignored_and_noted(mapper: Mapper) -> None:
    """A resource about someone else never becomes a fact, and the notes say so."""
    facts = facts_of(mapper, finding("warmth", True, patient_id="someone-else"))
    assert facts["warmth"].value is None
    assert any("not about the context patient" in note for note in facts.notes)


def test_age_from_birth_date(mapper: Mapper) -> None:
    assert facts_of(mapper, birth_date="1960-11-21")["age_years"].value == 65
    assert facts_of(mapper, birth_date="1960-11-20")["age_years"].value == 66


def test_every_fact_has_a_known_type() -> None:
    """The vocabulary declares a type for every name it produces."""
    assert all(kind in ("boolean", "number", "code") for kind, _ in vocabulary().types().values())


def test_preliminary_view_of_a_test_keeps_its_number(mapper: Mapper) -> None:
    """A preliminary D-dimer is not a result, but its preliminary view keeps the number to rule in."""
    dimer = observation(LOINC, "48065-7", days_ago=0.5, status="preliminary", **quantity(1.1, "mg/L"))
    facts = facts_of(mapper, dimer)
    assert facts["d_dimer_feu"].value is None
    assert facts["d_dimer_feu_preliminary"].value == pytest.approx(1100)


def test_preliminary_view_ignores_final_results(mapper: Mapper) -> None:
    """A final D-dimer is the result, never part of the preliminary view."""
    facts = facts_of(mapper, observation(LOINC, "48065-7", days_ago=0.5, **quantity(0.3, "mg/L")))
    assert (facts["d_dimer_feu"].value, facts["d_dimer_feu_preliminary"].value) == (300, None)


def test_onset_dated_fact_uses_the_condition_onset(mapper: Mapper) -> None:
    """The episode onset is the calf-pain Condition's onset, not when it was recorded."""
    pain = condition(ICD10CM, "M79.661", days_ago=1, onsetDateTime="2026-11-16T09:00:00+00:00")
    onset = facts_of(mapper, pain)["episode_onset"]
    assert onset.value is True
    assert onset.when is not None
    assert onset.when.isoformat() == "2026-11-16T09:00:00+00:00"


def test_onset_dated_fact_needs_an_onset(mapper: Mapper) -> None:
    """Without onset[x] there is no onset to report (recordedDate is not an onset)."""
    assert facts_of(mapper, condition(ICD10CM, "M79.661", days_ago=1))["episode_onset"].value is None


def test_duration_dates_the_start_of_symptoms(mapper: Mapper) -> None:
    """'Symptoms for 8 weeks', recorded today, dates a change in symptoms 8 weeks ago."""
    duration = finding("symptom-duration-weeks", quantity(8, "wk"), days_ago=0)
    change = facts_of(mapper, duration)["symptom_change"]
    assert change.value is True
    assert change.when is not None
    assert (NOW - change.when).days == 56


def test_short_bed_rest_does_not_meet_the_criterion(mapper: Mapper) -> None:
    """Bed rest recorded over 2 days is documented, and does not meet 'bedridden 3 days or more'."""

    def bed_rest(start_days: int, end_days: int) -> dict[str, Any]:
        period = {
            "start": (NOW - timedelta(days=start_days)).isoformat(),
            "end": (NOW - timedelta(days=end_days)).isoformat(),
        }
        resource = observation(SNOMED, "160685001", valueBoolean=True, effectivePeriod=period)
        del resource["effectiveDateTime"]
        return resource

    assert facts_of(mapper, bed_rest(8, 6))["bedridden"].value is False
    assert facts_of(mapper, bed_rest(14, 10))["bedridden"].value is True
    assert facts_of(mapper, bed_rest(45, 40))["bedridden"].value is None  # ended outside 28 days


def test_paralysis_as_an_observation(mapper: Mapper) -> None:
    """Paralysis recorded as an exam finding counts, as a Condition does."""
    facts = facts_of(mapper, observation(SNOMED, "44695005", valueBoolean=True, body_site=RIGHT_LEG))
    assert facts["paralysis_paresis"].value is True
