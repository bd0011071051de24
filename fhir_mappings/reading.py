"""Reading one recorded value the way EHRs and laboratories really write it — fail-safe.

**The fail-safe principle.** A record the mapper cannot read must never make the answer more
reassuring. Every reader here returns a :class:`Reading`: a value, nothing (not documented), or
*unreadable* with a quotable reason. An unreadable record on a DVT or red-flag concept is never
turned into ``False``: the mapper reports it (``unreadable_dvt_finding``,
``unreadable_red_flag_finding``, ``d_dimer_unclear``, ``venous_imaging_unclear``) so that the rules
move towards work-up or "cannot tell — assess", and the card quotes what was written.

What is read:

* Yes/no answers: ``valueBoolean``; SNOMED CT Yes 373066001 / No 373067005; LOINC answers LA33-6 /
  LA32-8; HL7 v2-0136 Y / N; ``valueString`` "yes"/"no" (any case). Sources in ``data/README.md``.
* Quantities: UCUM codes with annotations (``ug/mL{FEU}``), case variants (``ug/ml``, ``MG/L``),
  µ/μ/mcg spellings and trailing ``FEU``/``DDU`` words, converted by :mod:`fhir_mappings.units`.
  An annotation that contradicts the test (a ``{DDU}`` unit on the FEU LOINC) is unreadable.
* Laboratory positivity, in order: the coded interpretation (v3 / v2-0078 H, HH, HU, A, AA, POS →
  positive; N, NEG, L, LL, LU → negative), then the laboratory's ``referenceRange`` high bound,
  then nothing (the rules apply the guideline cut-off). A text-only interpretation that is not
  recognisably normal is unreadable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from fhir_mappings.fhir_json import codings, get, items, parse_datetime, text
from fhir_mappings.terminology import INTERPRETATION, LOINC, SNOMED
from fhir_mappings.units import convert

__all__ = [
    "NO",
    "NOTHING",
    "UCUM",
    "V2_ABNORMAL_FLAGS",
    "V2_YES_NO",
    "YES",
    "Matcher",
    "Reading",
    "coded_result",
    "duration_minutes",
    "interpretation_codes",
    "interpretation_text",
    "lab_positive",
    "names_elsewhere",
    "normalise_unit",
    "period_length",
    "read_answer",
    "read_quantity",
    "text_is_normal",
    "unreadable",
]

V2_YES_NO = "http://terminology.hl7.org/CodeSystem/v2-0136"
V2_ABNORMAL_FLAGS = "http://terminology.hl7.org/CodeSystem/v2-0078"
UCUM = "http://unitsofmeasure.org"

#: Coded answers read exactly like ``valueBoolean`` (verified: see data/README.md, "Answers").
YES = frozenset({(SNOMED, "373066001"), (LOINC, "LA33-6"), (V2_YES_NO, "Y")})
NO = frozenset({(SNOMED, "373067005"), (LOINC, "LA32-8"), (V2_YES_NO, "N")})
_TEXT_YES = frozenset({"yes", "y", "true"})
_TEXT_NO = frozenset({"no", "n", "false"})
_FLAG_SYSTEMS = frozenset({INTERPRETATION, V2_ABNORMAL_FLAGS})
_ABOVE = frozenset({"H", "HH", "HU", "A", "AA", "POS", ">"})
_BELOW_OR_NORMAL = frozenset({"N", "NEG", "L", "LL", "LU", "<"})
# Range flags of a finding (not of a lab test): high means present, low means absent.
_FINDING_HIGH = frozenset({"H", "HH", "HU"})
_FINDING_LOW = frozenset({"L", "LL", "LU"})
_NORMAL_TEXT = re.compile(
    r"^\s*(normal|negative|neg|within (the )?(normal|reference) (limits|range)|wnl|not (detected|elevated))\s*\.?\s*$",
    re.IGNORECASE,
)
_ANNOTATION = re.compile(r"\{([^}]*)\}")
_TRAILING_BASIS = re.compile(r"[\s(]*\b(FEU|DDU)\b\)?", re.IGNORECASE)
_CASE_FREE_UNITS = {
    "ng/ml": "ng/mL",
    "ug/ml": "ug/mL",
    "ug/l": "ug/L",
    "mg/l": "mg/L",
    "mg/dl": "mg/dL",
    "ng/l": "ng/L",
    "degc": "Cel",
    "°c": "Cel",
    "cel": "Cel",
    "c": "Cel",
    "degf": "[degF]",
    "°f": "[degF]",
    "[degf]": "[degF]",
}

_LEG_WORDS = re.compile(
    r"\b(leg|legs|calf|calves|lower (limb|extremity|extremities)|knee|ankle|foot|feet|thigh|shin|"
    r"popliteal|tibia\w*|fibula\w*|gastrocnemius|soleus|toe|toes|heel|femoral|achilles)\b",
    re.IGNORECASE,
)
_ELSEWHERE_WORDS = re.compile(
    r"\b(arm|arms|upper (limb|extremity|extremities)|hand|hands|wrist|elbow|shoulder|forearm|finger\w*|"
    r"face|head|neck|chest|abdomen|abdominal|trunk|breast|axilla\w*|scalp|eye|ear|back)\b",
    re.IGNORECASE,
)

Matcher = Callable[[str, Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Reading:
    """A value read from a record; ``unreadable`` says why a recorded value could not be read."""

    value: bool | float | str | None = None
    unreadable: str | None = None


NOTHING = Reading()


def unreadable(reason: str) -> Reading:
    return Reading(None, reason)


@lru_cache(maxsize=1024)
def normalise_unit(unit: str) -> tuple[str, str | None]:
    """A unit as labs send it → (UCUM code, basis annotation ``FEU``/``DDU`` or None)."""
    basis: str | None = None
    for annotation in _ANNOTATION.findall(unit):
        if annotation.strip().upper() in ("FEU", "DDU"):
            basis = annotation.strip().upper()
    bare = _ANNOTATION.sub("", unit) if _ANNOTATION.sub("", unit).strip() else unit  # "{ratio}" is a unit
    trailing = _TRAILING_BASIS.search(bare)
    if trailing is not None:
        basis = basis or trailing.group(1).upper()
        bare = _TRAILING_BASIS.sub("", bare)
    bare = bare.strip().replace("µ", "u").replace("μ", "u").replace("mcg", "ug").replace(" ", "")
    return _CASE_FREE_UNITS.get(bare.lower(), bare), basis


def read_quantity(
    element: Mapping[str, Any], unit: str | None, *, basis: str | None = None
) -> tuple[Reading, str]:
    """A numeric value in ``unit`` (and how it was written, for quoting)."""
    quantity = element.get("valueQuantity")
    if isinstance(quantity, Mapping):
        raw = quantity.get("value")
        written = [u for u in (quantity.get("code"), quantity.get("unit")) if isinstance(u, str) and u]
        shown = f"{raw} {written[-1] if written else ''}".strip()
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return (NOTHING if raw is None else unreadable(f"value {raw!r}")), shown
        if quantity.get("comparator") in (">", ">="):
            return unreadable(f"value reported as {quantity['comparator']}{raw}"), shown
        if not written and unit in ("1", "{ratio}"):
            written = [unit]
        if unit is None:
            return NOTHING, shown
        if not written:
            return unreadable("no unit"), shown
        for candidate in written:
            code, found_basis = normalise_unit(candidate)
            if basis and found_basis and found_basis != basis:
                return unreadable(f"unit {candidate!r} is {found_basis}, the test is {basis}"), shown
            converted = convert(float(raw), code, unit)
            if converted is not None:
                if not math.isfinite(converted):
                    return NOTHING, shown  # an overflowing value is no measurement: not documented
                return Reading(converted), shown
        return unreadable(f"unit {written[-1]!r} not readable"), shown
    if "valueInteger" in element:
        raw = element["valueInteger"]
        if isinstance(raw, bool) or not isinstance(raw, int):
            return NOTHING, ""
        return Reading(float(raw)), str(raw)
    if isinstance(element.get("valueString"), str):
        return unreadable(f"written as text {element['valueString']!r}"), str(element["valueString"])
    return NOTHING, ""


def read_answer(element: Mapping[str, Any], matches: Matcher) -> Reading:
    """A finding's yes/no value (``matches(valueset, coding)`` tests value-set membership)."""
    if isinstance(element.get("valueBoolean"), bool):
        return Reading(bool(element["valueBoolean"]))
    concept = element.get("valueCodeableConcept")
    for coding in codings(concept):
        system, code = coding.get("system"), coding.get("code")
        key = (system, code) if isinstance(system, str) and isinstance(code, str) else None
        if key in YES or matches("result-positive", coding) or matches("finding-present", coding):
            return Reading(True)
        if key in NO or matches("result-negative", coding) or matches("finding-absent", coding):
            return Reading(False)
    flags = interpretation_codes(element)
    if flags & _FINDING_HIGH:
        return Reading(True)
    if flags & _FINDING_LOW:
        return Reading(False)
    for coding in (c for i in items(element.get("interpretation")) for c in codings(i)):
        if matches("result-positive", coding):
            return Reading(True)
        if matches("result-negative", coding):
            return Reading(False)
    if isinstance(concept, Mapping):
        return unreadable(f"answer {text(concept) or 'coded'!r} is not yes or no")
    written = element.get("valueString")
    if isinstance(written, str):
        word = written.strip().rstrip(".").lower()
        if word in _TEXT_YES:
            return Reading(True)
        if word in _TEXT_NO:
            return Reading(False)
        return unreadable(f"text {written!r} is not yes or no")
    others = [key for key in element if key.startswith("value")]
    if others:
        return unreadable(f"{others[0]} where yes/no was expected")
    return Reading(True)  # a finding recorded with no value asserts it


def interpretation_codes(element: Mapping[str, Any]) -> set[str]:
    """The coded range/abnormal flags (v3 ObservationInterpretation or v2-0078)."""
    return {
        str(c.get("code"))
        for i in items(element.get("interpretation"))
        for c in codings(i)
        if c.get("system") in _FLAG_SYSTEMS and isinstance(c.get("code"), str)
    }


def interpretation_text(element: Mapping[str, Any]) -> str:
    """An interpretation written only as text (no coding from a flag system): quoted, read fail-safe."""
    parts: list[str] = []
    for interpretation in items(element.get("interpretation")):
        coded = [c for c in codings(interpretation) if c.get("system") in _FLAG_SYSTEMS]
        if not coded:
            parts.append(text(interpretation))
    return " ".join(p for p in parts if p)


def text_is_normal(words: str) -> bool:
    return bool(_NORMAL_TEXT.match(words))


def lab_positive(element: Mapping[str, Any], value: float | None, unit: str | None) -> Reading:
    """A lab result's positivity: coded interpretation, then the lab's reference range, then nothing."""
    flags = interpretation_codes(element)
    if flags & _ABOVE:
        return Reading(True)
    if flags & _BELOW_OR_NORMAL:
        return Reading(False)
    words = interpretation_text(element)
    if words and not text_is_normal(words):
        return unreadable(f"interpretation written as text: {words!r}")
    if value is not None and unit is not None:
        for bounds in items(element.get("referenceRange")):
            high = bounds.get("high")
            if not isinstance(high, Mapping):
                continue
            limit, _ = read_quantity({"valueQuantity": high}, unit)
            if isinstance(limit.value, float):
                return Reading(value > limit.value)
    return NOTHING


def names_elsewhere(words: str) -> bool:
    """Body-site text that names a place that is not the leg (an arm, the chest) and no leg word."""
    return bool(words) and not _LEG_WORDS.search(words) and bool(_ELSEWHERE_WORDS.search(words))


def coded_result(element: Mapping[str, Any], reading: Reading) -> bool:
    """A result is coded when a coded value or coded interpretation (not the abnormal flag) decided it."""
    if isinstance(element.get("valueBoolean"), bool):
        return True
    if isinstance(element.get("valueString"), str):
        return False
    concept_coded = bool(codings(element.get("valueCodeableConcept")))
    flags = {c.get("code") for i in items(element.get("interpretation")) for c in codings(i)}
    return concept_coded or bool(flags & {"POS", "NEG", "N", "10828004", "260385009"})


def duration_minutes(element: Mapping[str, Any]) -> float | None:
    quantity = element.get("valueQuantity")
    if not isinstance(quantity, Mapping):
        return None
    raw, unit = quantity.get("value"), quantity.get("code") or quantity.get("unit")
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not isinstance(unit, str):
        return None
    minutes = convert(float(raw), unit, "min")
    return minutes if minutes is not None and 0 <= minutes < 60 * 24 * 366 * 100 else None


def period_length(resource: Mapping[str, Any]) -> timedelta | None:
    start = parse_datetime(get(resource, "effectivePeriod", "start"))
    end = parse_datetime(get(resource, "effectivePeriod", "end"))
    return end - start if start is not None and end is not None else None
