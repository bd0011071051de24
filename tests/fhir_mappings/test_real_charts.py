"""Charts as real EHRs write them (issue 11): each class of data that was misread, both ways."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fhir_mappings.facts import Facts, vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from tests.fhir_builders import (
    ICD10CM,
    LOINC,
    NOW,
    RIGHT_LEG,
    SNOMED,
    condition,
    finding,
    observation,
    patient,
)

V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


@pytest.fixture(scope="module")
def mapper() -> Mapper:
    return Mapper(vocabulary(), bundled_terminology())


def facts_of(mapper: Mapper, *resources: dict[str, Any]) -> Facts:
    return mapper.map(patient_id="p1", patient=patient(), resources=resources, now=NOW)


def icd(code: str, **kwargs: Any) -> dict[str, Any]:
    return condition(ICD10CM, code, **kwargs)


def onset(days_ago: float) -> dict[str, str]:
    return {"onsetDateTime": (NOW - timedelta(days=days_ago)).isoformat()}


# --- time by acuity -------------------------------------------------------------------------


def test_recent_dvt_is_active_not_previous(mapper: Mapper) -> None:
    """An acute DVT diagnosed 10 days ago is an active DVT."""
    facts = facts_of(mapper, icd("I82.411", **onset(10)))
    assert (facts["dvt_active"].value, facts["previous_dvt"].value) == (True, None)


def test_old_active_dvt_is_previous_not_active(mapper: Mapper) -> None:
    """An acute DVT code from 2 years ago still marked active is the Wells item 'previous DVT'."""
    facts = facts_of(mapper, icd("I82.411", **onset(730)))
    assert (facts["dvt_active"].value, facts["previous_dvt"].value) == (None, True)


def test_undated_dvt_counts_as_active(mapper: Mapper) -> None:
    """A DVT Condition with no date at all is read as current (fail-safe)."""
    resource = icd("I82.402")
    del resource["recordedDate"]
    assert facts_of(mapper, resource)["dvt_active"].value is True


def test_asserted_date_dates_a_condition(mapper: Mapper) -> None:
    """The condition-assertedDate extension dates a Condition without onset or recordedDate."""
    resource = icd("I82.402")
    del resource["recordedDate"]
    resource["extension"] = [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/condition-assertedDate",
            "valueDateTime": (NOW - timedelta(days=400)).isoformat(),
        }
    ]
    assert facts_of(mapper, resource)["dvt_active"].value is None


def test_chronic_dvt_code_is_previous_dvt(mapper: Mapper) -> None:
    """I82.5- (chronic DVT), matched by hierarchy, is a previous DVT, never an active one."""
    facts = facts_of(mapper, icd("I82.591", **onset(5)))
    assert (facts["dvt_active"].value, facts["previous_dvt"].value) == (None, True)


def test_chronic_problem_counts_whatever_its_onset(mapper: Mapper) -> None:
    """PAD diagnosed 8 years ago and still active is current."""
    assert facts_of(mapper, icd("I73.9", **onset(2900)))["pad"].value is True


def test_old_cellulitis_is_not_a_current_red_flag(mapper: Mapper) -> None:
    """Cellulitis of the leg from 6 months ago, never closed, is not current."""
    assert facts_of(mapper, icd("L03.115", **onset(180)))["cellulitis"].value is None


def test_recent_cellulitis_is_current(mapper: Mapper) -> None:
    """Cellulitis of the leg from 3 days ago is current."""
    assert facts_of(mapper, icd("L03.115", **onset(3)))["cellulitis"].value is True


def test_acute_window_is_configurable(mapper: Mapper) -> None:
    """A mapper built with a 60-day acute window reads a 45-day-old DVT as active."""
    wide = Mapper(vocabulary(), bundled_terminology(), acute_window=timedelta(days=60))
    resource = icd("I82.411", **onset(45))
    assert (facts_of(mapper, resource)["dvt_active"].value, facts_of(wide, resource)["dvt_active"].value) == (
        None,
        True,
    )


# --- status ---------------------------------------------------------------------------------


@pytest.mark.parametrize("verification", ["provisional", "differential", "unconfirmed"])
def test_provisional_dvt_is_suspected_not_confirmed(mapper: Mapper, verification: str) -> None:
    """A 'rule-out DVT' encounter diagnosis opens a work-up: suspected, never active."""
    facts = facts_of(mapper, icd("I82.401", verification=verification, **onset(1)))
    assert (facts["dvt_suspected"].value, facts["dvt_active"].value) == (True, None)


def test_confirmed_dvt_is_not_merely_suspected(mapper: Mapper) -> None:
    """A confirmed DVT is active and not 'suspected'."""
    facts = facts_of(mapper, icd("I82.401", **onset(1)))
    assert (facts["dvt_suspected"].value, facts["dvt_active"].value) == (None, True)


def test_provisional_red_flag_counts(mapper: Mapper) -> None:
    """A provisional acute limb ischaemia is read as the red flag (same urgent assessment)."""
    assert facts_of(mapper, icd("I74.3", verification="provisional", **onset(1)))[
        "acute_limb_ischaemia"
    ].value


def test_provisional_alternative_diagnosis_is_ignored(mapper: Mapper) -> None:
    """A provisional Baker's cyst does not offer an alternative diagnosis."""
    assert facts_of(mapper, icd("M71.21", verification="provisional"))["bakers_cyst"].value is None


def test_refuted_dvt_is_ignored(mapper: Mapper) -> None:
    """A refuted DVT is neither active nor suspected nor previous."""
    facts = facts_of(mapper, icd("I82.401", verification="refuted", **onset(1)))
    assert (facts["dvt_active"].value, facts["dvt_suspected"].value, facts["previous_dvt"].value) == (
        None,
        None,
        None,
    )


def test_preliminary_observation_is_shown_as_preliminary(mapper: Mapper) -> None:
    """A preliminary positive finding rules in and its evidence says 'preliminary'."""
    fact = facts_of(mapper, finding("warmth", True, status="preliminary", body_site=RIGHT_LEG))[
        "warmth_right"
    ]
    assert (fact.value, fact.evidence[0].status) == (True, "preliminary")


# --- codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["C50.911", "C34.12", "C18.7", "C4A.9", "C91.10", "D46.9", "c50911"])
def test_cancer_codes_by_range(mapper: Mapper, code: str) -> None:
    """Site-specific malignancies (and MDS) are active cancer, however the code is written."""
    assert facts_of(mapper, icd(code))["active_cancer"].value is True


@pytest.mark.parametrize("code", ["C44.91", "D05.11", "D12.6", "Z85.3", "C50.999"])
def test_not_active_cancer(mapper: Mapper, code: str) -> None:
    """Non-melanoma skin cancer, in-situ and benign neoplasms, history of cancer and codes that
    do not exist are not active cancer."""
    assert facts_of(mapper, icd(code))["active_cancer"].value is None


def test_resolved_cancer_is_not_active(mapper: Mapper) -> None:
    """A resolved breast cancer is not active cancer."""
    assert facts_of(mapper, icd("C50.911", clinical="resolved"))["active_cancer"].value is None


@pytest.mark.parametrize("code", ["O99.89", "O26.893", "Z33.1", "Z3A.24", "O9A.119"])
def test_pregnancy_codes_by_range(mapper: Mapper, code: str) -> None:
    """Chapter 15, Z33.1 and Z3A.xx mean pregnant."""
    assert facts_of(mapper, icd(code, days_ago=20))["pregnant"].value is True


def test_gestational_week_is_shown(mapper: Mapper) -> None:
    """Z3A.24 shows '24 weeks gestation' in the evidence."""
    evidence = facts_of(mapper, icd("Z3A.24", days_ago=5))["pregnant"].evidence[0]
    assert "24 weeks" in evidence.value


def test_recent_leg_fracture(mapper: Mapper) -> None:
    """A tibial shaft fracture 10 days ago is a recent leg fracture and injury; its side is read."""
    facts = facts_of(mapper, icd("S82.201A", **onset(10)))
    assert (facts["leg_fracture_recent"].value, facts["leg_injury_recent"].value) == (True, True)
    assert facts["leg_fracture_recent"].evidence[0].laterality == "right"


def test_sprain_is_injury_not_fracture(mapper: Mapper) -> None:
    """A knee sprain is a leg injury, not a fracture."""
    facts = facts_of(mapper, icd("S83.91XA", **onset(5)))
    assert (facts["leg_fracture_recent"].value, facts["leg_injury_recent"].value) == (None, True)


@pytest.mark.parametrize("extra", [{"onset": 90}, {"undated": True}, {"sequela": True}])
def test_old_undated_or_sequela_fracture_is_not_recent(mapper: Mapper, extra: dict[str, Any]) -> None:
    """A fracture 90 days ago, an undated one, or a sequela code is not a recent fracture."""
    code = "S82.201S" if extra.get("sequela") else "S82.201A"
    resource = icd(code, **onset(extra.get("onset", 5)))
    if extra.get("undated"):
        del resource["recordedDate"], resource["onsetDateTime"]
    assert facts_of(mapper, resource)["leg_fracture_recent"].value is None


def test_joint_replacement_aftercare_is_recent_surgery(mapper: Mapper) -> None:
    """Z47.1 within 12 weeks is recent major surgery; a knee prosthesis from years ago is not."""
    assert facts_of(mapper, icd("Z47.1", days_ago=20))["recent_major_surgery"].value is True
    assert facts_of(mapper, icd("Z96.651", days_ago=900))["recent_major_surgery"].value is None


# --- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "expected"),
    [
        ({"system": SNOMED, "code": "373066001"}, True),
        ({"system": SNOMED, "code": "373067005"}, False),
        ({"system": LOINC, "code": "LA33-6"}, True),
        ({"system": LOINC, "code": "LA32-8"}, False),
        ({"system": "http://terminology.hl7.org/CodeSystem/v2-0136", "code": "Y"}, True),
        ({"system": "http://terminology.hl7.org/CodeSystem/v2-0136", "code": "N"}, False),
    ],
)
def test_coded_answers_read_like_booleans(mapper: Mapper, coding: dict[str, str], expected: bool) -> None:
    """SNOMED CT, LOINC and HL7 v2 yes/no answers are valueBoolean."""
    resource = finding("warmth", {"valueCodeableConcept": {"coding": [coding]}}, body_site=RIGHT_LEG)
    assert facts_of(mapper, resource)["warmth_right"].value is expected


@pytest.mark.parametrize(("text", "expected"), [("Yes", True), ("no", False), (" YES. ", True)])
def test_string_answers_read_like_booleans(mapper: Mapper, text: str, expected: bool) -> None:
    """valueString yes/no (any case) is valueBoolean."""
    resource = finding("cold-pale-limb", {"valueString": text}, body_site=RIGHT_LEG)
    assert facts_of(mapper, resource)["cold_pale_limb_right"].value is expected


def test_uninterpretable_red_flag_answer_is_reported(mapper: Mapper) -> None:
    """'Unable to assess' on a red-flag finding is neither true nor false: it is reported, quoted."""
    resource = finding("saddle-anaesthesia", {"valueString": "unable to assess"})
    facts = facts_of(mapper, resource)
    assert facts["saddle_anaesthesia"].value is None
    assert facts["unreadable_red_flag_finding"].value is True
    assert "unable to assess" in facts["unreadable_red_flag_finding"].evidence[0].value


def test_readable_answers_report_nothing_unreadable(mapper: Mapper) -> None:
    """A plain 'no' is not an unreadable finding."""
    facts = facts_of(mapper, finding("saddle-anaesthesia", {"valueString": "no"}))
    assert facts["unreadable_red_flag_finding"].value is None


# --- units and positivity -------------------------------------------------------------------


def d_dimer(value: float, unit: str, code: str = "48065-7", **extra: Any) -> dict[str, Any]:
    return observation(LOINC, code, days_ago=0.1, valueQuantity={"value": value, "unit": unit}, **extra)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (0.62, "ug/mL{FEU}", 620.0),
        (0.62, "µg/mL FEU", 620.0),
        (0.62, "mcg/mL", 620.0),
        (0.62, "MG/L", 620.0),
        (620, "ng/ml", 620.0),
        (620, "ng/mL{FEU}", 620.0),
    ],
)
def test_d_dimer_units_as_labs_send_them(mapper: Mapper, value: float, unit: str, expected: float) -> None:
    """Annotations, case variants and µ/mcg spellings convert to ng/mL."""
    facts = facts_of(mapper, d_dimer(value, unit))
    assert facts["d_dimer_feu"].value == pytest.approx(expected)
    assert facts["d_dimer_unclear"].value is False


@pytest.mark.parametrize("unit", ["FEU ug/ml?", "units", "ng/mL{DDU}", ""])
def test_unreadable_d_dimer_unit_is_unclear_not_dropped(mapper: Mapper, unit: str) -> None:
    """A D-dimer whose unit cannot be read (or contradicts FEU) is shown as unclear, never silently dropped."""
    facts = facts_of(mapper, d_dimer(0.4, unit))
    assert facts["d_dimer_feu"].value is None
    assert facts["d_dimer_unclear"].value is True
    assert facts["unreadable_dvt_finding"].value is True


def test_lab_positivity_from_coded_interpretation(mapper: Mapper) -> None:
    """The lab's coded H flag decides positivity even below the guideline cut-off."""
    flagged = d_dimer(450, "ng/mL", interpretation=[{"coding": [{"system": V3, "code": "H"}]}])
    assert facts_of(mapper, flagged)["d_dimer_lab_positive"].value is True


def test_lab_positivity_from_reference_range(mapper: Mapper) -> None:
    """Without a flag, the lab's reference range decides: above the high bound is positive."""
    ranged = d_dimer(0.45, "mg/L", referenceRange=[{"high": {"value": 0.4, "unit": "mg/L"}}])
    below = d_dimer(0.35, "mg/L", referenceRange=[{"high": {"value": 0.4, "unit": "mg/L"}}])
    assert facts_of(mapper, ranged)["d_dimer_lab_positive"].value is True
    assert facts_of(mapper, below)["d_dimer_lab_positive"].value is False


def test_text_only_interpretation_is_unclear(mapper: Mapper) -> None:
    """'Above high normal' written as text only is shown and read fail-safe: unclear."""
    texted = d_dimer(300, "ng/mL", interpretation=[{"text": "Above high normal"}])
    facts = facts_of(mapper, texted)
    assert facts["d_dimer_unclear"].value is True
    assert "Above high normal" in facts["d_dimer_unclear"].evidence[0].value


def test_text_normal_interpretation_is_not_unclear(mapper: Mapper) -> None:
    """A text 'Normal' interpretation does not make a readable value unclear."""
    texted = d_dimer(300, "ng/mL", interpretation=[{"text": "Normal"}])
    facts = facts_of(mapper, texted)
    assert (facts["d_dimer_feu"].value, facts["d_dimer_unclear"].value) == (300.0, False)


# --- imaging --------------------------------------------------------------------------------


def duplex(**value: Any) -> dict[str, Any]:
    return observation(LOINC, "39443-7", days_ago=0.5, **value)


def test_coded_negative_duplex_decides(mapper: Mapper) -> None:
    """A right-leg duplex coded negative is a negative scan of the right leg."""
    scan = duplex(valueCodeableConcept={"coding": [{"system": SNOMED, "code": "260385009"}]})
    facts = facts_of(mapper, scan)
    assert (facts["venous_duplex_positive_right"].value, facts["venous_imaging_unclear"].value) == (
        False,
        False,
    )


@pytest.mark.parametrize(
    "value",
    [
        {"valueString": "Noncompressible popliteal vein, see report"},
        {"interpretation": [{"coding": [{"system": V3, "code": "A"}]}]},
    ],
)
def test_uncoded_duplex_is_unclear(mapper: Mapper, value: dict[str, Any]) -> None:
    """A duplex resulted only as text or an abnormal flag counts as resulted but unclear, quoted."""
    facts = facts_of(mapper, duplex(**value))
    assert facts["venous_duplex_positive_right"].value is None
    assert facts["venous_imaging_unclear"].value is True


def report(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": "dr-1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "39432-0"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": (NOW - timedelta(hours=6)).isoformat(),
        **extra,
    }


def test_report_conclusion_code_positive(mapper: Mapper) -> None:
    """A left-leg duplex report whose conclusionCode is a DVT diagnosis is a positive left scan."""
    coded = report(conclusionCode=[{"coding": [{"system": ICD10CM, "code": "I82.442"}]}])
    assert facts_of(mapper, coded)["venous_duplex_positive_left"].value is True


def test_report_conclusion_text_only_is_unclear(mapper: Mapper) -> None:
    """A report with only a conclusion text is unclear and quoted."""
    texted = report(conclusion="Limited study; calf veins not visualised")
    facts = facts_of(mapper, texted)
    assert facts["venous_imaging_unclear"].value is True
    assert "not visualised" in facts["venous_imaging_unclear"].evidence[0].value


# --- where it hurts -------------------------------------------------------------------------


TENDERNESS = "247348008"


def test_unsided_tenderness_is_possibly_either_leg(mapper: Mapper) -> None:
    """Calf tenderness with no side: both legs, and 'side not recorded'."""
    facts = facts_of(mapper, observation(SNOMED, TENDERNESS, valueBoolean=True))
    assert (facts["calf_tenderness_left"].value, facts["calf_tenderness_right"].value) == (True, True)
    assert facts["calf_tenderness_side_unrecorded"].value is True
    assert facts["calf_tenderness_left"].evidence[0].laterality == "side not recorded"


def test_sided_tenderness_stays_on_its_side(mapper: Mapper) -> None:
    """Calf tenderness on the right is not on the left, and its side is recorded."""
    facts = facts_of(mapper, observation(SNOMED, TENDERNESS, valueBoolean=True, body_site=RIGHT_LEG))
    assert (facts["calf_tenderness_left"].value, facts["calf_tenderness_right"].value) == (None, True)
    assert facts["calf_tenderness_side_unrecorded"].value is False


def test_unsided_pitting_oedema_stays_leg_less(mapper: Mapper) -> None:
    """Unsided pitting oedema is not made bilateral (that would read as 'not confined to one leg')."""
    facts = facts_of(mapper, observation(SNOMED, "421605005", valueBoolean=True))
    assert facts["pitting_oedema"].value is True
    assert (facts["pitting_oedema_left"].value, facts["pitting_oedema_right"].value) == (None, None)
    assert facts["pitting_oedema_side_unrecorded"].value is True
    assert "side not recorded" in facts["unreadable_dvt_finding"].evidence[0].value


def test_sided_pitting_oedema_is_not_unreadable(mapper: Mapper) -> None:
    """Pitting oedema of the right leg is read, and nothing is reported unreadable."""
    facts = facts_of(mapper, observation(SNOMED, "421605005", valueBoolean=True, body_site=RIGHT_LEG))
    assert (facts["pitting_oedema_right"].value, facts["unreadable_dvt_finding"].value) == (True, None)


def test_leg_finding_on_the_arm_is_ignored(mapper: Mapper) -> None:
    """Erythema recorded on the left forearm is not leg erythema."""
    arm = {"text": "left forearm"}
    assert (
        facts_of(mapper, observation(SNOMED, "247441003", valueBoolean=True, body_site=arm))["erythema"].value
        is None
    )


def test_leg_finding_with_leg_text_site_counts_with_side(mapper: Mapper) -> None:
    """bodySite.text 'left calf' gives erythema on the left leg."""
    site = {"text": "Left calf"}
    facts = facts_of(mapper, observation(SNOMED, "247441003", valueBoolean=True, body_site=site))
    assert facts["erythema_left"].value is True


# --- more resource types --------------------------------------------------------------------


def procedure(days_ago: float, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": "proc-1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": (NOW - timedelta(days=days_ago)).isoformat(),
        **extra,
    }


SURGICAL = [{"coding": [{"system": SNOMED, "code": "387713003", "display": "Surgical procedure"}]}]


def test_surgical_procedure_within_12_weeks(mapper: Mapper) -> None:
    """A completed surgical procedure 30 days ago is recent major surgery; one 100 days ago is not."""
    assert facts_of(mapper, procedure(30, category=SURGICAL))["recent_major_surgery"].value is True
    assert facts_of(mapper, procedure(100, category=SURGICAL))["recent_major_surgery"].value is None


def test_cast_procedure_is_plaster_immobilisation(mapper: Mapper) -> None:
    """Application of a short leg cast 2 weeks ago is recent plaster immobilisation."""
    cast = procedure(14, code={"text": "Application of short leg cast"})
    assert facts_of(mapper, cast)["plaster_cast_immobilisation"].value is True


def medication(kind: str, status: str, concept: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": kind,
        "id": "med-1",
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "authoredOn": (NOW - timedelta(days=40)).isoformat(),
        "medicationCodeableConcept": concept,
    }


def test_active_anticoagulant_by_name_and_by_atc(mapper: Mapper) -> None:
    """An active apixaban request (RxNorm display) or ATC B01AF statement is anticoagulant use."""
    named = medication("MedicationRequest", "active", {"text": "Apixaban 5 MG Oral Tablet"})
    coded = medication(
        "MedicationStatement",
        "active",
        {"coding": [{"system": "http://www.whocc.no/atc", "code": "B01AF01"}]},
    )
    assert facts_of(mapper, named)["anticoagulant_use"].value is True
    assert facts_of(mapper, coded)["anticoagulant_use"].value is True


def test_antiplatelet_or_stopped_anticoagulant_is_not_anticoagulant_use(mapper: Mapper) -> None:
    """Aspirin (B01AC) is not an anticoagulant; a stopped warfarin is not current use."""
    aspirin = medication(
        "MedicationRequest", "active", {"coding": [{"system": "http://www.whocc.no/atc", "code": "B01AC06"}]}
    )
    stopped = medication("MedicationRequest", "stopped", {"text": "warfarin 5 mg"})
    assert facts_of(mapper, aspirin)["anticoagulant_use"].value is None
    assert facts_of(mapper, stopped)["anticoagulant_use"].value is None


def test_chemotherapy_is_active_cancer_treatment(mapper: Mapper) -> None:
    """An ATC L01 medication within 6 months is active cancer treatment."""
    chemo = medication(
        "MedicationRequest",
        "completed",
        {"coding": [{"system": "http://www.whocc.no/atc", "code": "L01XA01"}]},
    )
    assert facts_of(mapper, chemo)["on_active_cancer_treatment"].value is True


def encounter(start_days_ago: float, end_days_ago: float | None, code: str = "IMP") -> dict[str, Any]:
    period = {"start": (NOW - timedelta(days=start_days_ago)).isoformat()}
    if end_days_ago is not None:
        period["end"] = (NOW - timedelta(days=end_days_ago)).isoformat()
    return {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "finished" if end_days_ago is not None else "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code},
        "subject": {"reference": "Patient/p1"},
        "period": period,
    }


def test_inpatient_stay_of_three_days_is_bedridden(mapper: Mapper) -> None:
    """A 5-day inpatient stay that ended 10 days ago is 'bedridden 3 days or more'."""
    assert facts_of(mapper, encounter(15, 10))["bedridden"].value is True


@pytest.mark.parametrize(
    "stay",
    [encounter(2, 1), encounter(60, 50), encounter(15, 10, code="AMB")],
    ids=["short", "old", "ambulatory"],
)
def test_short_old_or_outpatient_stay_is_not_bedridden(mapper: Mapper, stay: dict[str, Any]) -> None:
    """One day in, 50 days ago, or an ambulatory encounter is not 'bedridden'."""
    assert facts_of(mapper, stay)["bedridden"].value is None


def test_old_active_clti_is_current(mapper: Mapper) -> None:
    """CLTI diagnosed 2 years ago and still active is current (a chronic problem has no look-back)."""
    assert facts_of(mapper, icd("I70.222", **onset(730)))["clti_left"].value is True


def test_old_active_calf_pain_problem_is_current(mapper: Mapper) -> None:
    """An active calf-pain problem from last year is current calf pain."""
    assert facts_of(mapper, icd("M79.661", **onset(400)))["calf_pain_right"].value is True


def test_traumatic_compartment_syndrome_by_hierarchy(mapper: Mapper) -> None:
    """T79.A21D (subsequent encounter) 5 days ago is a coded traumatic compartment syndrome; a sequela is not."""
    assert facts_of(mapper, icd("T79.A21D", **onset(5)))["compartment_syndrome_traumatic"].value is True
    assert facts_of(mapper, icd("T79.A21S", **onset(5)))["compartment_syndrome_traumatic"].value is None


def test_operation_named_in_the_code_text_is_surgery(mapper: Mapper) -> None:
    """A total knee arthroplasty with no surgical category, 4 weeks ago, is recent major surgery."""
    knee = procedure(28, code={"text": "Total knee arthroplasty, left"})
    assert facts_of(mapper, knee)["recent_major_surgery"].value is True


def test_a_non_operative_procedure_is_not_surgery(mapper: Mapper) -> None:
    """A physiotherapy session is not surgery."""
    physio = procedure(10, code={"text": "Physiotherapy session"})
    assert facts_of(mapper, physio)["recent_major_surgery"].value is None


def test_chemotherapy_by_ingredient_name(mapper: Mapper) -> None:
    """An active paclitaxel order (RxNorm display) is active cancer treatment."""
    order = medication("MedicationRequest", "active", {"text": "Paclitaxel 100 mg injection"})
    assert facts_of(mapper, order)["on_active_cancer_treatment"].value is True


def test_unreadable_value_of_another_fact_is_noted(mapper: Mapper) -> None:
    """An ABI in a unit that cannot be read is not a value, and the notes (audit record) say so."""
    abi = observation(
        SNOMED, "446841001", valueQuantity={"value": 0.8, "unit": "mmHg/mmHg?"}, body_site=RIGHT_LEG
    )
    facts = facts_of(mapper, abi)
    assert facts["abi_right"].value is None
    assert any("abi" in note and "not readable" in note for note in facts.notes)


def test_coded_contusion_is_a_direct_blow(mapper: Mapper) -> None:
    """A contusion of the lower leg yesterday is the finding 'direct blow'; an insect bite is not."""
    assert facts_of(mapper, icd("S80.11XA", **onset(1)))["direct_trauma"].value is True
    assert facts_of(mapper, icd("S80.861A", **onset(1)))["direct_trauma"].value is None
