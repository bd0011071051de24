"""Rule pack 1.2.0: 1.1.0 unchanged on patient-view, red flags on every hook, order rules on order hooks.

1.2.0 may only ADD to 1.1.0: its patient-view answer must be 1.1.0's for every clinical case and for
arbitrary facts (every card, wording, suggestion, criterion, score, suppression and the pattern; only
the pack's identity differs), and an order hook with no draft orders shows exactly the red flags.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from fhir_mappings.facts import Facts
from fhir_mappings.orders import order_facts
from rules.engine import Assessment, evaluate
from rules.pack import HOOKS, ORDER_HOOKS, bundled_pack_files
from tests.rules.order_cases import pack
from tests.rules.test_cases import CASES, applies, case_facts
from tests.strategies import VOCABULARY, patients

OLD, NEW = "1.1.0", "1.2.0"
ORDER_FACTS = frozenset(name for name, spec in VOCABULARY.specs.items() if spec.origin == "draft-orders")


def document(version: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(bundled_pack_files()[f"calf-pain@{version}"].read_text("utf-8"))
    return loaded


def answer(assessment: Assessment) -> tuple[Any, ...]:
    """Everything an assessment says except which pack said it."""
    return (
        assessment.recommendations,
        assessment.suppressed,
        assessment.errors,
        assessment.patterns,
        assessment.pattern,
    )


def without_order_facts(facts: Facts) -> Facts:
    """A patient-view call never has draft orders."""
    kept = {name: fact for name, fact in facts.by_name.items() if name not in ORDER_FACTS}
    return Facts(by_name=kept, declared=facts.declared, notes=facts.notes)


PATIENT_VIEW_CASES = [case for case in CASES if applies(case, OLD)]


@pytest.mark.parametrize("case", PATIENT_VIEW_CASES, ids=[case["id"] for case in PATIENT_VIEW_CASES])
def test_patient_view_answers_exactly_as_1_1_0(case: dict[str, Any]) -> None:
    facts = case_facts(case)
    assert answer(evaluate(pack(NEW), facts)) == answer(evaluate(pack(OLD), facts))


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(facts=patients().map(without_order_facts))
def test_patient_view_answers_exactly_as_1_1_0_on_any_facts(facts: Facts) -> None:
    for option in (False, True):
        options = {"age_adjusted_d_dimer": option}
        assert answer(evaluate(pack(NEW), facts, options=options)) == answer(
            evaluate(pack(OLD), facts, options=options)
        )


@pytest.mark.parametrize("hook", sorted(ORDER_HOOKS))
@pytest.mark.parametrize("case", PATIENT_VIEW_CASES, ids=[case["id"] for case in PATIENT_VIEW_CASES])
def test_an_order_hook_without_draft_orders_shows_exactly_the_red_flags(
    case: dict[str, Any], hook: str
) -> None:
    """Every clinical case, through an order hook with an empty draftOrders Bundle: the red-flag cards
    of patient-view, nothing else (no order, no order advice)."""
    facts = case_facts(case)
    drafts, extra = order_facts({"resourceType": "Bundle", "entry": []}, patient_id="p1", hook=hook)
    on_order_hook = evaluate(pack(NEW), facts.with_facts(extra.values(), notes=drafts.notes), hook=hook)
    red_flags = tuple(r for r in evaluate(pack(NEW), facts).recommendations if r.red_flag)
    assert on_order_hook.recommendations == red_flags
    assert on_order_hook.pattern == evaluate(pack(NEW), facts).pattern


def test_1_2_0_only_adds_to_1_1_0() -> None:
    """Definitions, scores, patterns, options and citations of 1.1.0 are kept as they were; its rules
    are kept as they were except that the red flags answer every hook and the compartment-syndrome
    red flag gained its cancel-compression variant (and a note saying so)."""
    old, new = document(OLD), document(NEW)
    for key in ("scores", "patterns", "options", "citations"):
        assert new[key] == old[key], key
    assert {name: new["definitions"][name] for name in old["definitions"]} == old["definitions"]
    assert {name: new["definition_notes"][name] for name in old["definition_notes"]} == old[
        "definition_notes"
    ]
    assert new["changelog"][1:] == old["changelog"]
    assert new["changelog"][0]["version"] == NEW
    old_rules = {rule["id"]: rule for rule in old["rules"]}
    new_rules = {rule["id"]: rule for rule in new["rules"]}
    assert list(new_rules)[: len(old_rules)] == list(old_rules)
    for rule_id, rule in old_rules.items():
        changed = {key: value for key, value in new_rules[rule_id].items() if key != "hooks"}
        if rule_id == "red-flag-compartment-syndrome":
            assert changed.pop("variants")[0]["when"] == {"true": {"fact": "draft_compression"}}
            assert changed.pop("note").startswith(rule["note"])
            assert changed == {key: value for key, value in rule.items() if key != "note"}
        else:
            assert changed == rule, rule_id


def test_red_flags_answer_every_hook_and_order_rules_only_order_hooks() -> None:
    new = pack(NEW)
    old_ids = {rule["id"] for rule in document(OLD)["rules"]}
    for rule in new.rules:
        if rule.red_flag:
            assert rule.hooks == HOOKS, rule.id
        elif rule.id in old_ids:
            assert rule.hooks == ("patient-view",), rule.id
        else:
            assert rule.id.startswith("order-")
            assert set(rule.hooks) == ORDER_HOOKS, rule.id


def test_every_new_rule_cites_a_guideline_section_and_says_why() -> None:
    old_ids = {rule["id"] for rule in document(OLD)["rules"]}
    for rule in pack(NEW).rules:
        if rule.id in old_ids:
            continue
        assert rule.citation.guideline.strip()
        assert rule.citation.section.strip()
    for raw in document(NEW)["rules"]:
        if raw["id"] not in old_ids:
            assert raw.get("note", "").strip(), raw["id"]
            assert any(raw["id"] in change for change in document(NEW)["changelog"][0]["changes"]), raw["id"]


def test_every_order_rule_reads_an_order_fact() -> None:
    """An order rule answers about an order: its condition reads at least one order_/draft_ fact."""
    for rule in pack(NEW).rules:
        if rule.id.startswith("order-"):
            assert rule.when.facts() & ORDER_FACTS, rule.id


def test_delete_suggestions_come_with_a_request_and_a_known_kind() -> None:
    kinds = {name.removeprefix("order_") for name in ORDER_FACTS if name.startswith("order_")}
    for rule in pack(NEW).rules:
        suggestions: list[Mapping[str, Any]] = [
            *rule.suggestions,
            *(s for v in rule.variants for s in v.suggestions),
        ]
        for suggestion in suggestions:
            assert suggestion["request"]["code"]
            assert set(suggestion.get("delete", ())) <= kinds


def test_new_summaries_fit_the_card_builder_and_name_no_side() -> None:
    """cards-contract.md (as 1.1.0): at most 120 characters rendered at worst, no side in the text."""
    from tests.rules.test_pack_1_1 import SIDES, rendered_worst

    old_ids = {rule["id"] for rule in document(OLD)["rules"]}
    for raw in document(NEW)["rules"]:
        texts = [raw["summary"], *(v["summary"] for v in raw.get("variants", []) if "summary" in v)]
        if raw["id"] in old_ids and raw["id"] != "red-flag-compartment-syndrome":
            continue
        for text in texts:
            assert len(rendered_worst(text)) <= 120, (raw["id"], text)
            assert not SIDES.search(text), (raw["id"], text)


def test_the_pack_is_governed_cited_and_every_definition_explained() -> None:
    new = document(NEW)
    assert (new["status"], new["effective"]["from"]) == ("active", "2026-12-07")
    assert set(new["definition_notes"]) == set(new["definitions"])
    assert all(citation.get("url", "").startswith("http") for citation in new["citations"].values())
    for rule in pack(NEW).rules:
        label = f"{rule.citation.guideline} {rule.citation.section} — rules calf-pain@{NEW}"
        assert len(label) <= 200, rule.id
    for change in new["changelog"][0]["changes"]:
        assert "Why" in change or "Citation" in change or "citation" in change.lower(), change
