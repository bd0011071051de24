"""The expression language: three-valued logic, scores, and load-time checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from rules.compiler import Compiler
from rules.errors import PackError, UnknownFactError
from rules.expressions import Context, ScoreItem

TYPES = {"a": "boolean", "b": "boolean", "n": "number", "m": "number", "c": "code"}


@dataclass(frozen=True)
class F:
    value: bool | float | str | None
    when: datetime | None = None


def run(expr: dict[str, Any], facts: dict[str, Any], **kw: Any) -> bool | None:
    compiler = Compiler(TYPES, frozenset(kw.get("defs", {})), frozenset(kw.get("scores", {})), frozenset())
    compiled = compiler.compile(expr, "")
    defs = {k: compiler.compile(v, "") for k, v in kw.get("defs", {}).items()}
    scores = {
        k: tuple(ScoreItem(str(i), str(i), p, compiler.compile(e, "")) for i, (p, e) in enumerate(v))
        for k, v in kw.get("scores", {}).items()
    }
    full = {name: F(None) for name in TYPES} | {k: F(v) for k, v in facts.items()}
    return compiled.evaluate(Context(full, defs, scores, {}))


KLEENE = [(True, True), (True, False), (True, None), (False, False), (False, None), (None, None)]


@pytest.mark.parametrize(("a", "b"), KLEENE)
def test_all_and_any_follow_kleene_logic(a: bool | None, b: bool | None) -> None:
    """`all`/`any` are Kleene AND/OR: unknown only where the answer depends on it."""
    both = run({"all": [{"fact": "a"}, {"fact": "b"}]}, {"a": a, "b": b})
    either = run({"any": [{"fact": "a"}, {"fact": "b"}]}, {"a": a, "b": b})
    expect_all = False if False in (a, b) else (None if None in (a, b) else True)
    expect_any = True if True in (a, b) else (None if None in (a, b) else False)
    assert (both, either) == (expect_all, expect_any)


def test_not_documented_is_not_false() -> None:
    """A missing fact is unknown; `not` of unknown stays unknown."""
    assert run({"not": {"fact": "a"}}, {}) is None
    assert run({"true": {"fact": "a"}}, {}) is False


@pytest.mark.parametrize(("value", "expected"), [(0.90, True), (0.91, False), (None, None)])
def test_compare_is_unknown_without_a_value(value: float | None, expected: bool | None) -> None:
    """`cmp` compares documented numbers and says nothing about missing ones."""
    assert run({"cmp": ["n", "<=", 0.9]}, {"n": value}) is expected


def test_compare_against_another_fact_times_a_factor() -> None:
    """An age-adjusted cut-off: value ≥ age × 10."""
    expr = {"cmp": ["n", ">=", {"fact": "m", "times": 10}]}
    assert run(expr, {"n": 700.0, "m": 70.0}) is True
    assert run(expr, {"n": 690.0, "m": 70.0}) is False
    assert run(expr, {"n": 690.0}) is None


def test_score_is_decided_only_when_missing_items_cannot_change_it() -> None:
    """Score threshold: decided from the range left open by undocumented items."""
    items = [(1, {"fact": "a"}), (1, {"fact": "b"}), (-2, {"cmp": ["n", ">", 0]})]
    likely = {"score": ["s", ">=", 2]}
    assert run(likely, {"a": True, "b": True, "n": 0.0}, scores={"s": items}) is True
    assert run(likely, {"a": True, "b": True}, scores={"s": items}) is None  # −2 could still apply
    assert run(likely, {"a": True, "b": False, "n": 0.0}, scores={"s": items}) is False


def test_definitions_are_resolved() -> None:
    """`def` reads a named definition of the pack."""
    assert run({"def": "x"}, {"a": True}, defs={"x": {"fact": "a"}}) is True


def test_unknown_fact_fails_at_load() -> None:
    """A rule that reads an undeclared fact fails when the pack loads, naming the fact."""
    with pytest.raises(UnknownFactError) as error:
        run({"fact": "nope"}, {})
    assert error.value.fact == "nope"


def test_wrong_fact_type_fails_at_load() -> None:
    """Reading a number fact as a boolean is caught at load."""
    with pytest.raises(UnknownFactError):
        run({"fact": "n"}, {})


def test_unknown_operator_fails_at_load() -> None:
    with pytest.raises(PackError):
        run({"cmp": ["n", "=<", 1]}, {})


def test_code_membership() -> None:
    assert run({"is": ["c", ["absent", "diminished"]]}, {"c": "absent"}) is True
    assert run({"is": ["c", "absent"]}, {"c": "normal"}) is False
    assert run({"is": ["c", "absent"]}, {}) is None


def test_points_total_the_documented_items_only() -> None:
    """`points` is the score as the record stands: undocumented items add nothing, and it is never unknown."""
    items = [(1, {"fact": "a"}), (1, {"fact": "b"}), (-2, {"cmp": ["n", ">", 0]})]
    likely = {"points": ["s", ">=", 2]}
    assert run(likely, {"a": True, "b": True}, scores={"s": items}) is True  # −2 not documented
    assert run(likely, {"a": True}, scores={"s": items}) is False  # b not documented
    assert run(likely, {"a": True, "b": True, "n": 1.0}, scores={"s": items}) is False


def test_points_needs_a_declared_score() -> None:
    with pytest.raises(PackError):
        run({"points": ["nope", ">=", 2]}, {})
