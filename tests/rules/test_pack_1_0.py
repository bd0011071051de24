"""calf-pain 1.0.0 beyond the clinical cases: its option, governance fields, and decisions the
cases leave open (each test names the rule or definition it pins down)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhir_mappings.facts import vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from rules.engine import Assessment, evaluate
from rules.pack import bundled_pack_files, load_pack
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
from tests.strategies import as_facts

TYPES = {name: kind for name, (kind, _) in vocabulary().types().items()}
DOCUMENT = json.loads(bundled_pack_files()["calf-pain@1.0.0"].read_text("utf-8"))
PACK = load_pack(DOCUMENT, TYPES)
MAPPER = Mapper(vocabulary(), bundled_terminology())
NEGATIVE = {"coding": [{"system": SNOMED, "code": "260385009", "display": "Negative"}]}
NORMAL_PULSE = {"coding": [{"system": "http://calf-cds.org/fhir/CodeSystem/finding", "code": "pulse-normal"}]}


def assess(
    *resources: dict[str, Any], birth_date: str = "1980-03-01", gender: str = "male", **options: bool
) -> Assessment:
    who = patient(birth_date=birth_date, gender=gender)
    facts = MAPPER.map(patient_id="p1", patient=who, resources=resources, now=NOW)
    return evaluate(PACK, facts, options=options)


def topics(assessment: Assessment) -> set[str]:
    return {r.topic for r in assessment.recommendations}


def strain(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Right calf strain with a previously documented DVT: DVT suspected, Wells 1."""
    return [
        calf_pain(days_ago=1.6),
        finding("acute-onset-during-sport-with-pop", body_site=RIGHT_LEG, days_ago=1.9),
        finding("muscle-belly-tenderness", body_site=RIGHT_LEG, days_ago=0.1),
        condition(SNOMED, "128053003", clinical="resolved", days_ago=900),
        *extra,
    ]


def d_dimer(code: str, value: float, unit: str = "ng/mL", **kwargs: Any) -> dict[str, Any]:
    return observation(LOINC, code, days_ago=0.8, **quantity(value, unit), **kwargs)


# --- the age-adjusted D-dimer option ------------------------------------------------------------


def test_age_adjusted_d_dimer_is_off_by_default() -> None:
    """FEU 600 ng/mL at 70 is positive at the conventional cut-off (500): DVT not excluded."""
    assessment = assess(*strain(d_dimer("48065-7", 600)), birth_date="1956-03-01")
    assert PACK.options == {"age_adjusted_d_dimer": False}
    assert "duplex-dvt" in topics(assessment)
    assert "conservative" not in topics(assessment)


@pytest.mark.parametrize(
    ("code", "value", "excluded"),
    [("48065-7", 690, True), ("48065-7", 700, False), ("48066-5", 345, True), ("48066-5", 350, False)],
    ids=["feu-690-below-700", "feu-700-at-cut-off", "ddu-345-below-350", "ddu-350-at-cut-off"],
)
def test_age_adjusted_cut_off_when_switched_on(code: str, value: float, excluded: bool) -> None:
    """Option on, age 70: FEU cut-off 700 ng/mL (age x 10), DDU 350 ng/mL (age x 5)."""
    assessment = assess(*strain(d_dimer(code, value)), birth_date="1956-03-01", age_adjusted_d_dimer=True)
    assert ("conservative" in topics(assessment)) is excluded
    assert ("duplex-dvt" in topics(assessment)) is not excluded


def test_age_adjusted_cut_off_does_not_apply_at_50_or_under() -> None:
    """Option on, age 45: the conventional FEU cut-off (500) still applies."""
    assessment = assess(*strain(d_dimer("48065-7", 480)), birth_date="1981-03-01", age_adjusted_d_dimer=True)
    assert "conservative" in topics(assessment)
    assessment = assess(*strain(d_dimer("48065-7", 520)), birth_date="1981-03-01", age_adjusted_d_dimer=True)
    assert "duplex-dvt" in topics(assessment)


# --- DVT pathway decisions the cases leave open ---------------------------------------------------


def test_pregnancy_negative_duplex_excludes_dvt() -> None:
    """In pregnancy a negative compression duplex ends the work-up (a D-dimer never does)."""
    pregnant = condition(ICD10CM, "Z33.1", days_ago=100)
    scan = observation(LOINC, "39420-5", days_ago=0.5, valueCodeableConcept=NEGATIVE)
    tender = observation(SNOMED, "247348008", body_site=RIGHT_LEG, days_ago=0.1, valueBoolean=True)
    assert "duplex-dvt" in topics(assess(calf_pain(), pregnant, tender, gender="female"))
    assert "duplex-dvt" not in topics(assess(calf_pain(), pregnant, tender, scan, gender="female"))


def test_a_scan_of_the_other_leg_does_not_exclude() -> None:
    """Right calf symptoms, a negative scan of the LEFT leg only and a negative D-dimer: not excluded."""
    left_scan = observation(LOINC, "39432-0", days_ago=0.5, valueCodeableConcept=NEGATIVE)
    both_scan = observation(LOINC, "39420-5", days_ago=0.5, valueCodeableConcept=NEGATIVE)
    cancer = condition(SNOMED, "363346000", days_ago=200)
    negative = d_dimer("48065-7", 300)
    assert "duplex-dvt" in topics(assess(*strain(cancer, negative, left_scan)))
    assert "duplex-dvt" not in topics(assess(*strain(cancer, negative, both_scan)))


def test_a_preliminary_positive_d_dimer_rules_in() -> None:
    """A preliminary positive D-dimer asks for the ultrasound; it is not a 'D-dimer first' card."""
    preliminary = d_dimer("48065-7", 1.1, "mg/L", status="preliminary")
    (dvt,) = [r for r in assess(*strain(preliminary)).recommendations if r.topic == "duplex-dvt"]
    assert "D-dimer positive" in dvt.summary
    assert "within 4 hours" in dvt.summary


def test_unlikely_stays_provisional_while_items_are_not_documented() -> None:
    """Eight Wells items documented, total 1: 'DVT unlikely' on the documented items, and the card
    asks to complete the score because active cancer and previous DVT (Conditions) are not documented."""
    absent = [
        finding(code, False, days_ago=0.1)
        for code in (
            "entire-leg-swollen",
            "collateral-superficial-veins",
            "plaster-cast-immobilisation",
            "recent-major-surgery-ga-or-regional",
            "wells-alternative-diagnosis-at-least-as-likely",
        )
    ]
    documented = [
        calf_pain(),
        observation(SNOMED, "247348008", body_site=RIGHT_LEG, days_ago=0.1, valueBoolean=True),
        finding("calf-circumference-difference", quantity(1.0, "cm"), days_ago=0.1),
        observation(SNOMED, "420829009", body_site=RIGHT_LEG, days_ago=0.1, valueBoolean=False),
        observation(SNOMED, "420829009", body_site=LEFT_LEG, days_ago=0.1, valueBoolean=False),
        observation(SNOMED, "160685001", days_ago=0.1, valueBoolean=False),
        observation(SNOMED, "44695005", days_ago=0.1, valueBoolean=False),
        *absent,
    ]
    (dvt,) = [r for r in assess(*documented).recommendations if r.topic == "duplex-dvt"]
    states = {c.label: c.state for c in dvt.criteria}
    assert [label for label, state in states.items() if state == "not documented"] == [
        "Active cancer (treatment ongoing, within 6 months, or palliative)",
        "Previously documented DVT",
    ]
    assert "DVT unlikely on documented Wells items (1); complete the score" in dvt.summary


def test_unlikely_is_decided_when_no_item_could_change_it() -> None:
    """Every Wells item documented (facts as the mapper would give them), total 1: decided 'DVT unlikely'."""
    documented: dict[str, Any] = dict.fromkeys(
        (
            "active_cancer",
            "on_active_cancer_treatment",
            "palliative_care",
            "paralysis_paresis",
            "plaster_cast_immobilisation",
            "bedridden",
            "recent_major_surgery",
            "entire_leg_swollen_right",
            "pitting_oedema_right",
            "collateral_superficial_veins",
            "previous_dvt",
            "history_of_vte",
            "wells_alternative_diagnosis",
        ),
        (False, NOW),
    )
    documented |= {
        "calf_pain_right": (True, NOW),
        "calf_tenderness_right": (True, NOW),
        "calf_circumference_difference": (0.0, NOW),
    }
    (dvt,) = [r for r in evaluate(PACK, as_facts(documented)).recommendations if r.topic == "duplex-dvt"]
    assert dvt.summary.startswith("Venous pattern, DVT unlikely (Wells 1): D-dimer first")
    assert all(c.state != "not documented" for c in dvt.criteria)


def test_a_wells_risk_item_needs_current_pain() -> None:
    """Active cancer with a claudication history but no current calf or leg pain: no DVT card."""
    claudication = condition(SNOMED, "63491006", days_ago=200)
    cancer = condition(SNOMED, "363346000", days_ago=200)
    assert "duplex-dvt" not in topics(assess(claudication, cancer))
    assert "duplex-dvt" in topics(assess(claudication, cancer, calf_pain()))


# --- arterial decisions ---------------------------------------------------------------------------


def test_rest_pain_is_ischaemic_unless_perfusion_is_documented_normal() -> None:
    """Rest pain relieved by dependency: a CLTI red flag unless both ABIs and both pulses are normal."""
    rest_pain = finding("rest-pain-relieved-by-dependency", days_ago=0.1)
    abis = [
        observation(SNOMED, "446841001", body_site=side, days_ago=60, **quantity(1.05, "1"))
        for side in (RIGHT_LEG, LEFT_LEG)
    ]
    pulses = [
        finding("pedal-pulses", {"valueCodeableConcept": NORMAL_PULSE}, body_site=side, days_ago=0.1)
        for side in (RIGHT_LEG, LEFT_LEG)
    ]
    assert "urgent-referral" in topics(assess(calf_pain(), rest_pain, *abis))
    assert "urgent-referral" not in topics(assess(calf_pain(), rest_pain, *abis, *pulses))


def test_an_abi_without_a_side_counts_for_both_legs() -> None:
    """An ABI of 0.85 recorded without laterality establishes PAD: no ABI card."""
    unsided = observation(SNOMED, "446841001", days_ago=60, **quantity(0.85, "1"))
    exertional = finding("exertional-leg-pain", days_ago=0.1)
    assert "abi" in topics(assess(calf_pain(), exertional))
    assert "abi" not in topics(assess(calf_pain(), exertional, unsided))


# --- governance -----------------------------------------------------------------------------------


def test_the_pack_is_governed_and_cited() -> None:
    """Active from 2026-11-22, not yet approved, a changelog entry for 1.0.0, every citation a URL."""
    assert (DOCUMENT["status"], DOCUMENT["effective"]["from"]) == ("active", "2026-11-22")
    assert DOCUMENT["approvals"] == []
    assert DOCUMENT["changelog"][0]["version"] == "1.0.0"
    assert all(citation.get("url", "").startswith("http") for citation in DOCUMENT["citations"].values())


def test_every_rule_cites_a_section_and_every_definition_is_explained() -> None:
    """Governance can read every rule: a citation with a section, a note for every definition."""
    assert all(rule.citation.section and rule.citation.url for rule in PACK.rules)
    assert set(DOCUMENT["definition_notes"]) == set(DOCUMENT["definitions"])
    for name in ("dvt_suspected", "dvt_excluded"):
        assert len(DOCUMENT["definition_notes"][name]) > 100


def test_every_red_flag_is_a_critical_urgent_referral() -> None:
    """The six red flags of GUIDANCE §1.4, each its own critical urgent-referral rule."""
    red = {rule.id for rule in PACK.rules if rule.red_flag}
    assert red == {
        "red-flag-acute-limb-ischaemia",
        "red-flag-clti",
        "red-flag-phlegmasia",
        "red-flag-compartment-syndrome",
        "red-flag-cauda-equina",
        "red-flag-infection",
    }
    assert all(
        (rule.topic, rule.indicator) == ("urgent-referral", "critical")
        for rule in PACK.rules
        if rule.red_flag
    )
