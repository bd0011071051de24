"""SDC extraction: a response to the assessment becomes a transaction Bundle of coded Observations
that the mapper reads back as the facts answered; an inconsistent response is refused whole."""

from __future__ import annotations

import contextlib
import copy
from datetime import timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings.extraction import ExtractionError, extract
from fhir_mappings.facts import vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import SNOMED, bundled_terminology
from tests.assessment_builders import (
    ASSESSMENT,
    CALF_STRAIN,
    CLAUDICATION,
    PRACTITIONER,
    SUSPECTED_DVT,
    response,
)
from tests.fhir_builders import NOW
from tests.strategies import json_values

MAPPER = Mapper(vocabulary(), bundled_terminology())
TYPICAL = {"suspected DVT": SUSPECTED_DVT, "claudication": CLAUDICATION, "calf strain": CALF_STRAIN}


def observations(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]


def by_code(bundle: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [o for o in observations(bundle) if o["code"]["coding"][0]["code"] == code]


def facts_of(bundle: dict[str, Any]) -> Any:
    with_ids = [dict(o, id=f"x{n}") for n, o in enumerate(observations(bundle))]
    return MAPPER.map(patient_id="p1", patient=None, resources=with_ids, now=NOW + timedelta(hours=1))


@pytest.mark.parametrize("case", list(TYPICAL))
def test_the_bundle_and_every_observation_are_valid_fhir(case: str) -> None:
    """The transaction Bundle, its QuestionnaireResponse and each Observation validate."""
    bundle = extract(response(TYPICAL[case]), ASSESSMENT, now=NOW)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "transaction"
    QuestionnaireResponse.model_validate(bundle["entry"][0]["resource"])
    for observation in observations(bundle):
        Observation.model_validate(observation)


@pytest.mark.parametrize("case", list(TYPICAL))
def test_one_observation_per_answer(case: str) -> None:
    """A left-sided response gives one Observation per answered question, the side included."""
    bundle = extract(response(TYPICAL[case]), ASSESSMENT, now=NOW)
    assert len(observations(bundle)) == len(TYPICAL[case]) + 1


def test_observations_carry_status_subject_time_performer_and_source() -> None:
    """Each Observation is final, about the subject, at `authored`, by the author, from the response."""
    bundle = extract(response(CLAUDICATION), ASSESSMENT, now=NOW + timedelta(hours=2))
    response_url = bundle["entry"][0]["fullUrl"]
    assert response_url.startswith("urn:uuid:")
    for observation in observations(bundle):
        assert observation["status"] == "final"
        assert observation["subject"] == {"reference": "Patient/p1"}
        assert observation["effectiveDateTime"] == NOW.isoformat()
        assert observation["performer"] == [{"reference": PRACTITIONER}]
        assert observation["derivedFrom"] == [{"reference": response_url}]
    assert all(
        e["request"] == {"method": "POST", "url": e["resource"]["resourceType"]} for e in bundle["entry"]
    )


def test_without_authored_the_clock_dates_the_findings() -> None:
    """No `authored`: the Observations and the response are dated at the injected now."""
    body = response(CLAUDICATION)
    del body["authored"], body["author"]
    bundle = extract(body, ASSESSMENT, now=NOW)
    assert {o["effectiveDateTime"] for o in observations(bundle)} == {NOW.isoformat()}
    assert all("performer" not in o for o in observations(bundle))


@pytest.mark.parametrize(
    ("side", "codes"), [("left", ["32153003"]), ("right", ["62175007"]), ("both", ["32153003", "62175007"])]
)
def test_the_side_is_applied_to_every_leg_finding(side: str, codes: list[str]) -> None:
    """Leg findings carry the side as a limb structure; 'both' writes one Observation per leg."""
    bundle = extract(response(SUSPECTED_DVT, side=side), ASSESSMENT, now=NOW)
    for code in ("300954003", "entire-leg-swollen", "247348008"):
        sites = [o["bodySite"]["coding"][0] for o in by_code(bundle, code)]
        assert [s["code"] for s in sites] == codes
        assert {s["system"] for s in sites} == {SNOMED}
    assert all("bodySite" not in o for o in by_code(bundle, "on-active-cancer-treatment"))


@pytest.mark.parametrize("case", list(TYPICAL))
def test_the_mapper_reads_the_extracted_observations_as_the_answers(case: str) -> None:
    """Round trip: every answer comes back from the mapper as its fact, on the leg answered."""
    answers = TYPICAL[case]
    facts = facts_of(extract(response(answers, side="right"), ASSESSMENT, now=NOW))
    assert facts["calf_pain_right"].value is True
    assert facts["calf_pain_left"].value is None
    for link_id, value in answers.items():
        question = ASSESSMENT.question(link_id)
        assert question is not None
        name = f"{link_id}_right" if question.per_leg else link_id
        expected = value
        if question.kind == "codes":
            expected = value != "absent"
        elif isinstance(value, int | float) and not isinstance(value, bool):
            expected = float(value)
        assert facts[name].value == expected, link_id


@pytest.mark.parametrize(
    ("answer", "code", "value"), [("421346005", "421346005", True), ("absent", "420829009", False)]
)
def test_a_graded_answer_records_its_own_code(answer: str, code: str, value: bool) -> None:
    """Pitting oedema 3+ is recorded as SNOMED CT 3+ present; 'absent' as 1+ (the least) absent."""
    bundle = extract(response(dict(SUSPECTED_DVT, pitting_oedema=answer)), ASSESSMENT, now=NOW)
    (observation,) = by_code(bundle, code)
    assert observation["valueBoolean"] is value
    assert facts_of(bundle)["pitting_oedema_left"].value is value


def test_a_coded_answer_is_a_codeable_concept() -> None:
    """Pedal pulses 'absent' is the finding code pulse-absent, read back as 'absent'."""
    bundle = extract(response(dict(CLAUDICATION, pedal_pulses="absent")), ASSESSMENT, now=NOW)
    (observation,) = by_code(bundle, "pedal-pulses")
    assert observation["valueCodeableConcept"]["coding"][0]["code"] == "pulse-absent"
    assert facts_of(bundle)["pedal_pulses_left"].value == "absent"


def test_unanswered_questions_write_nothing() -> None:
    """Only the side answered: one calf-pain Observation and nothing else is asserted."""
    bundle = extract(response({}), ASSESSMENT, now=NOW)
    assert [o["code"]["coding"][0]["code"] for o in observations(bundle)] == ["300954003"]


def test_the_response_is_rebuilt_from_what_was_checked() -> None:
    """Extensions, contained resources, narrative and ids sent with the response are not passed on."""
    body = response(
        CLAUDICATION, id="evil", text={"status": "generated", "div": "<div><script>x</script></div>"}
    )
    body["extension"] = [{"url": "http://example.org/x", "valueString": "smuggled"}]
    body["contained"] = [{"resourceType": "Patient", "id": "other"}]
    written = extract(body, ASSESSMENT, now=NOW)["entry"][0]["resource"]
    assert set(written) == {
        "resourceType",
        "questionnaire",
        "status",
        "subject",
        "authored",
        "author",
        "item",
    }


def test_the_parameters_form_of_extract_is_accepted() -> None:
    """SDC's Parameters with a `questionnaire-response` gives the same Bundle as the bare response."""
    body = response(CALF_STRAIN)
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "questionnaire-response", "resource": body}],
    }
    assert extract(parameters, ASSESSMENT, now=NOW) == extract(body, ASSESSMENT, now=NOW)


def damaged(change: Any) -> dict[str, Any]:
    body = copy.deepcopy(response(SUSPECTED_DVT))
    change(body)
    return body


def answer_of(body: dict[str, Any], group: int, index: int) -> dict[str, Any]:
    answer: dict[str, Any] = body["item"][group]["item"][index]["answer"][0]
    return answer


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "another resource": (damaged(lambda b: b.update(resourceType="Observation")), "resourceType"),
    "another questionnaire": (damaged(lambda b: b.update(questionnaire="http://example.org/Q/1")), "questionnaire"),
    "in progress": (damaged(lambda b: b.update(status="in-progress")), "status"),
    "no subject": (damaged(lambda b: b.pop("subject")), "subject.reference"),
    "a group as subject": (damaged(lambda b: b.update(subject={"reference": "Group/g1"})), "subject.reference"),
    "a device as author": (damaged(lambda b: b.update(author={"reference": "Device/d"})), "author.reference"),
    "authored tomorrow": (damaged(lambda b: b.update(authored=(NOW + timedelta(days=1)).isoformat())), "authored"),
    "authored without a zone": (damaged(lambda b: b.update(authored="2026-11-20T09:00:00")), "authored"),
    "no side": (damaged(lambda b: b["item"].pop(0)), "item"),
    "unknown question": (damaged(lambda b: b["item"][1]["item"][0].update(linkId="no_such_question")), "item[1].item[0].linkId"),
    "question twice": (damaged(lambda b: b["item"][1]["item"].append(copy.deepcopy(b["item"][1]["item"][1]))), "item[1].item[8].linkId"),
    "two answers": (damaged(lambda b: b["item"][1]["item"][1]["answer"].append({"valueBoolean": True})), "item[1].item[1].answer"),
    "string for boolean": (damaged(lambda b: answer_of(b, 1, 1).update(valueBoolean="yes")), "item[1].item[1].answer[0].valueBoolean"),
    "coding for boolean": (damaged(lambda b: b["item"][1]["item"][1].update(answer=[{"valueCoding": {"code": "x"}}])), "item[1].item[1].answer[0]"),
    "unit other than the question's": (damaged(lambda b: answer_of(b, 2, 2)["valueQuantity"].update(code="mm")), "item[2].item[2].answer[0].valueQuantity.code"),
    "not a number": (damaged(lambda b: answer_of(b, 1, 0)["valueQuantity"].update(value="3")), "item[1].item[0].answer[0].valueQuantity.value"),
    "negative duration": (damaged(lambda b: answer_of(b, 1, 0)["valueQuantity"].update(value=-1)), "item[1].item[0].answer[0].valueQuantity.value"),
    "huge number": (damaged(lambda b: answer_of(b, 1, 0)["valueQuantity"].update(value=1e300)), "item[1].item[0].answer[0].valueQuantity.value"),
    "answer not offered": (damaged(lambda b: answer_of(b, 2, 3)["valueCoding"].update(code="999999")), "item[2].item[3].answer[0].valueCoding"),
    "Wells with a leg not swollen": (damaged(lambda b: answer_of(b, 1, 4).update(valueBoolean=False)), "item[2].item[0]"),
    "answer on a group": (damaged(lambda b: b["item"][1].update(answer=[{"valueBoolean": True}])), "item[1].answer"),
    "items under a question": (damaged(lambda b: b["item"][1]["item"][1].update(item=[{"linkId": "x"}])), "item[1].item[1].item"),
    "items not a list": (damaged(lambda b: b.update(item={"linkId": "calf_pain"})), "item"),
    "Parameters without a response": ({"resourceType": "Parameters", "parameter": [{"name": "other"}]}, "Parameters.parameter"),
    "hostile linkId": (damaged(lambda b: b["item"][1]["item"][0].update(linkId="<script>")), "item[1].item[0].linkId"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_inconsistent_response_is_refused_whole(case: str) -> None:
    """Every malformed or inconsistent response raises ExtractionError naming the element."""
    body, path = REFUSED[case]
    with pytest.raises(ExtractionError) as raised:
        extract(body, ASSESSMENT, now=NOW)
    assert raised.value.path == path
    assert "<script>" not in str(raised.value)


def test_the_msk_group_needs_every_condition() -> None:
    """The musculoskeletal group (enableBehavior all) refuses answers when the leg is swollen."""
    answers = dict(CALF_STRAIN, leg_oedema=True)
    with pytest.raises(ExtractionError, match="musculoskeletal"):
        extract(response(answers), ASSESSMENT, now=NOW)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["item", "subject", "authored", "author", "status"]), json_values, max_size=3
    )
)
def test_extraction_is_total(changes: dict[str, Any]) -> None:
    """Whatever replaces parts of a response, the answer is a Bundle or an ExtractionError."""
    body = response(SUSPECTED_DVT)
    body.update(changes)
    with contextlib.suppress(ExtractionError):
        Bundle.model_validate(extract(body, ASSESSMENT, now=NOW))
