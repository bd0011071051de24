"""The evaluator around the expressions: pattern classification and card-text placeholders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from rules.engine import evaluate
from rules.errors import PackError
from rules.pack import RulePack, load_pack

TYPES = {"pain": "boolean", "swollen": "boolean", "pop": "boolean", "tender": "boolean"}


@dataclass(frozen=True)
class F:
    value: bool | float | str | None
    when: datetime | None = None


def pack(**extra: Any) -> RulePack:
    document: dict[str, Any] = {
        "id": "test-pack",
        "version": "1.0.0",
        "status": "draft",
        "title": "test",
        "effective": {"from": "2026-01-01"},
        "authors": [{"name": "tests"}],
        "approvals": [],
        "changelog": [{"version": "1.0.0", "date": "2026-01-01", "changes": ["first"]}],
        "citations": {"g": {"title": "Guideline"}},
        "scores": {
            "s": {
                "title": "score",
                "items": [
                    {"id": "i1", "label": "swollen", "points": 1, "when": {"fact": "swollen"}},
                    {"id": "i2", "label": "tender", "points": 1, "when": {"fact": "tender"}},
                ],
            }
        },
        "rules": [
            {
                "id": "venous",
                "title": "venous",
                "topic": "duplex-dvt",
                "indicator": "warning",
                "pattern": "venous",
                "when": {"fact": "swollen"},
                "citation": {"ref": "g", "section": "1"},
                "summary": "Score {points:s} with {undocumented:s} item(s) not documented.",
                "score": "s",
            }
        ],
    }
    return load_pack(document | extra, TYPES)


def facts(**values: bool) -> dict[str, F]:
    return {name: F(values.get(name)) for name in TYPES}


PATTERNS = [
    {"pattern": "venous", "label": "swollen leg", "when": {"fact": "swollen"}},
    {"pattern": "musculoskeletal", "label": "pop", "when": {"fact": "pop"}},
]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"swollen": True, "pop": True}, "venous"),
        ({"pop": True}, "musculoskeletal"),
        ({"pain": True}, "indeterminate"),
    ],
    ids=["first-step-wins", "second-step", "none-holds"],
)
def test_pattern_is_the_first_step_that_holds(values: dict[str, bool], expected: str) -> None:
    """The pack's ordered pattern steps name the assessment's pattern; none holding is indeterminate."""
    assert evaluate(pack(patterns=PATTERNS), facts(**values)).pattern == expected


def test_pattern_without_steps_is_the_first_cards() -> None:
    """A pack without pattern steps (0.1.0) takes the pattern of its first card."""
    assert evaluate(pack(), facts(swollen=True)).pattern == "venous"
    assert evaluate(pack(), facts()).pattern == "indeterminate"


def test_pattern_step_with_a_bad_expression_fails_at_load() -> None:
    with pytest.raises(PackError):
        pack(patterns=[{"pattern": "venous", "label": "x", "when": {"fact": "nope"}}])


def test_points_and_undocumented_placeholders() -> None:
    """`{points:s}` renders the documented total and `{undocumented:s}` the count not documented."""
    (recommendation,) = evaluate(pack(), facts(swollen=True)).recommendations
    assert recommendation.summary == "Score 1 with 1 item(s) not documented."
