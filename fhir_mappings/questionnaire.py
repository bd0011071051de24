"""The calf-pain assessment: a FHIR R4 Questionnaire (SDC) generated from the finding vocabulary.

``data/assessment.json`` says only the layout: which fact each question records, its wording, its
group and when the group opens (``enableWhen`` on other questions' answers). Everything a question
must agree on with the mapper comes from the vocabulary, so the two cannot drift:

* its code: the finding code (``finding`` source) or a SNOMED CT / LOINC code of the fact's
  Observation value set — the code the mapper routes on;
* its answer type: ``boolean`` for a boolean fact, ``quantity`` with the fact's UCUM unit for a
  number, ``choice`` over the fact's declared answers for a coded fact;
* its look-back: ``observationLinkPeriod`` = the fact's window (pre-filling from recent Observations).

The side is asked once (the ``calf_pain`` question) and applied to every per-leg finding. Building
fails with a :class:`~fhir_mappings.errors.VocabularyError` naming the fact when the layout and the
vocabulary disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from fhir_mappings.errors import VocabularyError
from fhir_mappings.facts import FactSpec, Vocabulary, vocabulary
from fhir_mappings.terminology import FINDING_SYSTEM, LOINC, SNOMED, UCUM, Terminology, bundled_terminology

__all__ = [
    "ABSENT_VALUESET",
    "BASE",
    "OBSERVATION_EXTRACT",
    "OBSERVATION_LINK_PERIOD",
    "SDC",
    "UNIT_OPTION",
    "Answer",
    "Assessment",
    "Category",
    "Condition",
    "Group",
    "Kind",
    "Question",
    "build_assessment",
    "bundled_assessment",
    "finding_codesystem",
]

BASE = "http://calf-cds.org/fhir"
SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition"
OBSERVATION_EXTRACT = f"{SDC}/sdc-questionnaire-observationExtract"
OBSERVATION_LINK_PERIOD = f"{SDC}/sdc-questionnaire-observationLinkPeriod"
UNIT_OPTION = "http://hl7.org/fhir/StructureDefinition/questionnaire-unitOption"
ABSENT_VALUESET = "finding-absent"

Kind = Literal["side", "boolean", "quantity", "choice", "codes"]
Category = Literal["survey", "exam"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer option: its key, the coding shown and sent, and for ``codes`` questions the
    Observation code it records (``None``: the finding looked for and absent)."""

    key: str
    coding: Mapping[str, str]
    records: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Question:
    """One question: the fact it records and everything extraction needs to write it."""

    fact: FactSpec
    text: str
    kind: Kind
    code: Mapping[str, str]
    category: Category
    answers: tuple[Answer, ...] = ()
    signed: bool = False  # a quantity that may be negative (a difference); others are at least 0

    @property
    def link_id(self) -> str:
        return self.fact.name

    @property
    def per_leg(self) -> bool:
        return self.fact.per_leg

    def answer(self, system: object, code: object) -> Answer | None:
        for answer in self.answers:
            if answer.coding["system"] == system and answer.coding["code"] == code:
                return answer
        return None


@dataclass(frozen=True, slots=True)
class Condition:
    """``enableWhen``: the question ``fact`` answered ``answer``."""

    fact: str
    answer: bool


@dataclass(frozen=True, slots=True)
class Group:
    link_id: str
    text: str
    questions: tuple[Question, ...]
    enable_when: tuple[Condition, ...] = ()
    behavior: Literal["any", "all"] = "any"

    def enabled(self, answers: Mapping[str, object]) -> bool:
        """Whether the group shows, given the boolean answers so far (by link id)."""
        if not self.enable_when:
            return True
        met = [answers.get(c.fact) is c.answer for c in self.enable_when]
        return all(met) if self.behavior == "all" else any(met)


@dataclass(frozen=True)
class Assessment:
    """The assessment as data; :meth:`to_questionnaire` renders the FHIR resource."""

    id: str
    version: str
    title: str
    description: str
    side: Question
    groups: tuple[Group, ...]
    excluded: Mapping[str, str]

    @property
    def url(self) -> str:
        return f"{BASE}/Questionnaire/{self.id}"

    def questions(self) -> Iterator[Question]:
        yield self.side
        for group in self.groups:
            yield from group.questions

    def question(self, link_id: str) -> Question | None:
        return next((q for q in self.questions() if q.link_id == link_id), None)

    def group_of(self, link_id: str) -> Group | None:
        return next((g for g in self.groups if any(q.link_id == link_id for q in g.questions)), None)

    def shown(self, answers: Mapping[str, object]) -> list[str]:
        """The link ids of the questions a form shows for these (boolean) answers."""
        shown = [self.side.link_id]
        for group in self.groups:
            if group.enabled(answers):
                shown += [q.link_id for q in group.questions]
        return shown

    def to_questionnaire(self) -> dict[str, Any]:
        return {
            "resourceType": "Questionnaire",
            "id": self.id,
            "url": self.url,
            "version": self.version,
            "name": "CalfPainAssessment",
            "title": self.title,
            "status": "active",
            "experimental": False,
            "subjectType": ["Patient"],
            "publisher": "calf-cds",
            "description": self.description,
            "item": [_item(self.side, required=True), *(_group(g) for g in self.groups)],
        }


def _item(question: Question, *, required: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {
        "linkId": question.link_id,
        "code": [dict(question.code)],
        "text": question.text,
        "type": "choice" if question.kind in ("side", "choice", "codes") else question.kind,
    }
    extensions: list[dict[str, Any]] = [{"url": OBSERVATION_EXTRACT, "valueBoolean": True}]
    if question.fact.window_hours is not None:
        days = max(1, round(question.fact.window_hours / 24))
        period = {"value": days, "unit": "days", "system": UCUM, "code": "d"}
        extensions.append({"url": OBSERVATION_LINK_PERIOD, "valueDuration": period})
    if question.kind == "quantity":
        unit = str(question.fact.unit)
        extensions.append(
            {"url": UNIT_OPTION, "valueCoding": {"system": UCUM, "code": unit, "display": unit}}
        )
    item["extension"] = extensions
    if required:
        item["required"] = True
    if question.answers:
        item["answerOption"] = [{"valueCoding": dict(a.coding)} for a in question.answers]
    return item


def _group(group: Group) -> dict[str, Any]:
    item: dict[str, Any] = {"linkId": group.link_id, "text": group.text, "type": "group"}
    if group.enable_when:
        item["enableWhen"] = [
            {"question": c.fact, "operator": "=", "answerBoolean": c.answer} for c in group.enable_when
        ]
        if len(group.enable_when) > 1:
            item["enableBehavior"] = group.behavior
    item["item"] = [_item(q) for q in group.questions]
    return item


class _Builder:
    def __init__(self, vocabulary: Vocabulary, terminology: Terminology, findings: Mapping[str, Any]):
        self.vocabulary = vocabulary
        self.terminology = terminology
        self.displays = {str(c["code"]): str(c["display"]) for c in findings.get("concept", ())}

    def fact(self, name: str) -> FactSpec:
        spec = self.vocabulary.specs.get(name)
        if spec is None:
            raise VocabularyError("the assessment asks a fact the vocabulary does not declare", fact=name)
        return spec

    def finding(self, code: str, fact: str) -> dict[str, str]:
        if code not in self.displays:
            raise VocabularyError(f"finding code {code!r} is not in CodeSystem-finding", fact=fact)
        return {"system": FINDING_SYSTEM, "code": code, "display": self.displays[code]}

    def standard(self, valueset: str, fact: str, code: str | None = None) -> list[dict[str, str]]:
        """The SNOMED CT / LOINC codings of a value set (only ``code`` when given)."""
        self.terminology.require([valueset], fact=fact)
        codings = [
            {"system": e.system, "code": e.code, "display": e.display}
            for e in self.terminology.valuesets[valueset]
            if e.system in (SNOMED, LOINC) and (code is None or e.code == code)
        ]
        if not codings:
            raise VocabularyError(f"value set {valueset!r} has no such SNOMED CT / LOINC code", fact=fact)
        return codings

    def observation_source(self, spec: FactSpec) -> Mapping[str, Any]:
        for source in spec.sources:
            if source.get("from") == "observation" and source.get("date") != "start-from-duration":
                return source
        raise VocabularyError("the assessment asks a fact no Observation records", fact=spec.name)

    def question(self, entry: Mapping[str, Any], category: Category) -> Question:
        spec = self.fact(str(entry["fact"]))
        source = self.observation_source(spec)
        text = str(entry.get("text") or spec.label)
        category = entry.get("category", category)
        if "finding" in source:
            code = self.finding(str(source["finding"]), spec.name)
        else:
            code = self.standard(str(source["valueset"]), spec.name, entry.get("code"))[0]
        if spec.type == "number":
            if spec.unit is None:
                raise VocabularyError("a number fact needs a UCUM unit to be asked", fact=spec.name)
            return Question(spec, text, "quantity", code, category, signed=bool(entry.get("signed")))
        if spec.type == "code":
            answers = tuple(self.answer(key, target, spec.name) for key, target in spec.answers.items())
            if not answers:
                raise VocabularyError("a coded fact needs declared answers to be asked", fact=spec.name)
            return Question(spec, text, "choice", code, category, answers)
        if entry.get("choose_code"):
            codes = self.standard(str(source["valueset"]), spec.name)
            absent = self.standard(ABSENT_VALUESET, spec.name)[0]
            answers = (
                Answer("absent", absent, None),
                *(Answer(c["code"], c, c) for c in codes),
            )
            return Question(spec, text, "codes", codes[0], category, answers)
        return Question(spec, text, "boolean", code, category)

    def answer(self, key: str, target: Mapping[str, str], fact: str) -> Answer:
        if "finding" in target:
            return Answer(key, self.finding(target["finding"], fact))
        return Answer(key, self.standard(target["valueset"], fact)[0])

    def side(self, entry: Mapping[str, Any]) -> Question:
        spec = self.fact(str(entry["fact"]))
        if not spec.per_leg or spec.type != "boolean":
            raise VocabularyError("the side question records a per-leg boolean fact", fact=spec.name)
        code = self.standard(str(self.observation_source(spec)["valueset"]), spec.name)[0]
        answers = tuple(
            Answer(key, self.standard(valueset, spec.name)[0]) for key, valueset in entry["answers"].items()
        )
        return Question(spec, str(entry["text"]), "side", code, "survey", answers)


def build_assessment(
    document: Mapping[str, Any],
    vocabulary: Vocabulary,
    terminology: Terminology,
    findings: Mapping[str, Any],
) -> Assessment:
    """The assessment from its layout, checked against the vocabulary and the terminology."""
    builder = _Builder(vocabulary, terminology, findings)
    side = builder.side(document["side"])
    groups: list[Group] = []
    seen = {side.link_id}
    for entry in document["groups"]:
        questions = tuple(builder.question(item, "survey") for item in entry["items"])
        for question in questions:
            if question.link_id in seen:
                raise VocabularyError("the assessment asks a fact twice", fact=question.link_id)
            seen.add(question.link_id)
        conditions = tuple(Condition(str(c["fact"]), bool(c["answer"])) for c in entry.get("enableWhen", ()))
        groups.append(
            Group(
                str(entry["linkId"]),
                str(entry["text"]),
                questions,
                conditions,
                entry.get("enableBehavior", "any"),
            )
        )
    assessment = Assessment(
        id=str(document["id"]),
        version=str(document["version"]),
        title=str(document["title"]),
        description=str(document["description"]),
        side=side,
        groups=tuple(groups),
        excluded=dict(document.get("excluded", {})),
    )
    for group in groups:
        for condition in group.enable_when:
            target = assessment.question(condition.fact)
            if target is None or target.kind != "boolean":
                raise VocabularyError(
                    f"group {group.link_id!r} opens on a question that is not a yes/no question",
                    fact=condition.fact,
                )
            if assessment.group_of(condition.fact) is group:
                raise VocabularyError(
                    f"group {group.link_id!r} opens on its own question", fact=condition.fact
                )
    for name in assessment.excluded:
        if name in seen:
            raise VocabularyError("a fact is both asked and excluded", fact=name)
        builder.fact(name)
    return assessment


def _data(name: str) -> Any:
    return json.loads(resources.files("fhir_mappings").joinpath(f"data/{name}").read_text("utf-8"))


def finding_codesystem() -> dict[str, Any]:
    """The project's finding CodeSystem resource, as bundled."""
    document: dict[str, Any] = _data("CodeSystem-finding.json")
    return document


@cache
def bundled_assessment() -> Assessment:
    """The assessment shipped with the package, built against the bundled vocabulary."""
    return build_assessment(
        _data("assessment.json"), vocabulary(), bundled_terminology(), finding_codesystem()
    )
