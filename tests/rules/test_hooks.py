"""Rules answer hooks: a call of one hook evaluates only its rules; deletes name known order kinds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from rules.engine import evaluate
from rules.errors import PackError, RuleError
from rules.pack import DEFAULT_HOOKS, HOOKS, RulePack, bundled_pack_files, load_pack

TYPES = {"pain": "boolean", "flag": "boolean", "order_scan": "boolean", "draft_scan": "boolean"}


@dataclass(frozen=True)
class F:
    value: bool | float | str | None
    when: datetime | None = None


def rule(rule_id: str, when: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "title": rule_id,
        "topic": "abi",
        "indicator": "info",
        "pattern": "arterial",
        "when": {"fact": when},
        "citation": {"ref": "g", "section": "1"},
        "summary": rule_id,
    } | extra


def pack(*rules: dict[str, Any]) -> RulePack:
    document = {
        "id": "test-pack",
        "version": "1.0.0",
        "status": "draft",
        "title": "test",
        "effective": {"from": "2026-01-01"},
        "authors": [{"name": "tests"}],
        "approvals": [],
        "changelog": [{"version": "1.0.0", "date": "2026-01-01", "changes": ["first"]}],
        "citations": {"g": {"title": "Guideline"}},
        "rules": list(rules),
    }
    return load_pack(document, TYPES)


REQUEST = {"code": {"text": "something else"}, "priority": "routine"}
RED_FLAG = rule(
    "red", "flag", topic="urgent-referral", indicator="critical", red_flag=True, hooks=list(HOOKS)
)
ORDER_RULE = rule(
    "order",
    "order_scan",
    hooks=["order-select", "order-sign"],
    suggestions=[{"label": "instead", "delete": ["scan"], "request": REQUEST}],
)
FACTS = {"pain": F(True), "flag": F(True), "order_scan": F(True), "draft_scan": F(True)}


def fired(test_pack: RulePack, hook: str) -> list[str]:
    return [r.rule_id for r in evaluate(test_pack, FACTS, hook=hook).recommendations]


def test_a_rule_without_hooks_answers_patient_view_only() -> None:
    """Packs written before the order hooks mean what they always meant."""
    test_pack = pack(rule("plain", "pain"))
    assert test_pack.rules[0].hooks == DEFAULT_HOOKS
    assert fired(test_pack, "patient-view") == ["plain"]
    assert fired(test_pack, "order-select") == []
    assert fired(test_pack, "order-sign") == []
    assert test_pack.hooks() == ("patient-view",)


def test_each_hook_evaluates_only_its_rules() -> None:
    test_pack = pack(RED_FLAG, rule("plain", "pain"), ORDER_RULE)
    assert fired(test_pack, "patient-view") == ["red", "plain"]
    assert fired(test_pack, "order-select") == ["red", "order"]
    assert fired(test_pack, "order-sign") == ["red", "order"]
    assert test_pack.hooks() == HOOKS
    assert evaluate(test_pack, FACTS, hook="order-sign").hook == "order-sign"


def test_evaluate_defaults_to_patient_view() -> None:
    test_pack = pack(RED_FLAG, rule("plain", "pain"), ORDER_RULE)
    assert [r.rule_id for r in evaluate(test_pack, FACTS).recommendations] == ["red", "plain"]


def test_an_unknown_hook_is_a_rule_error() -> None:
    with pytest.raises(RuleError, match="unknown hook 'medication-prescribe'"):
        evaluate(pack(rule("plain", "pain")), FACTS, hook="medication-prescribe")


def test_an_unknown_hook_name_in_a_pack_fails_the_schema() -> None:
    with pytest.raises(PackError, match="rules/0/hooks/0"):
        pack(rule("plain", "pain", hooks=["encounter-start"]))


def test_a_deleted_order_kind_must_be_a_fact_of_the_vocabulary() -> None:
    """``delete: ["venogram"]`` needs the fact ``order_venogram``: checked at load, with its place."""
    bad = rule(
        "order",
        "order_scan",
        hooks=["order-sign"],
        suggestions=[{"label": "instead", "delete": ["venogram"], "request": REQUEST}],
    )
    with pytest.raises(PackError, match="unknown order kind 'venogram'") as caught:
        pack(bad)
    assert caught.value.pointer == "/rules/0/suggestions/0/delete"


def test_a_delete_in_a_variant_is_checked_too() -> None:
    bad = rule(
        "order",
        "order_scan",
        hooks=["order-sign"],
        variants=[
            {
                "when": {"fact": "pain"},
                "suggestions": [{"label": "x", "delete": ["nothing_known"], "request": REQUEST}],
            }
        ],
    )
    with pytest.raises(PackError, match="/rules/0/variants/0/suggestions/0/delete"):
        pack(bad)


def test_a_delete_belongs_to_a_rule_that_answers_an_order_hook() -> None:
    """A patient-view call has no draft orders: a delete there would be a pack author's mistake."""
    bad = rule("plain", "pain", suggestions=[{"label": "x", "delete": ["scan"], "request": REQUEST}])
    with pytest.raises(PackError, match="answers an order hook"):
        pack(bad)


def test_deleted_kinds_are_facts_the_pack_reads() -> None:
    """The vocabulary contract covers the kinds a suggestion deletes."""
    test_pack = pack(ORDER_RULE)
    assert test_pack.rules[0].deleted_kinds() == {"scan"}
    assert "order_scan" in test_pack.fact_names()


def test_a_suggestion_still_needs_a_request() -> None:
    """A replacement always says what to do instead (the create); a bare delete is not a suggestion."""
    bad = rule("order", "order_scan", hooks=["order-sign"], suggestions=[{"label": "x", "delete": ["scan"]}])
    with pytest.raises(PackError, match="'request' is a required property"):
        pack(bad)


@pytest.mark.parametrize("key", ["calf-pain@0.1.0", "calf-pain@1.0.0", "calf-pain@1.1.0"])
def test_released_packs_before_the_order_hooks_answer_patient_view_only(key: str) -> None:
    from fhir_mappings.facts import vocabulary

    types = {name: kind for name, (kind, _) in vocabulary().types().items()}
    loaded = load_pack(json.loads(bundled_pack_files()[key].read_text("utf-8")), types)
    assert loaded.hooks() == ("patient-view",)
    assert loaded.rules_for("order-select") == ()


def test_the_schema_knows_the_same_hooks_as_the_loader() -> None:
    from rules.pack import pack_schema

    rule_schema = pack_schema()["$defs"]["rule"]["properties"]
    assert rule_schema["hooks"]["items"]["enum"] == list(HOOKS)
