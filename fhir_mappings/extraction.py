"""SDC observation-based extraction: a QuestionnaireResponse to the assessment → a transaction Bundle.

The Bundle holds the QuestionnaireResponse (rebuilt from what was checked: nothing else of the
request is passed on) and one Observation per answered question — two for a per-leg finding when
the answer is "both legs". Each Observation is ``final``, about the response's subject, effective
at ``authored`` (else at ``now``), performed by the response's ``author``, ``derivedFrom`` the
QuestionnaireResponse (by its ``urn:uuid`` in the Bundle) and, for a leg finding, carries the
side in ``bodySite`` as a lateralised SNOMED CT limb structure.

A response that is malformed or inconsistent with the Questionnaire (an unknown question, a wrong
answer type, a unit other than the question's, a question answered although its group is not
shown, a leg finding without a side, …) raises :class:`ExtractionError` with the element path.
Nothing is extracted from such a response: the whole response is refused.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from fhir_mappings.errors import MappingError
from fhir_mappings.fhir_json import parse_datetime
from fhir_mappings.questionnaire import Answer, Assessment, Question
from fhir_mappings.terminology import SNOMED, UCUM

__all__ = [
    "CATEGORY_DISPLAY",
    "CATEGORY_SYSTEM",
    "CLOCK_SKEW",
    "EXTRACT_NAMESPACE",
    "LEG_SITES",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_QUANTITY",
    "SIDES",
    "Answered",
    "ExtractionError",
    "extract",
    "questionnaire_response",
]

CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
CATEGORY_DISPLAY = {"survey": "Survey", "exam": "Exam"}
LEG_SITES = {
    "left": {"system": SNOMED, "code": "32153003", "display": "Structure of left lower limb"},
    "right": {"system": SNOMED, "code": "62175007", "display": "Structure of right lower limb"},
}
SIDES = {"left": ("left",), "right": ("right",), "both": ("left", "right")}
EXTRACT_NAMESPACE = uuid.UUID("0d2b8f57-5bd6-4f4e-9a39-7f1c1b8c2a61")
MAX_ITEMS = 500
MAX_DEPTH = 4
MAX_QUANTITY = 1e6
CLOCK_SKEW = timedelta(minutes=5)
_LINK_ID = re.compile(r"[A-Za-z0-9_\-.]{1,64}")
_SUBJECT = re.compile(r"Patient/[A-Za-z0-9\-.]{1,64}")
_AUTHOR = re.compile(r"(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})")


class ExtractionError(MappingError):
    """The QuestionnaireResponse cannot be extracted; ``path`` is the FHIR element path of the culprit."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class Answered:
    """One checked answer: its question, the value as read, and where it was in the response."""

    question: Question
    value: bool | float | Answer
    path: str


def questionnaire_response(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The QuestionnaireResponse of an ``$extract`` request: the resource itself, or the SDC
    ``Parameters`` form with a ``questionnaire-response`` parameter."""
    if document.get("resourceType") != "Parameters":
        return document
    parameters = document.get("parameter")
    found = [
        p.get("resource")
        for p in (parameters if isinstance(parameters, list) else [])
        if isinstance(p, dict) and p.get("name") == "questionnaire-response"
    ]
    if len(found) != 1 or not isinstance(found[0], dict):
        raise ExtractionError("expected one 'questionnaire-response' parameter", path="Parameters.parameter")
    resource: Mapping[str, Any] = found[0]
    return resource


def extract(document: Mapping[str, Any], assessment: Assessment, *, now: datetime) -> dict[str, Any]:
    """The transaction Bundle for one QuestionnaireResponse (or ``$extract`` Parameters)."""
    response = questionnaire_response(document)
    if response.get("resourceType") != "QuestionnaireResponse":
        raise ExtractionError("expected a QuestionnaireResponse", path="resourceType")
    questionnaire = response.get("questionnaire")
    if questionnaire not in (assessment.url, f"{assessment.url}|{assessment.version}"):
        raise ExtractionError(
            f"this service extracts responses to {assessment.url} only", path="questionnaire"
        )
    status = response.get("status")
    if status not in ("completed", "amended"):
        raise ExtractionError("only a completed or amended response is extracted", path="status")
    subject = _reference(response, "subject", _SUBJECT)
    author = _reference(response, "author", _AUTHOR) if response.get("author") is not None else None
    effective = _authored(response, now)
    answers = _answers(response, assessment)
    side = _side(answers, assessment)
    _check_consistency(answers, assessment)

    rebuilt: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": questionnaire,
        "status": status,
        "subject": {"reference": subject},
        "authored": effective,
        "item": _response_items(answers, assessment),
    }
    if author is not None:
        rebuilt["author"] = {"reference": author}
    response_url = "urn:uuid:" + str(uuid.uuid5(EXTRACT_NAMESPACE, orjson.dumps(rebuilt).decode()))
    entries = [_entry(response_url, rebuilt)]
    for answer in answers:
        legs = SIDES[side] if answer.question.per_leg else (None,)
        for leg in legs:
            observation = _observation(answer, leg, subject, author, effective, response_url)
            name = f"{response_url}/{answer.question.link_id}/{leg}"
            entries.append(_entry("urn:uuid:" + str(uuid.uuid5(EXTRACT_NAMESPACE, name)), observation))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _entry(full_url: str, resource: Mapping[str, Any]) -> dict[str, Any]:
    kind = resource["resourceType"]
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": kind}}


def _reference(response: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = response.get(key)
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str) or not pattern.fullmatch(reference):
        expected = pattern.pattern.split("/")[0].strip("()").replace("|", ", ")
        raise ExtractionError(
            f"{key} must be a relative reference to one of: {expected}", path=f"{key}.reference"
        )
    return reference


def _authored(response: Mapping[str, Any], now: datetime) -> str:
    authored = response.get("authored")
    if authored is None:
        return now.isoformat()
    when = parse_datetime(authored) if isinstance(authored, str) and _DATETIME.fullmatch(authored) else None
    if when is None:
        raise ExtractionError("authored must be a dateTime with a time and a time zone", path="authored")
    if when > now + CLOCK_SKEW:
        raise ExtractionError("authored is in the future", path="authored")
    return str(authored)


def _items(items: object, path: str, depth: int) -> Iterator[tuple[Mapping[str, Any], str]]:
    if items is None:
        return
    if not isinstance(items, list):
        raise ExtractionError("item must be a list", path=path)
    if depth > MAX_DEPTH:
        raise ExtractionError("items are nested too deeply", path=path)
    for index, item in enumerate(items):
        here = f"{path}[{index}]"
        if not isinstance(item, dict):
            raise ExtractionError("an item must be an object", path=here)
        yield item, here
        yield from _items(item.get("item"), f"{here}.item", depth + 1)


def _answers(response: Mapping[str, Any], assessment: Assessment) -> list[Answered]:
    groups = {g.link_id for g in assessment.groups}
    seen: set[str] = set()
    answers: list[Answered] = []
    for count, (item, path) in enumerate(_items(response.get("item"), "item", 0)):
        if count >= MAX_ITEMS:
            raise ExtractionError("too many items", path=path)
        link_id = item.get("linkId")
        if not isinstance(link_id, str) or not _LINK_ID.fullmatch(link_id):
            raise ExtractionError("every item needs a linkId of this Questionnaire", path=f"{path}.linkId")
        if link_id in seen:
            raise ExtractionError(f"question {link_id} appears twice", path=f"{path}.linkId")
        seen.add(link_id)
        if link_id in groups:
            if item.get("answer"):
                raise ExtractionError(f"group {link_id} cannot have an answer", path=f"{path}.answer")
            continue
        question = assessment.question(link_id)
        if question is None:
            raise ExtractionError(f"no question {link_id} in this Questionnaire", path=f"{path}.linkId")
        if item.get("item"):
            raise ExtractionError(f"question {link_id} cannot hold items", path=f"{path}.item")
        given = item.get("answer")
        if given is None or given == []:
            continue  # not answered: nothing to say, and nothing is inferred
        if not isinstance(given, list) or len(given) != 1 or not isinstance(given[0], dict):
            raise ExtractionError(f"question {link_id} takes exactly one answer", path=f"{path}.answer")
        answers.append(Answered(question, _value(question, given[0], f"{path}.answer[0]"), path))
    return answers


def _value(question: Question, answer: Mapping[str, Any], path: str) -> bool | float | Answer:
    values = [key for key in answer if key.startswith("value")]
    expected = {"boolean": "valueBoolean", "quantity": "valueQuantity"}.get(question.kind, "valueCoding")
    if values != [expected]:
        raise ExtractionError(f"question {question.link_id} is answered with {expected}", path=path)
    value = answer[expected]
    if question.kind == "boolean":
        if not isinstance(value, bool):
            raise ExtractionError("valueBoolean must be true or false", path=f"{path}.valueBoolean")
        return value
    if question.kind == "quantity":
        return _quantity(question, value, f"{path}.valueQuantity")
    chosen = question.answer(value.get("system"), value.get("code")) if isinstance(value, dict) else None
    if chosen is None:
        raise ExtractionError(
            f"not an answer option of question {question.link_id}", path=f"{path}.valueCoding"
        )
    return chosen


def _quantity(question: Question, value: object, path: str) -> float:
    if not isinstance(value, dict):
        raise ExtractionError("valueQuantity must be an object", path=path)
    number, unit = value.get("value"), value.get("code", value.get("unit"))
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise ExtractionError("the quantity needs a finite number", path=f"{path}.value")
    if unit != question.fact.unit or value.get("system", UCUM) != UCUM:
        raise ExtractionError(f"the unit must be UCUM {question.fact.unit!r}", path=f"{path}.code")
    if abs(number) > MAX_QUANTITY or (number < 0 and not question.signed):
        raise ExtractionError("the quantity is out of range", path=f"{path}.value")
    return float(number)


def _side(answers: list[Answered], assessment: Assessment) -> str:
    chosen = [a for a in answers if a.question is assessment.side]
    if not chosen:
        raise ExtractionError(f"the side ({assessment.side.link_id}) must be answered", path="item")
    value = chosen[0].value
    return value.key if isinstance(value, Answer) else "both"  # _value gives a side an Answer


def _check_consistency(answers: list[Answered], assessment: Assessment) -> None:
    booleans = {a.question.link_id: a.value for a in answers if isinstance(a.value, bool)}
    for answer in answers:
        group = assessment.group_of(answer.question.link_id)
        if group is not None and not group.enabled(booleans):
            raise ExtractionError(
                f"{answer.question.link_id} is answered although its group {group.link_id} is not shown",
                path=answer.path,
            )


def _response_items(answers: list[Answered], assessment: Assessment) -> list[dict[str, Any]]:
    """The response's items as checked, nested in the Questionnaire's groups."""
    by_link = {a.question.link_id: a for a in answers}
    items: list[dict[str, Any]] = []
    if assessment.side.link_id in by_link:
        items.append(_response_item(by_link[assessment.side.link_id]))
    for group in assessment.groups:
        children = [_response_item(by_link[q.link_id]) for q in group.questions if q.link_id in by_link]
        if children:
            items.append({"linkId": group.link_id, "text": group.text, "item": children})
    return items


def _response_item(answer: Answered) -> dict[str, Any]:
    question = answer.question
    return {"linkId": question.link_id, "text": question.text, "answer": [_answer_value(answer)]}


def _answer_value(answer: Answered) -> dict[str, Any]:
    value = answer.value
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, float):
        unit = str(answer.question.fact.unit)
        return {"valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}
    return {"valueCoding": dict(value.coding)}


def _observation(
    answer: Answered, leg: str | None, subject: str, author: str | None, effective: str, response_url: str
) -> dict[str, Any]:
    question = answer.question
    code = question.code
    chosen = answer.value
    value: dict[str, Any]
    if question.kind == "side":
        value = {"valueBoolean": True}  # calf pain, on the leg(s) named
    elif question.kind == "codes" and isinstance(chosen, Answer):
        code = chosen.records or question.code  # the code chosen, or the first one looked for and absent
        value = {"valueBoolean": chosen.records is not None}
    elif question.kind == "choice" and isinstance(chosen, Answer):
        value = {"valueCodeableConcept": {"coding": [dict(chosen.coding)]}}
    else:
        value = _answer_value(answer)
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": CATEGORY_SYSTEM,
                        "code": question.category,
                        "display": CATEGORY_DISPLAY[question.category],
                    }
                ]
            }
        ],
        "code": {"coding": [dict(code)], "text": question.fact.label},
        "subject": {"reference": subject},
        "effectiveDateTime": effective,
        "derivedFrom": [{"reference": response_url}],
    }
    if author is not None:
        observation["performer"] = [{"reference": author}]
    if leg is not None:
        observation["bodySite"] = {"coding": [LEG_SITES[leg]], "text": f"{leg} lower limb"}
    observation.update(value)
    return observation
