"""The rule-pack expression language: compiled once at load, evaluated three-valued per patient.

Forms (JSON objects with one key)::

    {"fact": NAME}                      a boolean fact: True, False or None (not documented)
    {"known": NAME}                     whether a fact of any type is documented (never None)
    {"cmp": [NAME, OP, RHS]}            a number fact against a number or {"fact": NAME, "times": K}
    {"is": [NAME, CODE | [CODES]]}      a code fact equals one of the codes
    {"older": [NAME, NAME]}             the first fact's date is before the second's
    {"all": [...]} {"any": [...]}       Kleene conjunction / disjunction
    {"not": EXPR}
    {"true": EXPR}                      True only when EXPR is True: "not documented" counts as not met
    {"def": NAME}                       a named definition of the pack
    {"score": [NAME, OP, N]}            a score of the pack: decided when every undocumented item
                                        could not change the answer, otherwise None
    {"points": [NAME, OP, N]}           a score's points over its documented items only (never None):
                                        the score as a clinician would total the record; pair it with
                                        "score" to tell a decided category from a provisional one
    {"option": NAME}                    a boolean option of the pack
    {"const": true | false}

Evaluation is total: every name is resolved and type-checked when the pack loads
(:class:`~rules.errors.UnknownFactError`), so evaluation cannot fail on a patient's facts.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from rules.errors import PackError, UnknownFactError

__all__ = ["OPERATORS", "Compiler", "Context", "Expr", "FactLike", "ScoreItem", "ScoreResult", "Truth"]

Truth = bool | None
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


class FactLike(Protocol):
    """What the evaluator needs of a fact (``fhir_mappings.Fact`` satisfies it)."""

    @property
    def value(self) -> bool | float | str | None: ...

    @property
    def when(self) -> datetime | None: ...


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


class Expr:
    """A compiled expression."""

    def evaluate(self, context: Context) -> Truth:
        raise NotImplementedError

    def facts(self) -> frozenset[str]:
        """Every fact this expression reads directly (not through definitions)."""
        return frozenset()


@dataclass(frozen=True, slots=True)
class _Fact(Expr):
    name: str

    def evaluate(self, context: Context) -> Truth:
        value = context.value(self.name)
        return value if isinstance(value, bool) else None

    def facts(self) -> frozenset[str]:
        return frozenset({self.name})


@dataclass(frozen=True, slots=True)
class _Known(Expr):
    name: str

    def evaluate(self, context: Context) -> Truth:
        return context.value(self.name) is not None

    def facts(self) -> frozenset[str]:
        return frozenset({self.name})


@dataclass(frozen=True, slots=True)
class _Compare(Expr):
    name: str
    op: Callable[[float, float], bool]
    constant: float
    other: str | None = None
    times: float = 1.0

    def evaluate(self, context: Context) -> Truth:
        left = context.value(self.name)
        right: object = self.constant
        if self.other is not None:
            other = context.value(self.other)
            right = other * self.times if isinstance(other, float) else None
        if isinstance(left, bool) or not isinstance(left, float | int):
            return None
        if not isinstance(right, float | int):
            return None
        return self.op(float(left), float(right))

    def facts(self) -> frozenset[str]:
        return frozenset({self.name} | ({self.other} if self.other else set()))


@dataclass(frozen=True, slots=True)
class _Is(Expr):
    name: str
    codes: frozenset[str]

    def evaluate(self, context: Context) -> Truth:
        value = context.value(self.name)
        return None if value is None else value in self.codes

    def facts(self) -> frozenset[str]:
        return frozenset({self.name})


@dataclass(frozen=True, slots=True)
class _Older(Expr):
    first: str
    second: str

    def evaluate(self, context: Context) -> Truth:
        one, two = context.facts[self.first].when, context.facts[self.second].when
        if one is None or two is None:
            return None
        return one < two

    def facts(self) -> frozenset[str]:
        return frozenset({self.first, self.second})


@dataclass(frozen=True, slots=True)
class _All(Expr):
    parts: tuple[Expr, ...]

    def evaluate(self, context: Context) -> Truth:
        result: Truth = True
        for part in self.parts:
            truth = part.evaluate(context)
            if truth is False:
                return False
            if truth is None:
                result = None
        return result

    def facts(self) -> frozenset[str]:
        return frozenset().union(*(p.facts() for p in self.parts))


@dataclass(frozen=True, slots=True)
class _Any(Expr):
    parts: tuple[Expr, ...]

    def evaluate(self, context: Context) -> Truth:
        result: Truth = False
        for part in self.parts:
            truth = part.evaluate(context)
            if truth is True:
                return True
            if truth is None:
                result = None
        return result

    def facts(self) -> frozenset[str]:
        return frozenset().union(*(p.facts() for p in self.parts))


@dataclass(frozen=True, slots=True)
class _Not(Expr):
    part: Expr

    def evaluate(self, context: Context) -> Truth:
        truth = self.part.evaluate(context)
        return None if truth is None else not truth

    def facts(self) -> frozenset[str]:
        return self.part.facts()


@dataclass(frozen=True, slots=True)
class _IsTrue(Expr):
    part: Expr

    def evaluate(self, context: Context) -> Truth:
        return self.part.evaluate(context) is True

    def facts(self) -> frozenset[str]:
        return self.part.facts()


@dataclass(frozen=True, slots=True)
class _Def(Expr):
    name: str

    def evaluate(self, context: Context) -> Truth:
        return context.definition(self.name)


@dataclass(frozen=True, slots=True)
class _Score(Expr):
    name: str
    op: Callable[[float, float], bool]
    threshold: float

    def evaluate(self, context: Context) -> Truth:
        result = context.score(self.name)
        low = self.op(result.minimum, self.threshold)
        high = self.op(result.maximum, self.threshold)
        return low if low == high else None


@dataclass(frozen=True, slots=True)
class _Points(Expr):
    name: str
    op: Callable[[float, float], bool]
    threshold: float

    def evaluate(self, context: Context) -> Truth:
        return self.op(context.score(self.name).points, self.threshold)


@dataclass(frozen=True, slots=True)
class _Option(Expr):
    name: str

    def evaluate(self, context: Context) -> Truth:
        return context.options[self.name]


@dataclass(frozen=True, slots=True)
class _Const(Expr):
    value: bool

    def evaluate(self, context: Context) -> Truth:
        return self.value


@dataclass(frozen=True)
class Compiler:
    """Compiles JSON expressions, checking every name against what the pack and vocabulary declare.

    ``fact_types`` maps each producible fact name to its type (``boolean``, ``number``, ``code``).
    """

    fact_types: Mapping[str, str]
    definitions: frozenset[str]
    scores: frozenset[str]
    options: frozenset[str]

    def compile(self, node: Any, pointer: str) -> Expr:
        if not isinstance(node, dict) or len(node) != 1:
            raise PackError("an expression is an object with exactly one key", pointer=pointer)
        ((key, arg),) = node.items()
        here = f"{pointer}/{key}"
        if key in ("all", "any"):
            if not isinstance(arg, list) or not arg:
                raise PackError(f"{key} takes a non-empty list", pointer=here)
            parts = tuple(self.compile(p, f"{here}/{i}") for i, p in enumerate(arg))
            return _All(parts) if key == "all" else _Any(parts)
        if key in ("not", "true"):
            part = self.compile(arg, here)
            return _Not(part) if key == "not" else _IsTrue(part)
        if key == "fact":
            return _Fact(self._fact(arg, here, "boolean"))
        if key == "known":
            return _Known(self._fact(arg, here, None))
        if key == "cmp":
            return self._compare(arg, here)
        if key == "is":
            name, codes = self._pair(arg, here)
            codes_list = codes if isinstance(codes, list) else [codes]
            return _Is(self._fact(name, here, "code"), frozenset(map(str, codes_list)))
        if key == "older":
            first, second = self._pair(arg, here)
            return _Older(self._fact(first, here, None), self._fact(second, here, None))
        if key == "def":
            if arg not in self.definitions:
                raise PackError(f"unknown definition {arg!r}", pointer=here)
            return _Def(str(arg))
        if key in ("score", "points"):
            if not isinstance(arg, list) or len(arg) != 3 or arg[0] not in self.scores:
                raise PackError(f"{key} takes [SCORE, OP, NUMBER] of a declared score", pointer=here)
            kind = _Score if key == "score" else _Points
            return kind(str(arg[0]), self._op(arg[1], here), self._number(arg[2], here))
        if key == "option":
            if arg not in self.options:
                raise PackError(f"unknown option {arg!r}", pointer=here)
            return _Option(str(arg))
        if key == "const" and isinstance(arg, bool):
            return _Const(arg)
        raise PackError(f"unknown expression {key!r}", pointer=here)

    def _fact(self, name: object, pointer: str, expected: str | None) -> str:
        if not isinstance(name, str) or name not in self.fact_types:
            raise UnknownFactError(f"unknown fact {name!r}", fact=str(name), pointer=pointer)
        if expected is not None and self.fact_types[name] != expected:
            raise UnknownFactError(
                f"fact {name!r} is {self.fact_types[name]}, read here as {expected}",
                fact=name,
                pointer=pointer,
            )
        return name

    def _compare(self, arg: object, pointer: str) -> Expr:
        if not isinstance(arg, list) or len(arg) != 3:
            raise PackError("cmp takes [FACT, OP, VALUE]", pointer=pointer)
        name = self._fact(arg[0], pointer, "number")
        op = self._op(arg[1], pointer)
        rhs = arg[2]
        if isinstance(rhs, dict) and set(rhs) <= {"fact", "times"} and "fact" in rhs:
            other = self._fact(rhs["fact"], pointer, "number")
            return _Compare(name, op, 0.0, other, self._number(rhs.get("times", 1), pointer))
        return _Compare(name, op, self._number(rhs, pointer))

    @staticmethod
    def _pair(arg: object, pointer: str) -> tuple[Any, Any]:
        if not isinstance(arg, list) or len(arg) != 2:
            raise PackError("takes a list of two", pointer=pointer)
        return arg[0], arg[1]

    @staticmethod
    def _op(op: object, pointer: str) -> Callable[[float, float], bool]:
        if not isinstance(op, str) or op not in OPERATORS:
            raise PackError(f"unknown operator {op!r}", pointer=pointer)
        return OPERATORS[op]

    @staticmethod
    def _number(value: object, pointer: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PackError(f"{value!r} is not a number", pointer=pointer)
        return float(value)
