"""The clinical test cases (tests/rules/cases/*.json) through the real mapper, engine and cards.

Each case is FHIR resources in and expected card topics out, written from the guidance independently
of the rules (format in tests/rules/cases/README.md). Every case runs against every pack version it
applies to (``since``, default 1.0.0): ``expect`` is the answer of every version unless
``expect_by_version`` records a version's own answer, where a later pack deliberately answers
differently (its changelog says why). ``contract_facts`` adds facts that the mapper rewrite
(``/work/coord/facts-contract.md``, issue 11) produces and this branch's mapper cannot yet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cds_hooks.models import Card
from fhir_mappings.facts import Fact, Facts
from rules.codes import Pattern, Topic
from rules.engine import Assessment, Recommendation, evaluate
from rules.pack import RulePack
from service.config import Settings
from service.hooks.cards import RECOMMENDATION_SYSTEM, build_cards
from service.hooks.packs import PackRegistry
from service.hooks.pipeline import CalfPainService

CASES_DIR = Path(__file__).parent / "cases"
CASE_FILES = sorted(CASES_DIR.glob("*.json"))
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


def load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in CASE_FILES:
        cases += json.loads(path.read_text("utf-8"))
    return cases


CASES = load_cases()
DEFAULT_PACK = str(Settings.model_fields["active_pack"].default)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def applies(case: Mapping[str, Any], version: str) -> bool:
    """Whether ``case`` is an expectation of pack ``version`` (cases written for a later pack are not)."""
    return _version(version) >= _version(str(case.get("since", VERSIONS[0])))


def expectation(case: Mapping[str, Any], version: str) -> Mapping[str, Any]:
    """The answer ``version`` must give: its own recorded answer, else the case's."""
    by_version: Mapping[str, Any] = case.get("expect_by_version", {})
    return by_version.get(version, case["expect"])  # type: ignore[no-any-return]


RUNS = [(case, version) for case in CASES for version in VERSIONS if applies(case, version)]


@cache
def service() -> CalfPainService:
    """The service as deployed by default: the default active pack, whatever the environment says."""
    registry = PackRegistry.load(Settings(active_pack=DEFAULT_PACK, shadow_packs=(), rules_dir=None))
    return registry.service(clock=lambda: datetime.fromisoformat("2026-11-20T09:00:00+00:00"))


@cache
def pack(version: str) -> RulePack:
    registry = PackRegistry.load(
        Settings(active_pack=f"calf-pain@{version}", shadow_packs=(), rules_dir=None)
    )
    return registry.active


def case_facts(case: Mapping[str, Any]) -> Facts:
    """The case's resources through the mapper, plus its ``contract_facts`` (value, or value and age)."""
    calf = service()
    now = datetime.fromisoformat(case["now"].replace("Z", "+00:00"))
    patient = case["patient"]
    facts = calf.mapper.map(patient_id=patient["id"], patient=patient, resources=case["resources"], now=now)
    extra: dict[str, Fact] = {}
    for name, spec in case.get("contract_facts", {}).items():
        value, hours = (spec["value"], spec.get("hours_ago", 1.0)) if isinstance(spec, dict) else (spec, 1.0)
        extra[name] = Fact(name, value, (), now - timedelta(hours=hours))
    if not extra:
        return facts
    unknown = set(extra) - facts.declared
    assert not unknown, f"contract_facts not in the vocabulary: {sorted(unknown)}"
    return Facts(by_name={**facts.by_name, **extra}, declared=facts.declared, notes=facts.notes)


def run_case(
    case: Mapping[str, Any], version: str | None = None
) -> tuple[Assessment, list[tuple[Card, Recommendation]]]:
    calf = service()
    now = datetime.fromisoformat(case["now"].replace("Z", "+00:00"))
    facts = case_facts(case)
    assessment = evaluate(pack(version) if version else calf.active, facts)
    cards = build_cards(assessment, facts, calf.vocabulary, patient_id=case["patient"]["id"], now=now)
    return assessment, cards


def describe(cards: list[tuple[Card, Recommendation]]) -> str:
    return "\n".join(
        f"[{c.source.topic.code if c.source.topic else '?'}/{c.indicator}] {c.summary}" for c, _ in cards
    )


@pytest.mark.parametrize(("case", "version"), RUNS, ids=[f"{case['id']}@{version}" for case, version in RUNS])
def test_clinical_case(case: dict[str, Any], version: str) -> None:
    """Expected topics present, forbidden absent, indicators, card wording and the pattern."""
    assessment, cards = run_case(case, version)
    expect = expectation(case, version)
    by_topic: dict[str, list[Card]] = {}
    for card, _ in cards:
        assert card.source.topic is not None
        assert card.source.topic.system == RECOMMENDATION_SYSTEM
        by_topic.setdefault(card.source.topic.code, []).append(card)
    shown = describe(cards)
    assert not assessment.errors, assessment.errors
    for topic in expect["topics"]:
        assert topic in by_topic, f"missing {topic}; cards:\n{shown}"
    for topic in expect["forbidden"]:
        assert topic not in by_topic, f"forbidden {topic} shown; cards:\n{shown}"
    for topic, indicator in expect.get("indicators", {}).items():
        assert {card.indicator for card in by_topic[topic]} == {indicator}, shown
    for topic, phrases in expect.get("mentions", {}).items():
        text = " ".join(f"{card.summary}\n{card.detail}" for card in by_topic[topic]).lower()
        for phrase in phrases:
            assert phrase.lower() in text, f"{topic} card does not say {phrase!r}:\n{text}"
    if "pattern" in expect:
        assert assessment.pattern == expect["pattern"], f"pattern {assessment.pattern}; cards:\n{shown}"
    for card, _ in cards:
        assert f"{assessment.pack_id}@{assessment.pack_version}" in card.source.label


def test_the_default_pack_is_tested_and_every_case_runs_on_it() -> None:
    """The deployed default is one of the tested versions, and every case is an expectation of it."""
    assert DEFAULT_PACK.removeprefix("calf-pain@") in VERSIONS
    assert all(applies(case, DEFAULT_PACK.removeprefix("calf-pain@")) for case in CASES)


def test_there_are_enough_cases() -> None:
    """The issue asks for at least 60 clinical cases."""
    assert len(CASES) >= 60


def test_case_ids_are_unique() -> None:
    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids))


def _named(expect: Mapping[str, Any]) -> set[str]:
    return set(expect["topics"]) | set(expect["forbidden"]) | set(expect.get("indicators", {}))


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_every_case_has_rationale_citation_and_a_valid_expectation(case: dict[str, Any]) -> None:
    """A case says why (rationale) and on what authority (citation), and names only known topics;
    a version-specific answer names a tested version and says why it differs (``why_by_version``)."""
    assert case["rationale"].strip()
    assert case["citation"].strip()
    expectations = [case["expect"], *case.get("expect_by_version", {}).values()]
    for expect in expectations:
        assert _named(expect) <= set(Topic)
        assert not set(expect["topics"]) & set(expect["forbidden"])
        assert expect.get("pattern", "indeterminate") in set(Pattern)
    assert set(case.get("expect_by_version", {})) <= set(VERSIONS)
    for version in case.get("expect_by_version", {}):
        assert case.get("why_by_version", {}).get(version, "").strip(), f"no reason for the {version} answer"
    assert str(case.get("since", VERSIONS[0])) in VERSIONS
