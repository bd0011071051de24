"""The forms of the rule-pack expression language, one node class each (:class:`rules.expressions.Expr`).

Forms (JSON objects with one key), each read by :class:`rules.compiler.Compiler` into the node named::

    {"fact": NAME}                      Fact          a boolean fact: True, False or None (not documented)
    {"known": NAME}                     Known         whether a fact of any type is documented (never None)
    {"cmp": [NAME, OP, NUMBER]}         Compare       a number fact against a number
    {"cmp": [NAME, OP, {"fact": NAME, "times": K}]}
                                        CompareFacts  ... or against another number fact (times K, default 1)
    {"is": [NAME, CODE | [CODES]]}      IsCode        a code fact equals one of the codes
    {"older": [NAME, NAME]}             Older         the first fact's date is before the second's
    {"all": [...]} {"any": [...]}       AllOf, AnyOf  Kleene conjunction / disjunction
    {"not": EXPR}                       Not
    {"true": EXPR}                      IsTrue        True only when EXPR is True: "not documented" counts as not met
    {"def": NAME}                       Definition    a named definition of the pack
    {"score": [NAME, OP, N]}            Score         a score of the pack: decided when every undocumented item
                                                      could not change the answer, otherwise None
    {"points": [NAME, OP, N]}           Points        a score's points over its documented items only (never None):
                                                      the score as a clinician would total the record; pair it with
                                                      "score" to tell a decided category from a provisional one
    {"option": NAME}                    Option        a boolean option of the pack
    {"const": true | false}             Const

OP is one of ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=`` (read aloud as <, ≤, >, ≥, =, ≠).

Three-valued logic shows through the words where it matters: ``{"not": {"true": X}}`` reads "unless
X" (X documented as true blocks it; not documented does not), ``{"not": {"fact": F}}`` reads "F
documented as absent", ``{"known": F}`` reads "F documented".
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rules.expressions import Context, Expr, Number, Phrasebook, Truth

__all__ = [
    "OPERATORS",
    "AllOf",
    "AnyOf",
    "Compare",
    "CompareFacts",
    "Const",
    "Definition",
    "Fact",
    "IsCode",
    "IsTrue",
    "Known",
    "Not",
    "Older",
    "Option",
    "Points",
    "Score",
    "numeral",
]

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_SIGNS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥", "==": "=", "!=": "≠"}


def numeral(value: Number) -> str:
    """A number as a clinician writes it: ``500`` for 500.0, ``0.9`` for 0.9."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- facts --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fact(Expr):
    form: ClassVar[str] = "fact"
    name: str

    def evaluate(self, context: Context) -> Truth:
        value = context.value(self.name)
        return value if isinstance(value, bool) else None

    def facts(self) -> frozenset[str]:
        return frozenset({self.name})

    def to_json(self) -> dict[str, Any]:
        return {self.form: self.name}

    def describe(self, words: Phrasebook) -> str:
        return words.fact(self.name)


@dataclass(frozen=True, slots=True)
class Known(Expr):
    form: ClassVar[str] = "known"
    name: str

    def evaluate(self, context: Context) -> Truth:
        return context.value(self.name) is not None

    def facts(self) -> frozenset[str]:
        return frozenset({self.name})

    def to_json(self) -> dict[str, Any]:
        return {self.form: self.name}

    def describe(self, words: Phrasebook) -> str:
        return f"{words.fact(self.name)} documented"


@dataclass(frozen=True, slots=True)
class Compare(Expr):
    form: ClassVar[str] = "cmp"
    name: str
    op: str
    constant: Number

    def evaluate(self, context: Context) -> Truth:
        left = context.value(self.name)
        if isinstance(left, bool) or not isinstance(left, float | int):
            return None
        return OPERATORS[self.op](float(left), float(self.constant))

    def facts(self) -> frozenset[str]:
        return frozenset({self.name})

    def to_json(self) -> dict[str, Any]:
        return {self.form: [self.name, self.op, self.constant]}

    def describe(self, words: Phrasebook) -> str:
        return f"{words.fact(self.name)} {_SIGNS[self.op]} {words.value(self.name, self.constant)}"


@dataclass(frozen=True, slots=True)
class CompareFacts(Expr):
    form: ClassVar[str] = "cmp"
    name: str
    op: str
    other: str
    times: Number | None = None  # None: not written, which means 1

    def evaluate(self, context: Context) -> Truth:
        left, other = context.value(self.name), context.value(self.other)
        if isinstance(left, bool) or not isinstance(left, float | int) or not isinstance(other, float):
            return None
        return OPERATORS[self.op](float(left), other * float(1 if self.times is None else self.times))

    def facts(self) -> frozenset[str]:
        return frozenset({self.name, self.other})

    def to_json(self) -> dict[str, Any]:
        rhs: dict[str, Any] = {"fact": self.other}
        if self.times is not None:
            rhs["times"] = self.times
        return {self.form: [self.name, self.op, rhs]}

    def describe(self, words: Phrasebook) -> str:
        factor = "" if self.times is None or self.times == 1 else f"{numeral(self.times)} × "
        return f"{words.fact(self.name)} {_SIGNS[self.op]} {factor}{words.fact(self.other)}"


@dataclass(frozen=True, slots=True)
class IsCode(Expr):
    form: ClassVar[str] = "is"
    name: str
    codes: tuple[str, ...]
    listed: bool = True  # written as a list (``[CODES]``), not as one bare code

    def evaluate(self, context: Context) -> Truth:
        value = context.value(self.name)
        return None if value is None else value in self.codes

    def facts(self) -> frozenset[str]:
        return frozenset({self.name})

    def to_json(self) -> dict[str, Any]:
        return {self.form: [self.name, list(self.codes) if self.listed else self.codes[0]]}

    def describe(self, words: Phrasebook) -> str:
        return f"{words.fact(self.name)} {' or '.join(self.codes)}"


@dataclass(frozen=True, slots=True)
class Older(Expr):
    form: ClassVar[str] = "older"
    first: str
    second: str

    def evaluate(self, context: Context) -> Truth:
        one, two = context.facts[self.first].when, context.facts[self.second].when
        if one is None or two is None:
            return None
        return one < two

    def facts(self) -> frozenset[str]:
        return frozenset({self.first, self.second})

    def to_json(self) -> dict[str, Any]:
        return {self.form: [self.first, self.second]}

    def describe(self, words: Phrasebook) -> str:
        return f"{words.fact(self.first)} recorded before {words.fact(self.second)}"


# -- logic --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Junction(Expr):
    word: ClassVar[str]
    parts: tuple[Expr, ...]

    @property
    def children(self) -> tuple[Expr, ...]:
        return self.parts

    def to_json(self) -> dict[str, Any]:
        return {self.form: [part.to_json() for part in self.parts]}

    def describe(self, words: Phrasebook) -> str:
        phrases = [part.describe(words) for part in self.parts]
        if len(phrases) == 1:
            return phrases[0]
        if len(phrases) == 2:
            return f"({phrases[0]} {self.word} {phrases[1]})"
        return f"{self.form} of [{'; '.join(phrases)}]"


@dataclass(frozen=True, slots=True)
class AllOf(_Junction):
    form: ClassVar[str] = "all"
    word: ClassVar[str] = "and"

    def evaluate(self, context: Context) -> Truth:
        result: Truth = True
        for part in self.parts:
            truth = part.evaluate(context)
            if truth is False:
                return False
            if truth is None:
                result = None
        return result


@dataclass(frozen=True, slots=True)
class AnyOf(_Junction):
    form: ClassVar[str] = "any"
    word: ClassVar[str] = "or"

    def evaluate(self, context: Context) -> Truth:
        result: Truth = False
        for part in self.parts:
            truth = part.evaluate(context)
            if truth is True:
                return True
            if truth is None:
                result = None
        return result


@dataclass(frozen=True, slots=True)
class Not(Expr):
    form: ClassVar[str] = "not"
    part: Expr

    @property
    def children(self) -> tuple[Expr, ...]:
        return (self.part,)

    def evaluate(self, context: Context) -> Truth:
        truth = self.part.evaluate(context)
        return None if truth is None else not truth

    def to_json(self) -> dict[str, Any]:
        return {self.form: self.part.to_json()}

    def describe(self, words: Phrasebook) -> str:
        part = self.part
        if isinstance(part, IsTrue):
            return f"unless {part.part.describe(words)}"
        if isinstance(part, Fact):
            return f"{words.fact(part.name)} documented as absent"
        if isinstance(part, Known):
            return f"{words.fact(part.name)} not documented"
        return f"not {part.describe(words)}"


@dataclass(frozen=True, slots=True)
class IsTrue(Expr):
    form: ClassVar[str] = "true"
    part: Expr

    @property
    def children(self) -> tuple[Expr, ...]:
        return (self.part,)

    def evaluate(self, context: Context) -> Truth:
        return self.part.evaluate(context) is True

    def to_json(self) -> dict[str, Any]:
        return {self.form: self.part.to_json()}

    def describe(self, words: Phrasebook) -> str:
        return f"{self.part.describe(words)} (documented)"


# -- the pack's own names -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Definition(Expr):
    form: ClassVar[str] = "def"
    name: str

    def evaluate(self, context: Context) -> Truth:
        return context.definition(self.name)

    def definitions(self) -> frozenset[str]:
        return frozenset({self.name})

    def to_json(self) -> dict[str, Any]:
        return {self.form: self.name}

    def describe(self, words: Phrasebook) -> str:
        return words.definition(self.name)


@dataclass(frozen=True, slots=True)
class Score(Expr):
    form: ClassVar[str] = "score"
    name: str
    op: str
    threshold: Number

    def evaluate(self, context: Context) -> Truth:
        result, test, threshold = context.score(self.name), OPERATORS[self.op], float(self.threshold)
        low, high = test(result.minimum, threshold), test(result.maximum, threshold)
        return low if low == high else None

    def to_json(self) -> dict[str, Any]:
        return {self.form: [self.name, self.op, self.threshold]}

    def describe(self, words: Phrasebook) -> str:
        return f"{words.score(self.name)} {_SIGNS[self.op]} {numeral(self.threshold)}"


@dataclass(frozen=True, slots=True)
class Points(Expr):
    form: ClassVar[str] = "points"
    name: str
    op: str
    threshold: Number

    def evaluate(self, context: Context) -> Truth:
        return OPERATORS[self.op](context.score(self.name).points, float(self.threshold))

    def to_json(self) -> dict[str, Any]:
        return {self.form: [self.name, self.op, self.threshold]}

    def describe(self, words: Phrasebook) -> str:
        # No phrase yet: read out as its JSON, as `rules diff` always has.
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Option(Expr):
    form: ClassVar[str] = "option"
    name: str

    def evaluate(self, context: Context) -> Truth:
        return context.options[self.name]

    def to_json(self) -> dict[str, Any]:
        return {self.form: self.name}

    def describe(self, words: Phrasebook) -> str:
        return f"option {words.option(self.name)} is on"


@dataclass(frozen=True, slots=True)
class Const(Expr):
    form: ClassVar[str] = "const"
    value: bool

    def evaluate(self, context: Context) -> Truth:
        return self.value

    def to_json(self) -> dict[str, Any]:
        return {self.form: self.value}

    def describe(self, words: Phrasebook) -> str:
        return "always" if self.value else "never"
