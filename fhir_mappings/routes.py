"""Routes: which facts a coded FHIR element feeds, found by its codes in one dictionary look-up.

A *route* joins a fact (its :class:`~fhir_mappings.facts.FactSpec`) to one of its sources in
``data/facts.json``: a value set or a finding code of the project's CodeSystem, read from one kind
of resource (``observation``, ``condition``, ``report``, …). Sources matched otherwise (procedures
by category and text, medications by ATC prefix or name, encounters by class) are kept apart in
:attr:`RouteIndex.special`, and the Patient's own fields in :attr:`RouteIndex.patient`.

Most of a real chart feeds no fact at all (vital signs, lab panels), so :meth:`RouteIndex.routes`
is built to say "nothing here" fast: at construction, every code of every value set (and every
finding code) is resolved, per kind, to the routes it feeds, so that a coding costs one look-up
in the hot path. What the table cannot answer is resolved as it always was, through
:meth:`~fhir_mappings.terminology.Terminology.lookup`: ICD-10-CM codes (matched by range and
hierarchy, so not enumerable) and codes written with surrounding blanks (normalised first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhir_mappings.errors import VocabularyError
from fhir_mappings.facts import FactSpec, Vocabulary
from fhir_mappings.terminology import FINDING_SYSTEM, ICD10CM, Terminology

__all__ = [
    "KINDS",
    "Route",
    "RouteIndex",
]

KINDS = ("observation", "condition", "procedure", "medication", "encounter", "report")
_BY_MATCH = ("procedure", "medication", "encounter")  # sources without a code: matched by the reader


@dataclass(frozen=True, slots=True)
class Route:
    """One source of one fact: the spec, and its source entry in ``data/facts.json``."""

    spec: FactSpec
    source: Mapping[str, Any]


class RouteIndex:
    """Every route of a vocabulary, by how it is found; built once per vocabulary and terminology."""

    def __init__(self, vocabulary: Vocabulary, terminology: Terminology) -> None:
        self.terminology = terminology
        self.special: dict[str, list[Route]] = {}
        self.patient: list[Route] = []
        self._by_valueset: dict[tuple[str, str], list[Route]] = {}
        self._by_finding: dict[tuple[str, str], list[Route]] = {}
        for spec in vocabulary.specs.values():
            for source in spec.sources:
                self._register(spec, source)
        # kind → system → code → the routes that coding feeds (only codings that feed one)
        self._by_code: dict[str, dict[str, dict[str, tuple[Route, ...]]]] = {kind: {} for kind in KINDS}
        self._resolve_all()

    def _register(self, spec: FactSpec, source: Mapping[str, Any]) -> None:
        kind = source.get("from")
        route = Route(spec, source)
        if kind == "patient":
            self.patient.append(route)
            return
        if kind not in KINDS:
            raise VocabularyError(f"unknown source {kind!r}", fact=spec.name)
        for answer in spec.answers.values():
            if "valueset" in answer:
                self.terminology.require([answer["valueset"]], fact=spec.name)
        if "finding" in source:
            self._by_finding.setdefault((str(kind), str(source["finding"])), []).append(route)
        elif "valueset" in source:
            self.terminology.require([source["valueset"]], fact=spec.name)
            self._by_valueset.setdefault((str(kind), str(source["valueset"])), []).append(route)
        elif kind in _BY_MATCH:
            self.special.setdefault(str(kind), []).append(route)
        else:
            raise VocabularyError("a source needs a finding code or a value set", fact=spec.name)

    def _resolve_all(self) -> None:
        """Fill the code table: every listed (system, code) and finding code, for every kind."""
        codings = {key for key in self.terminology.index if key[0] != ICD10CM}
        codings |= {(FINDING_SYSTEM, code) for _, code in self._by_finding}
        for system, code in codings:
            for kind in KINDS:
                hits = self.resolve(kind, system, code)
                if hits:
                    self._by_code[kind].setdefault(system, {})[code] = hits

    def resolve(self, kind: str, system: str, code: str) -> tuple[Route, ...]:
        """The routes of ``kind`` one coding feeds, each once, in order: finding routes, then value-set
        routes in the order of the terminology's entries (the reference the code table is built from)."""
        hits: list[Route] = []
        if system == FINDING_SYSTEM:
            hits += self._by_finding.get((kind, code), ())
        for entry in self.terminology.lookup(system, code):
            hits += self._by_valueset.get((kind, entry.valueset), ())
        return tuple(_once(hits))

    def routes(self, kind: str, concept: object) -> list[Route]:
        """The routes of ``kind`` whose value set or finding code one of the concept's codings is
        in, each once, in the order the codings give them."""
        if not isinstance(concept, dict):  # JSON objects are dicts: the cheap check in the hot path
            return []
        listed = concept.get("coding")
        if not isinstance(listed, list):
            return []
        table = self._by_code[kind]
        found: list[Route] = []
        for coding in listed:
            if not isinstance(coding, dict):
                continue
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(system, str) or not isinstance(code, str):
                continue
            by_code = table.get(system)
            hits = by_code.get(code) if by_code is not None else None
            if hits is None:
                if system != ICD10CM and code == code.strip():
                    continue  # not in any value set, not a finding code: most of a chart
                hits = self.resolve(kind, system, code)
            if not found:
                found.extend(hits)
                continue
            for route in hits:
                if all(route is not r for r in found):
                    found.append(route)
        return found


def _once(routes: list[Route]) -> list[Route]:
    """Each route once (by identity), in order of first appearance."""
    kept: list[Route] = []
    for route in routes:
        if all(route is not r for r in kept):
            kept.append(route)
    return kept
