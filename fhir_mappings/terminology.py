"""Value sets (SNOMED CT, LOINC, ICD-10-CM, the project's finding CodeSystem) and code look-up.

The bundled ``data/valuesets.json`` holds every verified code with its evidence; codes of the
project's own CodeSystem (``FINDING_SYSTEM``) are addressed directly by code. ICD-10-CM codes are
also matched by range and hierarchy (:mod:`fhir_mappings.icd10cm`): a billed ``C50.911`` is in
``active-cancer`` because the classification puts it under C00–C96, not because a list names it.
Extra codes (a terminology server's expansions, see :mod:`fhir_mappings.expansions`) are added with
:meth:`Terminology.extended`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fhir_mappings.errors import VocabularyError
from fhir_mappings.icd10cm import Icd10cmTable, IcdRange, bundled_ranges, icd10cm_table, laterality

__all__ = [
    "FINDING_SYSTEM",
    "ICD10CM",
    "INTERPRETATION",
    "LOINC",
    "SNOMED",
    "UCUM",
    "CodeEntry",
    "Terminology",
    "bundled_terminology",
    "listed_terminology",
]

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
FINDING_SYSTEM = "http://calf-cds.org/fhir/CodeSystem/finding"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """One code of one value set."""

    valueset: str
    system: str
    code: str
    display: str
    laterality: str | None = None


@dataclass(frozen=True)
class Terminology:
    """All value sets, indexed by (system, code) for constant-time matching in the hot path."""

    version: str
    valuesets: Mapping[str, tuple[CodeEntry, ...]]
    index: Mapping[tuple[str, str], tuple[CodeEntry, ...]]
    ranges: tuple[IcdRange, ...] = ()
    table: Icd10cmTable | None = None

    @classmethod
    def from_json(
        cls,
        document: Mapping[str, Any],
        *,
        ranges: tuple[IcdRange, ...] = (),
        table: Icd10cmTable | None = None,
    ) -> Terminology:
        valuesets: dict[str, tuple[CodeEntry, ...]] = {}
        index: dict[tuple[str, str], list[CodeEntry]] = {}
        for name, body in document["valuesets"].items():
            entries = tuple(
                CodeEntry(
                    valueset=name,
                    system=str(code["system"]),
                    code=_normalise(str(code["system"]), str(code["code"])),
                    display=str(code["display"]),
                    laterality=code.get("laterality"),
                )
                for code in body["codes"]
            )
            valuesets[name] = entries
            for entry in entries:
                index.setdefault((entry.system, entry.code), []).append(entry)
        return cls(
            version=str(document.get("version", "")),
            valuesets=valuesets,
            index={key: tuple(value) for key, value in index.items()},
            ranges=ranges,
            table=table,
        )

    def extended(self, entries: Iterable[CodeEntry]) -> Terminology:
        """This terminology plus ``entries`` (e.g. a terminology server's expansion of a value set)."""
        index = {key: list(value) for key, value in self.index.items()}
        valuesets = {name: list(value) for name, value in self.valuesets.items()}
        for entry in entries:
            entry = CodeEntry(
                entry.valueset,
                entry.system,
                _normalise(entry.system, entry.code),
                entry.display,
                entry.laterality,
            )
            known = index.setdefault((entry.system, entry.code), [])
            if all(e.valueset != entry.valueset for e in known):
                known.append(entry)
                valuesets.setdefault(entry.valueset, []).append(entry)
        return Terminology(
            version=self.version,
            valuesets={name: tuple(value) for name, value in valuesets.items()},
            index={key: tuple(value) for key, value in index.items()},
            ranges=self.ranges,
            table=self.table,
        )

    def require(self, names: Iterable[str], *, fact: str) -> None:
        """Fail at load when a fact's source names a value set that does not exist."""
        ranged = {item.valueset for item in self.ranges}
        for name in names:
            if name not in self.valuesets and name not in ranged:
                raise VocabularyError(f"unknown value set {name!r}", fact=fact)

    def lookup(self, system: str | None, code: str | None) -> tuple[CodeEntry, ...]:
        """Every value-set entry for one coding (empty when the code is in none, or not a string)."""
        if not isinstance(system, str) or not isinstance(code, str) or not system or not code:
            return ()
        listed = self.index.get((system, _normalise(system, code)), ())
        if system != ICD10CM or self.table is None or not self.ranges:
            return listed
        return listed + self._ranged(_normalise(system, code), frozenset(e.valueset for e in listed))

    def _ranged(self, code: str, listed: frozenset[str]) -> tuple[CodeEntry, ...]:
        """Value-set entries an ICD-10-CM code has by range (those not already listed)."""
        table = self.table
        lineage = table.lineage(code) if table is not None and len(code) <= 8 else None
        if lineage is None or table is None:
            return ()
        found: list[CodeEntry] = []
        for item in self.ranges:
            if item.valueset not in listed and item.matches(lineage):
                description = table.description(lineage[0])
                found.append(
                    CodeEntry(item.valueset, ICD10CM, lineage[0], description, laterality(description))
                )
        return tuple(found)

    def contains(self, valueset: str, system: str | None, code: str | None) -> bool:
        return any(entry.valueset == valueset for entry in self.lookup(system, code))


def _normalise(system: str, code: str) -> str:
    # ICD-10-CM codes are written with and without the dot and in either case by real EHRs.
    if system == ICD10CM:
        code = code.strip().upper().replace(".", "")
        return code[:3] + "." + code[3:] if len(code) > 3 else code
    return code.strip()


@cache
def listed_terminology() -> Terminology:
    """The listed value sets only (no ICD-10-CM ranges, no table): cheap, for building search lists."""
    text = resources.files("fhir_mappings").joinpath("data/valuesets.json").read_text("utf-8")
    return Terminology.from_json(json.loads(text))


@cache
def bundled_terminology() -> Terminology:
    """The value sets shipped with the package."""
    text = resources.files("fhir_mappings").joinpath("data/valuesets.json").read_text("utf-8")
    return Terminology.from_json(json.loads(text), ranges=bundled_ranges(), table=icd10cm_table())
