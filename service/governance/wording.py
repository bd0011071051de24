"""Rule-pack expressions in words a clinician reads: ``{"cmp": ["abi_left", "<=", 0.9]}`` →
"ankle-brachial index (left) ≤ 0.9".

The pack's own compiler reads each expression (:class:`rules.compiler.Compiler`, the one reader of
the language) and the compiled nodes word themselves (:mod:`rules.forms`, where three-valued logic
shows through: "unless X", "F documented as absent", "F documented"). A :class:`Wording` gives them
the names: the fact vocabulary's labels and units, and the pack's definition, score and option names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fhir_mappings.facts import Vocabulary
from rules.compiler import Compiler
from rules.errors import PackError
from rules.expressions import Expr, Number
from rules.forms import AllOf, numeral
from service.hooks.packs import fact_types

__all__ = ["ACRONYMS", "UNITS", "Wording", "canonical", "lower_first", "name_words"]

UNITS = {"1": "", "a": " years", "Cel": " °C", "wk": " weeks", "min": " min"}
ACRONYMS = {"dvt", "abi", "pad", "clti", "msk", "vte", "tbi", "feu", "ddu", "pe"}


def canonical(node: Any) -> str:
    """A stable text form of a JSON value, for comparing parts of two packs."""
    return json.dumps(node, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
    """Reads one pack's expressions aloud: its compiler reads them, and this gives the names
    (:class:`rules.expressions.Phrasebook`) — the vocabulary's labels and units, the pack's names."""

    def __init__(self, vocabulary: Vocabulary, document: Mapping[str, Any]) -> None:
        self.vocabulary = vocabulary
        self.units = {name: unit for name, (_, unit) in vocabulary.types().items()}
        self.scores = {
            name: str(spec.get("title", name_words(name)))
            for name, spec in document.get("scores", {}).items()
        }
        self.compiler = Compiler.for_pack(document, fact_types(vocabulary))
        self.pack, self.version = str(document.get("id", "?")), str(document.get("version", "?"))

    def read(self, node: Any) -> Expr:
        """One of the pack's JSON expressions, compiled; :class:`rules.errors.PackError` (naming the
        pack) if it is not one — ``calf-cds rules validate`` says where."""
        try:
            return self.compiler.compile(node, "")
        except PackError as error:
            message = str(error.args[0]).removesuffix(f" ({error.pointer})")
            raise PackError(message, pack=self.pack, version=self.version) from error

    def expr(self, expression: Expr) -> str:
        """One expression as a phrase."""
        return expression.describe(self)

    def conditions(self, expression: Expr) -> list[str]:
        """A rule's ``when`` as a list of conditions that must all hold."""
        parts = expression.parts if isinstance(expression, AllOf) else (expression,)
        return [part.describe(self) for part in parts]

    # -- the names (rules.expressions.Phrasebook) ------------------------------------------

    def fact(self, name: str) -> str:
        return lower_first(self.vocabulary.label(name))

    def value(self, name: str, value: Number) -> str:
        unit = self.units.get(name)
        suffix = UNITS.get(unit, f" {unit}") if unit else ""
        return f"{numeral(value)}{suffix}"

    def definition(self, name: str) -> str:
        return f"“{name_words(name)}”"

    def score(self, name: str) -> str:
        return self.scores.get(name, name_words(name))

    def option(self, name: str) -> str:
        return f"“{name_words(name)}”"
