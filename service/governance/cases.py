"""Run a pack's clinical test cases (``calf-cds rules test``): FHIR resources in, expected cards out.

The case format is the one in ``tests/rules/cases/README.md``: each file is a JSON array of cases
with ``id``, ``now``, ``patient``, ``resources`` and ``expect`` (``topics`` that must be
present, ``forbidden`` topics, ``indicators`` per topic, ``mentions`` per topic — phrases found
case-insensitively in that card's summary or detail — and an optional ``pattern``). Each case
goes through the same mapper, engine and card builder as a live call.

Versioned answers: a case written for a later pack says ``since`` (a pack older than that skips
it); where a pack deliberately answers differently, ``expect_by_version`` holds that version's
answer. ``contract_facts`` adds facts the mapper contract promises (``name → value`` or
``{"value", "hours_ago"}``) on top of what the resources give.

Order-hook cases (``tests/rules/order-cases/README.md``) name their ``hook`` (``order-select``,
``order-sign`` or both) and carry ``draftOrders`` (``selections``, ``site_orderables``): they run
once per hook as the service runs them — the draft orders read (:mod:`fhir_mappings.orders`), their
facts added, the pack evaluated for that hook, the cards built with the delete actions — and may
also expect ``rules`` / ``forbidden_rules`` (rule ids), ``recommended`` (per topic, the recommended
suggestion's deleted references and created code; ``null`` for none) and ``foreign`` (draft orders
read as about another patient). A hook the pack does not answer skips the case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fhir_mappings.facts import Fact, Facts, Vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.orderables import bundled_catalogue
from fhir_mappings.orders import DraftOrders, OrderReader
from fhir_mappings.terminology import bundled_terminology
from rules.engine import evaluate
from rules.pack import RulePack
from service.governance.errors import CaseFileError
from service.hooks.cards import build_cards

__all__ = ["CaseResult", "applies", "case_hooks", "load_cases", "run_case", "run_cases"]


@dataclass(frozen=True)
class CaseResult:
    file: str
    case_id: str
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(folder: Path) -> list[tuple[str, Mapping[str, Any]]]:
    """Every case of every ``*.json`` file in ``folder``, with its file name."""
    if not folder.is_dir():
        raise CaseFileError("no such folder of cases", path=str(folder))
    cases: list[tuple[str, Mapping[str, Any]]] = []
    for path in sorted(folder.glob("*.json")):
        try:
            document = json.loads(path.read_text("utf-8"))
        except json.JSONDecodeError as error:
            raise CaseFileError(f"not JSON: {error}", path=str(path)) from None
        if not isinstance(document, list):
            raise CaseFileError("a case file is a JSON array of cases", path=str(path))
        for case in document:
            if not isinstance(case, dict) or not {"id", "now", "resources", "expect"} <= set(case):
                raise CaseFileError("a case needs id, now, resources and expect", path=str(path))
            cases.append((path.name, case))
    return cases


def _version(text: object) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        return (0,)


def applies(case: Mapping[str, Any], version: str) -> bool:
    """Whether ``case`` is an expectation of pack ``version`` (cases written for a later pack are not)."""
    return _version(version) >= _version(case.get("since", "0.0.0"))


def _with_contract_facts(facts: Facts, case: Mapping[str, Any], now: datetime, file: str) -> Facts:
    extra: dict[str, Fact] = {}
    given = case.get("contract_facts", {})
    if not isinstance(given, Mapping):
        raise CaseFileError("contract_facts is an object", path=file, case=str(case["id"]))
    for name, spec in given.items():
        value, hours = (
            (spec.get("value"), spec.get("hours_ago", 1.0)) if isinstance(spec, Mapping) else (spec, 1.0)
        )
        if name not in facts.declared or not isinstance(hours, int | float):
            raise CaseFileError(
                f"contract fact {name!r} is not in the vocabulary", path=file, case=str(case["id"])
            )
        extra[str(name)] = Fact(str(name), value, (), now - timedelta(hours=float(hours)))
    if not extra:
        return facts
    return Facts(by_name={**facts.by_name, **extra}, declared=facts.declared, notes=facts.notes)


def case_hooks(case: Mapping[str, Any]) -> tuple[str, ...]:
    """The hooks a case is a call of (``patient-view`` unless it names its ``hook``)."""
    hook = case.get("hook", "patient-view")
    return tuple(str(h) for h in hook) if isinstance(hook, list) else (str(hook),)


def _drafts(
    case: Mapping[str, Any], vocabulary: Vocabulary, patient_id: str, hook: str, file: str
) -> tuple[DraftOrders, list[Fact]]:
    catalogue = bundled_catalogue()
    site = case.get("site_orderables")
    if site is not None:
        if not isinstance(site, Mapping):
            raise CaseFileError("site_orderables is an object", path=file, case=str(case["id"]))
        catalogue = catalogue.extended(site, path=f"{file} case {case['id']}")
    drafts, extra = OrderReader(catalogue, vocabulary).read(
        case.get("draftOrders"), patient_id=patient_id, hook=hook, selections=case.get("selections")
    )
    return drafts, list(extra.values())


def run_case(
    pack: RulePack,
    vocabulary: Vocabulary,
    mapper: Mapper,
    file: str,
    case: Mapping[str, Any],
    hook: str = "patient-view",
) -> CaseResult:
    case_id = str(case["id"]) if hook == "patient-view" else f"{case['id']} ({hook})"
    try:
        now = datetime.fromisoformat(str(case["now"]).replace("Z", "+00:00"))
    except ValueError:
        raise CaseFileError("'now' is not an ISO 8601 instant", path=file, case=case_id) from None
    patient = case.get("patient")
    patient_id = str(patient.get("id", "p1")) if isinstance(patient, Mapping) else "p1"
    facts = mapper.map(patient_id=patient_id, patient=patient, resources=case["resources"], now=now)
    facts = _with_contract_facts(facts, case, now, file)
    drafts = None
    if hook != "patient-view":
        drafts, extra = _drafts(case, vocabulary, patient_id, hook, file)
        facts = facts.with_facts(extra, notes=drafts.notes)
    assessment = evaluate(pack, facts, hook=hook)
    pairs = build_cards(
        assessment, facts, vocabulary, patient_id=patient_id, now=now, hook=hook, drafts=drafts
    )
    cards: dict[str, list[Any]] = {}
    for card, recommendation in pairs:
        cards.setdefault(recommendation.topic, []).append(card)
    expect: Mapping[str, Any] = case.get("expect_by_version", {}).get(pack.version, case["expect"])
    failures = []
    for topic in expect.get("topics", []):
        if topic not in cards:
            failures.append(f"expected a {topic} card")
    for topic in expect.get("forbidden", []):
        if topic in cards:
            failures.append(f"{topic} card is forbidden here")
    for topic, indicator in expect.get("indicators", {}).items():
        shown = {card.indicator for card in cards.get(topic, [])}
        if shown and indicator not in shown:
            failures.append(f"{topic} card should be {indicator}, is {', '.join(sorted(shown))}")
    for topic, phrases in expect.get("mentions", {}).items():
        text = " ".join(f"{card.summary} {card.detail or ''}" for card in cards.get(topic, [])).lower()
        for phrase in phrases:
            if topic in cards and phrase.lower() not in text:
                failures.append(f"{topic} card does not mention {phrase!r}")
    pattern = expect.get("pattern")
    # the assessment's one overall pattern, as every card states it
    if pattern is not None and pattern != assessment.pattern:
        failures.append(f"pattern should be {pattern}, is {assessment.pattern}")
    fired = {recommendation.rule_id for _, recommendation in pairs}
    failures += [f"rule {rule} should fire" for rule in expect.get("rules", []) if rule not in fired]
    failures += [f"rule {rule} must not fire" for rule in expect.get("forbidden_rules", []) if rule in fired]
    for topic, wanted in expect.get("recommended", {}).items():
        failures += _recommended_problems(topic, wanted, cards.get(topic, []))
    if drafts is not None and list(drafts.foreign) != list(expect.get("foreign", [])):
        failures.append(f"draft orders about another patient: {list(drafts.foreign)}")
    return CaseResult(file, case_id, tuple(failures))


def _recommended_problems(topic: str, wanted: Any, cards: list[Any]) -> list[str]:
    """What is wrong with the recommended suggestion of the ``topic`` card against ``wanted``."""
    recommended = [s for card in cards for s in card.suggestions if s.is_recommended]
    if wanted is None:
        return [f"{topic} card should recommend nothing"] if recommended else []
    if not recommended:
        return [f"{topic} card should recommend a suggestion"]
    actions = recommended[0].actions
    deleted = [a.resource_id for a in actions if a.type == "delete"]
    problems = []
    if deleted != list(wanted.get("delete", [])):
        problems.append(f"{topic} suggestion deletes {deleted}, expected {wanted.get('delete')}")
    created = [a.resource for a in actions if a.type == "create" and a.resource]
    code = created[0].get("code", {}) if created else {}
    codes = {str(c.get("code")) for c in code.get("coding", [])} | {str(code.get("text", ""))}
    if not any(str(wanted.get("create", "")) in text for text in codes):
        problems.append(f"{topic} suggestion does not create {wanted.get('create')!r}")
    return problems


def run_cases(pack: RulePack, vocabulary: Vocabulary, folder: Path) -> list[CaseResult]:
    """Every case of ``folder`` that applies to ``pack``, once per hook it names that the pack answers."""
    mapper = Mapper(vocabulary, bundled_terminology())
    answered = {"patient-view", *pack.hooks()}
    return [
        run_case(pack, vocabulary, mapper, file, case, hook)
        for file, case in load_cases(folder)
        if applies(case, pack.version)
        for hook in case_hooks(case)
        if hook in answered
    ]
