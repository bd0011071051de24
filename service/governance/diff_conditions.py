"""How one condition of a rule pack changed between two versions, in words (for ``rules diff``).

Both versions' expressions are compiled nodes (:mod:`rules.forms`), compared by their JSON and
paired by what they are about (the fact, definition or score they read), so that a changed
threshold is one sentence — "D-dimer (FEU) ≥ 500 ng/mL → ≥ 600 ng/mL" — and a condition added to
or dropped from an ``all``/``any`` is one sentence too. A condition wrapped in (or freed from)
``true`` is reported as the change in how "not documented" reads.
"""

from __future__ import annotations

from typing import Protocol

from rules.expressions import Expr
from rules.forms import (
    AllOf,
    AnyOf,
    Compare,
    CompareFacts,
    Definition,
    Fact,
    IsCode,
    IsTrue,
    Known,
    Not,
    Option,
    Score,
)
from service.governance.wording import Wording, canonical

__all__ = ["ConditionDiff", "Sentences", "expression_key"]


class Sentences(Protocol):
    """Where the sentences of a pack diff go, by section (:class:`service.governance.diff.PackDiff`)."""

    def add(self, section: str, line: str) -> None: ...


def expression_key(node: Expr) -> str:
    """An expression's JSON as text: the same text for the same expression in either version."""
    return canonical(node.to_json())


def _signature(node: Expr) -> str | None:
    """What a condition is about (its fact, definition or score), to pair old and new versions."""
    if isinstance(node, Fact | Known | Definition | Option | Compare | CompareFacts | IsCode | Score):
        return f"{node.form}:{node.name}"
    if isinstance(node, Not | IsTrue):
        inner = _signature(node.part)
        return f"{node.form}:{inner}" if inner else None
    return None


class ConditionDiff:
    """Words the change from one version of a condition to the other (``old_words`` and
    ``new_words`` name each version's facts, definitions and scores)."""

    def __init__(self, diff: Sentences, old_words: Wording, new_words: Wording) -> None:
        self.diff = diff
        self.ow, self.nw = old_words, new_words

    def expression(self, where: str, old: Expr, new: Expr) -> None:
        """Report the change from ``old`` to ``new`` as thresholds and added/removed conditions."""
        if expression_key(old) == expression_key(new):
            return
        if isinstance(old, Compare) and isinstance(new, Compare) and old.name == new.name:
            self.diff.add(
                "Thresholds",
                f"{where}: {self.ow.expr(old)} → {self.nw.expr(new).removeprefix(self.nw.fact(new.name) + ' ')}",
            )
            return
        if isinstance(old, Score) and isinstance(new, Score) and old.name == new.name:
            self.diff.add(
                "Thresholds",
                f"{where}: {self.ow.expr(old)} → {self.nw.expr(new).removeprefix(self.nw.score(new.name) + ' ')}",
            )
            return
        if isinstance(old, AllOf | AnyOf) and type(old) is type(new):
            self._members(where, old.parts, new.parts, old.form)
            return
        if isinstance(old, Not | IsTrue) and isinstance(new, Not | IsTrue) and type(old) is type(new):
            self.expression(where, old.part, new.part)
            return
        self.diff.add(
            "Criteria and definitions",
            f"{where}: was {self.ow.expr(old)}; now {self.nw.expr(new)}",
        )

    def _members(self, where: str, old: tuple[Expr, ...], new: tuple[Expr, ...], kind: str) -> None:
        old_left = {expression_key(x): x for x in old}
        new_left = {expression_key(x): x for x in new}
        for same in set(old_left) & set(new_left):
            del old_left[same], new_left[same]
        self._truth_pairs(where, old_left, new_left)
        paired = []
        for ok_text, ov in list(old_left.items()):
            sig = _signature(ov)
            match = next((nt for nt, nv in new_left.items() if sig and _signature(nv) == sig), None)
            if match is not None:
                paired.append((ov, new_left.pop(match)))
                del old_left[ok_text]
        for ov, nv in paired:
            self.expression(where, ov, nv)
        verb_add = "now also requires" if kind == "all" else "now also counts"
        verb_drop = "no longer requires" if kind == "all" else "no longer counts"
        for nv in new_left.values():
            self.diff.add("Criteria and definitions", f"{where}: {verb_add} {self.nw.expr(nv)}")
        for ov in old_left.values():
            self.diff.add("Criteria and definitions", f"{where}: {verb_drop} {self.ow.expr(ov)}")

    def _truth_pairs(self, where: str, old_left: dict[str, Expr], new_left: dict[str, Expr]) -> None:
        """A condition wrapped in (or freed from) ``true`` is one change: how "not documented" reads."""
        for old_text, old_value in list(old_left.items()):
            wrapped = expression_key(IsTrue(old_value))
            unwrapped = expression_key(old_value.part) if isinstance(old_value, IsTrue) else None
            if wrapped in new_left:
                del old_left[old_text], new_left[wrapped]
                self.diff.add(
                    "Criteria and definitions",
                    f"{where}: {self.ow.expr(old_value)} now counts only when documented "
                    "(not documented reads as not met)",
                )
            elif unwrapped is not None and unwrapped in new_left:
                new_value = new_left.pop(unwrapped)
                del old_left[old_text]
                self.diff.add(
                    "Criteria and definitions",
                    f"{where}: {self.nw.expr(new_value)} is now read three-valued (not documented stays open)",
                )
