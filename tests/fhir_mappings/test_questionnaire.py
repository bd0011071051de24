"""The assessment Questionnaire against the finding vocabulary: every question records a fact the
mapper reads, with the code and answer type the mapper expects, and every Observation-read fact a
rule pack reads is asked or deliberately excluded."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from importlib import resources
from typing import Any

import pytest
from fhir.resources.R4B.questionnaire import Questionnaire

from fhir_mappings.errors import VocabularyError
from fhir_mappings.facts import vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.questionnaire import (
    OBSERVATION_EXTRACT,
    OBSERVATION_LINK_PERIOD,
    UNIT_OPTION,
    Question,
    build_assessment,
    bundled_assessment,
    finding_codesystem,
)
from fhir_mappings.terminology import FINDING_SYSTEM, UCUM, bundled_terminology
from rules.pack import bundled_pack_files, load_pack
from tests.fhir_builders import LEFT_LEG, NOW

ASSESSMENT = bundled_assessment()
LAYOUT = json.loads(resources.files("fhir_mappings").joinpath("data/assessment.json").read_text("utf-8"))
MAPPER = Mapper(vocabulary(), bundled_terminology())
TYPES = {name: kind for name, (kind, _) in vocabulary().types().items()}


def items(questionnaire: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in questionnaire["item"]:
        out.append(item)
        out.extend(item.get("item", ()))
    return out


def questions_by_link_id() -> dict[str, dict[str, Any]]:
    return {i["linkId"]: i for i in items(ASSESSMENT.to_questionnaire()) if i["type"] != "group"}


def rule_read_facts() -> set[str]:
    """Every fact (base name, per-leg suffixes removed) that some bundled rule pack reads."""
    names: set[str] = set()
    for path in bundled_pack_files().values():
        names |= load_pack(json.loads(path.read_text()), TYPES).fact_names()
    return {n.removesuffix("_left").removesuffix("_right") for n in names} & set(vocabulary().specs)


def observation_read(name: str) -> bool:
    return any(s.get("from") == "observation" for s in vocabulary().specs[name].sources)


def answered(question: Question) -> dict[str, Any]:
    """An Observation as the question records it, answered 'present' (or the first answer)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [dict(question.code)]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": (NOW - timedelta(hours=1)).isoformat(),
        "bodySite": LEFT_LEG,
    }
    if question.kind == "quantity":
        unit = str(question.fact.unit)
        resource["valueQuantity"] = {"value": 2, "unit": unit, "system": UCUM, "code": unit}
    elif question.kind == "choice":
        resource["valueCodeableConcept"] = {"coding": [dict(question.answers[0].coding)]}
    else:
        resource["valueBoolean"] = True
    return resource


def test_questionnaire_is_valid_fhir() -> None:
    """The generated Questionnaire validates as a FHIR R4(B) Questionnaire."""
    Questionnaire.model_validate(ASSESSMENT.to_questionnaire())


def test_every_question_is_coded_and_marked_for_observation_extraction() -> None:
    """Each question carries one coding and the SDC observationExtract extension."""
    for item in questions_by_link_id().values():
        assert len(item["code"]) == 1
        assert item["code"][0]["system"]
        assert item["code"][0]["display"]
        assert {"url": OBSERVATION_EXTRACT, "valueBoolean": True} in item["extension"]


def test_prefill_looks_back_as_far_as_the_mapper() -> None:
    """Each question's observationLinkPeriod is its fact's look-back window, in days."""
    for link_id, item in questions_by_link_id().items():
        window = vocabulary().specs[link_id].window_hours
        periods = [e["valueDuration"] for e in item["extension"] if e["url"] == OBSERVATION_LINK_PERIOD]
        if window is None:
            assert periods == []
        else:
            assert [(p["value"], p["code"]) for p in periods] == [(max(1, round(window / 24)), "d")]


def test_answer_types_follow_the_fact_types() -> None:
    """boolean → boolean; number → quantity in the fact's UCUM unit; coded → choice of its answers."""
    for link_id, item in questions_by_link_id().items():
        spec = vocabulary().specs[link_id]
        question = ASSESSMENT.question(link_id)
        assert question is not None
        if question.kind == "side":
            assert (item["type"], spec.per_leg) == ("choice", True)
        elif spec.type == "boolean" and question.kind == "codes":
            assert item["type"] == "choice"
            assert len(item["answerOption"]) >= 2
        elif spec.type == "boolean":
            assert item["type"] == "boolean"
        elif spec.type == "number":
            units = [e["valueCoding"] for e in item["extension"] if e["url"] == UNIT_OPTION]
            assert item["type"] == "quantity"
            assert units == [{"system": UCUM, "code": spec.unit, "display": spec.unit}]
        else:
            assert item["type"] == "choice"
            assert len(item["answerOption"]) == len(spec.answers)


@pytest.mark.parametrize("question", list(ASSESSMENT.questions()), ids=lambda q: q.link_id)
def test_the_mapper_reads_each_question_as_its_fact(question: Question) -> None:
    """An Observation with the question's code and answer type is read as the question's fact."""
    facts = MAPPER.map(patient_id="p1", patient=None, resources=[answered(question)], now=NOW)
    name = f"{question.link_id}_left" if question.per_leg else question.link_id
    assert facts[name].documented, f"{question.link_id}: not read from {question.code}"
    expected: object = True
    if question.kind == "quantity":
        expected = 2.0
    elif question.kind == "choice":
        expected = question.answers[0].key
    assert facts[name].value == expected


def test_every_observation_fact_the_rules_read_is_asked_or_excluded() -> None:
    """Back: no fact a rule reads from Observations is forgotten (asked, or read from an answer as
    episode_onset is from the symptom duration), and every exclusion carries a reason."""
    every_answer = [dict(answered(q), id=f"o{n}") for n, q in enumerate(ASSESSMENT.questions())]
    facts = MAPPER.map(patient_id="p1", patient=None, resources=every_answer, now=NOW)
    asked = {n.removesuffix("_left").removesuffix("_right") for n, f in facts.by_name.items() if f.documented}
    wanted = {name for name in rule_read_facts() if observation_read(name)}
    missing = wanted - asked - set(ASSESSMENT.excluded)
    assert not missing, f"facts the rules read that the form neither asks nor excludes: {sorted(missing)}"
    assert all(len(reason) > 10 for reason in ASSESSMENT.excluded.values())


def test_exclusions_are_not_stale() -> None:
    """Each excluded fact is one the rules read from Observations (else the entry is dead)."""
    wanted = {name for name in rule_read_facts() if observation_read(name)}
    assert set(ASSESSMENT.excluded) <= wanted


def test_every_code_comes_from_the_terminology_data() -> None:
    """Question and answer codes are finding codes or value-set codes, never invented."""
    findings = {c["code"] for c in finding_codesystem()["concept"]}
    terminology = bundled_terminology()
    for question in ASSESSMENT.questions():
        for coding in [question.code, *(a.coding for a in question.answers)]:
            if coding["system"] == FINDING_SYSTEM:
                assert coding["code"] in findings
            else:
                assert terminology.lookup(coding["system"], coding["code"]), coding


TYPICAL = {
    "suspected DVT": {"sudden_onset": False, "direct_trauma": False, "exertional_leg_pain": False,
                      "leg_oedema": True, "erythema": False, "low_back_pain": False, "paresthesia": False},
    "claudication": {"sudden_onset": False, "direct_trauma": False, "exertional_leg_pain": True,
                     "leg_oedema": False, "erythema": False, "low_back_pain": False, "paresthesia": False,
                     "relief_sitting_or_lumbar_flexion": False, "load_related_pain": False},
    "calf strain": {"sudden_onset": True, "direct_trauma": False, "exertional_leg_pain": False,
                    "leg_oedema": False, "erythema": False, "low_back_pain": False, "paresthesia": False},
    "exertional compartment": {"exertional_leg_pain": True, "load_related_pain": True,
                               "relief_sitting_or_lumbar_flexion": False},
}  # fmt: skip


@pytest.mark.parametrize("case", list(TYPICAL))
def test_typical_paths_show_at_most_twenty_questions(case: str) -> None:
    """enableWhen keeps the typical path short: Wells items only for a swollen leg, and so on."""
    shown = ASSESSMENT.shown(TYPICAL[case])
    assert len(shown) <= 20, (case, len(shown))


def test_wells_items_show_only_for_a_swollen_leg() -> None:
    """The Wells group opens on a swollen leg and stays closed otherwise."""
    assert "entire_leg_swollen" in ASSESSMENT.shown({"leg_oedema": True})
    assert "entire_leg_swollen" not in ASSESSMENT.shown({"leg_oedema": False})
    assert "onset_at_consistent_exercise_intensity" not in ASSESSMENT.shown({"exertional_leg_pain": True})


def broken(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    layout = copy.deepcopy(LAYOUT)
    target = layout
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return layout


@pytest.mark.parametrize(
    ("layout", "fact"),
    [
        (broken(("groups", 0, "items", 0, "fact"), "no_such_fact"), "no_such_fact"),
        (broken(("groups", 0, "items", 1, "fact"), "exertional_leg_pain"), "exertional_leg_pain"),
        (
            broken(("groups", 1, "enableWhen"), [{"fact": "symptom_duration_weeks", "answer": True}]),
            "symptom_duration_weeks",
        ),
        (broken(("groups", 0, "items", 0, "fact"), "diabetes"), "diabetes"),
        (broken(("excluded", "sudden_onset"), "asked and excluded at once"), "sudden_onset"),
    ],
    ids=["unknown fact", "asked twice", "opens on a number", "no Observation source", "asked and excluded"],
)
def test_a_layout_that_disagrees_with_the_vocabulary_fails_at_build(
    layout: dict[str, Any], fact: str
) -> None:
    """A layout naming the wrong fact, or opening a group on a non-yes/no question, does not build."""
    with pytest.raises(VocabularyError) as raised:
        build_assessment(layout, vocabulary(), bundled_terminology(), finding_codesystem())
    assert raised.value.fact == fact
