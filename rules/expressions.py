"""The rule-pack expression language: what a compiled expression is, and what it is evaluated on.

A pack's expressions are read once, when the pack loads (:class:`rules.compiler.Compiler`), into a
tree of nodes, one class per form of the language (:mod:`rules.forms`, which lists the forms).
Every node is an :class:`Expr` and answers for itself:

- ``evaluate(context)``: True, False or None (not documented), on one patient's facts (a
  :class:`Context`, which also memoises the pack's definitions and scores);
- ``children``: its sub-expressions (``all``, ``any``, ``not``, ``true``; none for the others);
- ``facts()`` and ``definitions()``: the facts and the definitions it reads directly (a
  definition's own facts are the definition's);
- ``to_json()``: the JSON form it was compiled from, numbers as written (codes as strings);
- ``describe(words)``: the phrase a clinician reads ("ankle-brachial index (left) ≤ 0.9"), with the
  labels a :class:`Phrasebook` gives (``service.governance.wording`` gives the vocabulary's).

Evaluation is total: every name is resolved and type-checked when the pack loads
(:class:`~rules.errors.UnknownFactError`), so evaluation cannot fail on a patient's facts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

__all__ = [
    "Context",
    "Expr",
    "FactLike",
    "Number",
    "Phrasebook",
    "ScoreItem",
    "ScoreResult",
    "Truth",
]

Truth = bool | None
Number = int | float  # as the pack wrote it: to_json() gives back 500, not 500.0


class FactLike(Protocol):
    """What the evaluator needs of a fact (``fhir_mappings.Fact`` satisfies it)."""

    @property
    def value(self) -> bool | float | str | None: ...

    @property
    def when(self) -> datetime | None: ...


class Phrasebook(Protocol):
    """The names an expression is read aloud with: the vocabulary's labels and the pack's names."""

    def fact(self, name: str) -> str:
        """A fact's label in running text: "ankle-brachial index (left)"."""
        ...

    def value(self, name: str, value: Number) -> str:
        """A value of fact ``name`` with its unit: "500 ng/mL"."""
        ...

    def definition(self, name: str) -> str:
        """A definition of the pack, quoted: "“DVT suspected”"."""
        ...

    def score(self, name: str) -> str:
        """A score's title: "Two-level DVT Wells score"."""
        ...

    def option(self, name: str) -> str:
        """An option of the pack, quoted."""
        ...


@dataclass(frozen=True, slots=True)
class ScoreItem:
    id: str
    label: str
    points: int
    when: Expr


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """A score's points over documented items, and the range undocumented items leave open."""

    name: str
    points: int
    minimum: int
    maximum: int
    items: tuple[tuple[ScoreItem, Truth], ...]

    @property
    def undocumented(self) -> int:
        """How many items are not documented."""
        return sum(1 for _, truth in self.items if truth is None)


class Context:
    """One evaluation: the facts, the pack's definitions, scores and options, with memoisation."""

    def __init__(
        self,
        facts: Mapping[str, FactLike],
        definitions: Mapping[str, Expr],
        scores: Mapping[str, tuple[ScoreItem, ...]],
        options: Mapping[str, bool],
    ) -> None:
        self.facts = facts
        self.definitions = definitions
        self.score_items = scores
        self.options = options
        self._defs: dict[str, Truth] = {}
        self._scores: dict[str, ScoreResult] = {}

    def definition(self, name: str) -> Truth:
        if name not in self._defs:
            self._defs[name] = self.definitions[name].evaluate(self)
        return self._defs[name]

    def score(self, name: str) -> ScoreResult:
        if name not in self._scores:
            items = tuple((item, item.when.evaluate(self)) for item in self.score_items[name])
            points = sum(item.points for item, truth in items if truth is True)
            unknown = [item.points for item, truth in items if truth is None]
            self._scores[name] = ScoreResult(
                name=name,
                points=points,
                minimum=points + sum(p for p in unknown if p < 0),
                maximum=points + sum(p for p in unknown if p > 0),
                items=items,
            )
        return self._scores[name]

    def value(self, name: str) -> bool | float | str | None:
        return self.facts[name].value


class Expr(ABC):
    """A compiled expression; ``form`` is the key of its JSON form."""

    __slots__ = ()
    form: ClassVar[str]

    @abstractmethod
    def evaluate(self, context: Context) -> Truth:
        """True, False or None (not documented) on one patient's facts."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The JSON form this expression was compiled from."""

    @abstractmethod
    def describe(self, words: Phrasebook) -> str:
        """This expression as a phrase a clinician reads."""

    @property
    def children(self) -> tuple[Expr, ...]:
        """The sub-expressions this one combines."""
        return ()

    def facts(self) -> frozenset[str]:
        """Every fact this expression reads directly (not through definitions)."""
        return frozenset().union(*(child.facts() for child in self.children))

    def definitions(self) -> frozenset[str]:
        """Every definition this expression names directly (not through other definitions)."""
        return frozenset().union(*(child.definitions() for child in self.children))
