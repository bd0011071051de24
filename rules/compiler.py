"""Reading a pack's JSON expressions into the tree of :mod:`rules.forms`, once, at load.

Every name is checked against what the pack declares (definitions, scores, options) and what the
fact vocabulary produces, with its type, so that a bad rule fails here
(:class:`~rules.errors.PackError`, :class:`~rules.errors.UnknownFactError`, each with a JSON
pointer) and never at a patient. This is the only reader of the expression language: the engine
evaluates the tree, and governance words and compares it (``service.governance.wording``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.errors import PackError, UnknownFactError
from rules.expressions import Expr, Number
from rules.forms import (
    OPERATORS,
    AllOf,
    AnyOf,
    Compare,
    CompareFacts,
    Const,
    Definition,
    Fact,
    IsCode,
    IsTrue,
    Known,
    Not,
    Older,
    Option,
    Points,
    Score,
)

__all__ = ["Compiler"]


@dataclass(frozen=True)
class Compiler:
    """Compiles JSON expressions, checking every name against what the pack and vocabulary declare.

    ``fact_types`` maps each producible fact name to its type (``boolean``, ``number``, ``code``).
    """

    fact_types: Mapping[str, str]
    definitions: frozenset[str]
    scores: frozenset[str]
    options: frozenset[str]

    @classmethod
    def for_pack(cls, document: Mapping[str, Any], fact_types: Mapping[str, str]) -> Compiler:
        """The compiler of one pack document: its own definitions, scores and options."""
        return cls(
            fact_types=fact_types,
            definitions=frozenset(document.get("definitions", {})),
            scores=frozenset(document.get("scores", {})),
            options=frozenset(document.get("options", {})),
        )

    def compile(self, node: Any, pointer: str) -> Expr:
        if not isinstance(node, dict) or len(node) != 1:
            raise PackError("an expression is an object with exactly one key", pointer=pointer)
        ((key, arg),) = node.items()
        here = f"{pointer}/{key}"
        if key in ("all", "any"):
            if not isinstance(arg, list) or not arg:
                raise PackError(f"{key} takes a non-empty list", pointer=here)
            parts = tuple(self.compile(p, f"{here}/{i}") for i, p in enumerate(arg))
            return AllOf(parts) if key == "all" else AnyOf(parts)
        if key in ("not", "true"):
            part = self.compile(arg, here)
            return Not(part) if key == "not" else IsTrue(part)
        if key == "fact":
            return Fact(self._fact(arg, here, "boolean"))
        if key == "known":
            return Known(self._fact(arg, here, None))
        if key == "cmp":
            return self._compare(arg, here)
        if key == "is":
            name, codes = self._pair(arg, here)
            listed = isinstance(codes, list)
            return IsCode(
                self._fact(name, here, "code"), tuple(map(str, codes if listed else [codes])), listed
            )
        if key == "older":
            first, second = self._pair(arg, here)
            return Older(self._fact(first, here, None), self._fact(second, here, None))
        if key == "def":
            if arg not in self.definitions:
                raise PackError(f"unknown definition {arg!r}", pointer=here)
            return Definition(str(arg))
        if key in ("score", "points"):
            if not isinstance(arg, list) or len(arg) != 3 or arg[0] not in self.scores:
                raise PackError(f"{key} takes [SCORE, OP, NUMBER] of a declared score", pointer=here)
            kind = Score if key == "score" else Points
            return kind(str(arg[0]), self._op(arg[1], here), self._number(arg[2], here))
        if key == "option":
            if arg not in self.options:
                raise PackError(f"unknown option {arg!r}", pointer=here)
            return Option(str(arg))
        if key == "const" and isinstance(arg, bool):
            return Const(arg)
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
            times = self._number(rhs["times"], pointer) if "times" in rhs else None
            return CompareFacts(name, op, other, times)
        return Compare(name, op, self._number(rhs, pointer))

    @staticmethod
    def _pair(arg: object, pointer: str) -> tuple[Any, Any]:
        if not isinstance(arg, list) or len(arg) != 2:
            raise PackError("takes a list of two", pointer=pointer)
        return arg[0], arg[1]

    @staticmethod
    def _op(op: object, pointer: str) -> str:
        if not isinstance(op, str) or op not in OPERATORS:
            raise PackError(f"unknown operator {op!r}", pointer=pointer)
        return op

    @staticmethod
    def _number(value: object, pointer: str) -> Number:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PackError(f"{value!r} is not a number", pointer=pointer)
        return value
