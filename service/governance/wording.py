"""Rule-pack expressions in words a clinician reads: ``{"cmp": ["abi_left", "<=", 0.9]}`` →
"ankle-brachial index (left) ≤ 0.9".

Three-valued logic shows through where it matters: ``{"not": {"true": X}}`` reads "unless X"
(X documented as true blocks it; not documented does not), ``{"not": {"fact": F}}`` reads
"F documented as absent", ``{"known": F}`` reads "F documented".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fhir_mappings.facts import Vocabulary

__all__ = ["ACRONYMS", "OPERATORS", "UNITS", "Wording", "canonical", "lower_first", "name_words", "number"]

OPERATORS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥", "==": "=", "!=": "≠"}
UNITS = {"1": "", "a": " years", "Cel": " °C", "wk": " weeks", "min": " min"}
ACRONYMS = {"dvt", "abi", "pad", "clti", "msk", "vte", "tbi", "feu", "ddu", "pe"}


def canonical(node: Any) -> str:
    """A stable text form of a JSON value, for comparing expressions."""
    return json.dumps(node, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def lower_first(text: str) -> str:
    """ "Calf pain" → "calf pain", but "DVT …" and "D-dimer" keep their capitals."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def name_words(name: str) -> str:
    """A definition or option name in words: ``dvt_suspected`` → "DVT suspected"."""
    words = [w.upper() if w in ACRONYMS else w for w in name.replace("-", "_").split("_")]
    text = " ".join(words).replace("d dimer", "D-dimer")
    return text[:1].upper() + text[1:]


class Wording:
    """Reads one pack's expressions aloud, with the fact vocabulary's labels and units."""

    def __init__(self, vocabulary: Vocabulary, document: Mapping[str, Any]) -> None:
        self.vocabulary = vocabulary
        self.units = {name: unit for name, (_, unit) in vocabulary.types().items()}
        self.scores = {
            name: str(spec.get("title", name_words(name)))
            for name, spec in document.get("scores", {}).items()
        }

    def fact(self, name: str) -> str:
        return lower_first(self.vocabulary.label(name))

    def value(self, name: str, value: object) -> str:
        unit = self.units.get(name)
        suffix = UNITS.get(unit, f" {unit}") if unit else ""
        return f"{number(value)}{suffix}"

    def definition(self, name: str) -> str:
        return f"“{name_words(name)}”"

    def score(self, name: str) -> str:
        return self.scores.get(name, name_words(name))

    def expr(self, node: Any) -> str:
        """One expression as a phrase."""
        if not isinstance(node, Mapping) or len(node) != 1:
            return canonical(node)
        ((key, arg),) = node.items()
        method = getattr(self, f"_{key}", None)
        if method is None:
            return canonical(node)
        text: str = method(arg)
        return text

    def conditions(self, node: Any) -> list[str]:
        """A rule's ``when`` as a list of conditions that must all hold."""
        if isinstance(node, Mapping) and set(node) == {"all"} and isinstance(node["all"], list):
            return [self.expr(part) for part in node["all"]]
        return [self.expr(node)]

    # -- the forms --------------------------------------------------------------------------

    def _fact(self, name: str) -> str:
        return self.fact(name)

    def _known(self, name: str) -> str:
        return f"{self.fact(name)} documented"

    def _cmp(self, arg: list[Any]) -> str:
        name, op, rhs = arg
        if isinstance(rhs, Mapping):
            times = rhs.get("times", 1)
            factor = "" if times == 1 else f"{number(times)} × "
            return f"{self.fact(name)} {OPERATORS.get(op, op)} {factor}{self.fact(rhs['fact'])}"
        return f"{self.fact(name)} {OPERATORS.get(op, op)} {self.value(name, rhs)}"

    def _is(self, arg: list[Any]) -> str:
        name, codes = arg
        codes = codes if isinstance(codes, list) else [codes]
        return f"{self.fact(name)} {' or '.join(map(str, codes))}"

    def _older(self, arg: list[str]) -> str:
        return f"{self.fact(arg[0])} recorded before {self.fact(arg[1])}"

    def _join(self, parts: list[Any], word: str) -> str:
        phrases = [self.expr(p) for p in parts]
        if len(phrases) == 1:
            return phrases[0]
        if len(phrases) == 2:
            return f"({phrases[0]} {word} {phrases[1]})"
        lead = "all of" if word == "and" else "any of"
        return f"{lead} [{'; '.join(phrases)}]"

    def _all(self, parts: list[Any]) -> str:
        return self._join(parts, "and")

    def _any(self, parts: list[Any]) -> str:
        return self._join(parts, "or")

    def _not(self, part: Any) -> str:
        if isinstance(part, Mapping) and set(part) == {"true"}:
            return f"unless {self.expr(part['true'])}"
        if isinstance(part, Mapping) and set(part) == {"fact"}:
            return f"{self.fact(part['fact'])} documented as absent"
        if isinstance(part, Mapping) and set(part) == {"known"}:
            return f"{self.fact(part['known'])} not documented"
        return f"not {self.expr(part)}"

    def _true(self, part: Any) -> str:
        return f"{self.expr(part)} (documented)"

    def _def(self, name: str) -> str:
        return self.definition(name)

    def _score(self, arg: list[Any]) -> str:
        name, op, threshold = arg
        return f"{self.score(name)} {OPERATORS.get(op, op)} {number(threshold)}"

    def _option(self, name: str) -> str:
        return f"option “{name_words(name)}” is on"

    def _const(self, value: bool) -> str:
        return "always" if value else "never"
