"""FHIR R4 resources (plain JSON) → :class:`~fhir_mappings.facts.Facts`, fail-safe.

**Fail-safe.** Data the mapper cannot read never makes the answer more reassuring: an unreadable,
ambiguous or undocumented record on a DVT or red-flag concept is reported as such
(``unreadable_dvt_finding``, ``unreadable_red_flag_finding``, ``d_dimer_unclear``,
``venous_imaging_unclear``, ``dvt_suspected``, ``<finding>_side_unrecorded``) and never read as
"absent". ``tests/fhir_mappings/test_fail_safe_properties.py`` checks it with Hypothesis.

Reading rules, declared once here and parameterised by ``data/facts.json``:

* Observations count when ``final``, ``amended`` or ``corrected``. A ``preliminary`` result may rule
  a finding *in* (a boolean ``True``) but never out, and its evidence says "preliminary";
  ``entered-in-error``, ``cancelled`` and anything else are ignored, as are values hidden behind
  ``dataAbsentReason``. Values are read by :mod:`fhir_mappings.reading` (coded yes/no answers, lab
  units and positivity).
* Conditions are read by :mod:`fhir_mappings.records` (acute vs chronic time windows,
  provisional = suspected); Procedure, MedicationRequest/MedicationStatement, Encounter and
  DiagnosticReport there too.
* Each fact has a look-back window; the most recent valid value wins (per leg for per-leg facts,
  see :mod:`fhir_mappings.selection`).
* A fact may read only some statuses (``"statuses": ["preliminary"]``: the preliminary view of a
  test, numbers included, kept apart so that rules can let it rule in and never out).
* ``"date": "start-from-duration"`` on a source: an Observation of how long something has lasted is
  dated at its start. ``"min_period"``: a finding recorded over an ``effectivePeriod`` shorter than
  this (bed rest under 3 days) is read as *not met*.
* Laterality comes from ``bodySite`` (lateralised limb structures, laterality qualifiers, text),
  from lateralised codes (ICD-10-CM descriptions), or from a panel component's name. Leg-only
  findings whose body site says elsewhere (an arm) are ignored.
* Resources for another patient are ignored and reported in ``Facts.notes``, as is a value of a
  fact with no DVT or red-flag concern that could not be read (an ABI in an unknown unit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhir_mappings import records
from fhir_mappings.errors import VocabularyError
from fhir_mappings.facts import Evidence, Fact, Facts, FactSpec, Vocabulary
from fhir_mappings.fhir_json import codings, get, items, parse_datetime, text
from fhir_mappings.reading import (
    NOTHING,
    Reading,
    coded_result,
    duration_minutes,
    interpretation_codes,
    interpretation_text,
    lab_positive,
    names_elsewhere,
    period_length,
    read_answer,
    read_quantity,
    text_is_normal,
    unreadable,
)
from fhir_mappings.selection import SIDE_NOT_RECORDED, Candidate, select
from fhir_mappings.terminology import FINDING_SYSTEM, Terminology

__all__ = ["RULE_IN_STATUSES", "VALID_STATUSES", "Mapper", "Route"]

VALID_STATUSES = frozenset({"final", "amended", "corrected"})
RULE_IN_STATUSES = frozenset({"preliminary"})
_SIDE_WORDS = (
    ("bilateral", re.compile(r"\b(bilateral|both)\b")),
    ("left", re.compile(r"\bleft\b")),
    ("right", re.compile(r"\bright\b")),
)
_KINDS = ("observation", "condition", "procedure", "medication", "encounter", "report")


@dataclass(frozen=True, slots=True)
class Route:
    spec: FactSpec
    source: Mapping[str, Any]


class Mapper:
    """Maps one patient's resources to facts; built once per vocabulary, reused for every call.

    ``acute_window`` overrides the vocabulary's acute-diagnosis window (a pack option).
    """

    def __init__(
        self, vocabulary: Vocabulary, terminology: Terminology, *, acute_window: timedelta | None = None
    ) -> None:
        self.vocabulary = vocabulary
        self.terminology = terminology
        self.acute_window = acute_window or timedelta(days=vocabulary.acute_window_days)
        self._by_valueset: dict[tuple[str, str], list[Route]] = {}
        self._by_finding: dict[tuple[str, str], list[Route]] = {}
        self.special: dict[str, list[Route]] = {}
        self._patient_routes: list[Route] = []
        for spec in vocabulary.specs.values():
            for source in spec.sources:
                self._register(spec, source)
        self._declared = frozenset(vocabulary.types())

    def _register(self, spec: FactSpec, source: Mapping[str, Any]) -> None:
        kind = source.get("from")
        route = Route(spec, source)
        if kind == "patient":
            self._patient_routes.append(route)
            return
        if kind not in _KINDS:
            raise VocabularyError(f"unknown source {kind!r}", fact=spec.name)
        for answer in spec.answers.values():
            if "valueset" in answer:
                self.terminology.require([answer["valueset"]], fact=spec.name)
        if "finding" in source:
            self._by_finding.setdefault((str(kind), str(source["finding"])), []).append(route)
        elif "valueset" in source:
            self.terminology.require([source["valueset"]], fact=spec.name)
            self._by_valueset.setdefault((str(kind), str(source["valueset"])), []).append(route)
        elif kind in ("procedure", "medication", "encounter"):
            self.special.setdefault(str(kind), []).append(route)
        else:
            raise VocabularyError("a source needs a finding code or a value set", fact=spec.name)

    # --- entry point ----------------------------------------------------------------------

    def map(
        self,
        *,
        patient_id: str,
        patient: Mapping[str, Any] | None,
        resources: Iterable[Mapping[str, Any]],
        now: datetime,
    ) -> Facts:
        """All facts for ``patient_id`` at ``now`` from the given resources."""
        candidates: dict[str, list[Candidate]] = {}
        notes: list[str] = []
        subject = f"Patient/{patient_id}"
        for resource in resources:
            kind = resource.get("resourceType")
            reference = f"{kind}/{resource.get('id', '?')}"
            owner = resource.get("subject") or resource.get("patient")
            owner_ref = owner.get("reference") if isinstance(owner, dict) else None
            if not isinstance(owner_ref, str) or not (
                owner_ref == subject or owner_ref.endswith("/" + subject)
            ):
                notes.append(f"ignored {reference}: not about the context patient")
                continue
            if kind == "Observation":
                self._observation(resource, reference, now, candidates, notes)
            elif not isinstance(kind, str) or not records.read(
                self, kind, resource, reference, now, candidates
            ):
                notes.append(f"ignored {reference}: resource type not read")
        values: dict[str, Fact] = {}
        if patient is not None:
            if patient.get("id") not in (None, patient_id):
                notes.append("ignored Patient: not the context patient")
            else:
                values.update(self._patient(patient, now))
        for name, found in candidates.items():
            values.update(select(self.vocabulary.specs[name], found))
        return Facts(by_name=values, declared=self._declared, notes=tuple(notes))

    # --- Observations ---------------------------------------------------------------------

    def _observation(
        self,
        resource: Mapping[str, Any],
        reference: str,
        now: datetime,
        out: dict[str, list[Candidate]],
        notes: list[str],
    ) -> None:
        status = resource.get("status")
        if not isinstance(status, str) or (status not in VALID_STATUSES and status not in RULE_IN_STATUSES):
            return
        routes = self.routes("observation", resource.get("code"))
        components = [
            (index, component, found)
            for index, component in enumerate(items(resource.get("component")))
            if (found := self.routes("observation", component.get("code")))
        ]
        if not routes and not components:
            return  # most of a real chart: nothing the rules read
        when = (
            parse_datetime(resource.get("effectiveDateTime"))
            or parse_datetime(get(resource, "effectivePeriod", "end"))
            or parse_datetime(get(resource, "effectivePeriod", "start"))
            or parse_datetime(resource.get("issued"))
        )
        site = resource.get("bodySite")
        side = self.laterality(site)
        elsewhere = self.body_site_elsewhere(site)
        for route in routes:
            side_here = side or self.code_laterality(resource.get("code"), route)
            self._read(
                route, resource, resource, when, side_here, elsewhere, status, reference, now, out, notes
            )
        for index, component, component_routes in components:
            for route in component_routes:
                side_here = self.laterality(component.get("code")) or side
                ref = f"{reference}#component[{index}]"
                self._read(
                    route, component, resource, when, side_here, elsewhere, status, ref, now, out, notes
                )

    def _read(
        self,
        route: Route,
        element: Mapping[str, Any],
        resource: Mapping[str, Any],
        when: datetime | None,
        side: str | None,
        elsewhere: bool,
        status: str,
        reference: str,
        now: datetime,
        out: dict[str, list[Candidate]],
        notes: list[str],
    ) -> None:
        spec = route.spec
        if spec.statuses is not None:
            reads, final = status in spec.statuses, True
        else:
            reads, final = True, status in VALID_STATUSES
        if not reads or (spec.leg_only and elsewhere):
            return
        reading, when_here, shown = self._source_value(route, element, resource, when)
        if not self.in_window(spec, when_here, now):
            return
        label = text(element.get("code")) or spec.label
        if reading.unreadable is not None:
            self.report_unreadable(
                spec, reading.unreadable, shown, when_here, side, reference, label, status, out
            )
            if spec.concern is None and spec.unclear is None:  # never dropped silently: the audit says so
                notes.append(f"not read {reference} ({spec.name}): {shown} - {reading.unreadable}"[:300])
            return
        if spec.unclear is not None and final and reading.value is not None:
            unclear_spec = self.vocabulary.specs[spec.unclear]
            self.add(out, unclear_spec, False, when_here, side, True, reference, label, "readable", status)
        if reading.value is not None:
            self.add(out, spec, reading.value, when_here, side, final, reference, label, None, status)
        if reading.value is True and side is None and spec.per_leg and spec.unsided == "none":
            # "confined to one leg" cannot be judged without a side: reported, never guessed
            self.report_unreadable(
                spec, "side not recorded", "present", when_here, side, reference, label, status, out
            )

    def _source_value(
        self, route: Route, element: Mapping[str, Any], resource: Mapping[str, Any], when: datetime | None
    ) -> tuple[Reading, datetime | None, str]:
        """The value a source reads from an Observation (or component), its date, and the record as written."""
        source, spec = route.source, route.spec
        if source.get("date") == "start-from-duration":
            minutes = None if "dataAbsentReason" in element else duration_minutes(element)
            if minutes is None or when is None:
                return NOTHING, when, ""
            return Reading(True), when - timedelta(minutes=minutes), ""
        if "dataAbsentReason" in element:
            return NOTHING, when, ""
        reading, shown = self._value(spec, element)
        minimum = source.get("min_period")
        if reading.value is True and isinstance(minimum, Mapping):
            length = period_length(resource)
            if length is not None and length < timedelta(
                days=float(minimum.get("days", 0)), hours=float(minimum.get("hours", 0))
            ):
                reading = Reading(False)  # recorded, but for too short a time to meet the criterion
        return reading, when, shown

    def _value(self, spec: FactSpec, element: Mapping[str, Any]) -> tuple[Reading, str]:
        if spec.type == "number":
            reading, shown = read_quantity(element, spec.unit, basis=spec.basis)
            if isinstance(reading.value, float) and spec.round_to is not None:
                reading = Reading(round(reading.value, spec.round_to))
            words = interpretation_text(element)
            if spec.unclear and reading.value is not None and words and not text_is_normal(words):
                return unreadable(f"interpretation written as text: {words!r}"), shown
            if reading == NOTHING and (words or interpretation_codes(element)):
                return unreadable(f"no value, only an interpretation {words!r}"), words or "flag only"
            return reading, shown
        if spec.positivity == "lab":
            number, shown = read_quantity(element, "ng/mL", basis=None)
            value = number.value if isinstance(number.value, float) else None
            return lab_positive(element, value, "ng/mL" if value is not None else None), shown
        concept = element.get("valueCodeableConcept")
        shown = text(concept) or str(element.get("valueString", ""))
        if spec.answers:
            for answer, target in spec.answers.items():
                if any(self.matches(target, c) for c in codings(concept)):
                    return Reading({"true": True, "false": False}.get(answer, answer)), shown
            return (unreadable(f"answer {shown!r} not recognised") if shown else NOTHING), shown
        if spec.type == "code":
            return NOTHING, shown
        reading = read_answer(element, lambda name, coding: self.matches({"valueset": name}, coding))
        if spec.unclear and reading.value is not None and not coded_result(element, reading):
            return unreadable("resulted without a coded positive or negative"), shown or "flag only"
        return reading, shown

    # --- shared by every reader ------------------------------------------------------------

    def routes(self, kind: str, concept: object) -> list[Route]:
        """The routes of ``kind`` whose value set or finding code one of the concept's codings is in."""
        found: list[Route] = []
        for coding in codings(concept):
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(system, str) or not isinstance(code, str):
                continue
            hits: list[Route] = []
            if system == FINDING_SYSTEM:
                hits += self._by_finding.get((kind, code), ())
            for entry in self.terminology.lookup(system, code):
                hits += self._by_valueset.get((kind, entry.valueset), ())
            for route in hits:
                if all(route is not r for r in found):
                    found.append(route)
        return found

    def matches(self, target: Mapping[str, str], coding: Mapping[str, Any]) -> bool:
        if "finding" in target:
            return coding.get("system") == FINDING_SYSTEM and coding.get("code") == target["finding"]
        name = target.get("valueset")
        return name is not None and self.terminology.contains(name, coding.get("system"), coding.get("code"))

    def laterality(self, concept: object) -> str | None:
        sides: set[str] = set()
        for concept_here in concept if isinstance(concept, list) else [concept]:
            for coding in codings(concept_here):
                for entry in self.terminology.lookup(coding.get("system"), coding.get("code")):
                    if entry.laterality:
                        sides.add(entry.laterality)
        if not sides:
            words = " ".join(text(c) for c in (concept if isinstance(concept, list) else [concept])).lower()
            for side, pattern in _SIDE_WORDS:
                if pattern.search(words):
                    sides.add(side)
                    break
        if "bilateral" in sides or {"left", "right"} <= sides:
            return "bilateral"
        return sides.pop() if len(sides) == 1 else None

    def body_site_elsewhere(self, concept: object) -> bool:
        """True when a body site is recorded and names a place that is not the leg."""
        sites = concept if isinstance(concept, list) else [concept]
        if any(self.terminology.lookup(c.get("system"), c.get("code")) for s in sites for c in codings(s)):
            return False  # a lower-limb structure or laterality of our value sets
        return names_elsewhere(" ".join(text(site) for site in sites))

    def code_laterality(self, concept: object, route: Route) -> str | None:
        name = route.source.get("valueset")
        for coding in codings(concept):
            for entry in self.terminology.lookup(coding.get("system"), coding.get("code")):
                if entry.valueset == name and entry.laterality:
                    return entry.laterality
        return None

    @staticmethod
    def in_window(spec: FactSpec, when: datetime | None, now: datetime) -> bool:
        if when is not None and when > now + timedelta(days=1):
            return False  # dated in the future: not a fact we can trust
        if spec.window_hours is None:
            return True
        return when is not None and now - when <= timedelta(hours=spec.window_hours)

    def add(
        self,
        out: dict[str, list[Candidate]],
        spec: FactSpec,
        value: bool | float | str,
        when: datetime | None,
        side: str | None,
        final: bool,
        reference: str,
        label: str,
        shown: str | None,
        status: object,
    ) -> None:
        if not final and value is not True:
            return  # a preliminary result may rule in, never out
        shown_side = SIDE_NOT_RECORDED if side is None and spec.per_leg and spec.unsided else side
        evidence = Evidence(
            reference,
            label or spec.label,
            shown or _show(value, spec.unit),
            when,
            shown_side,
            str(status or "") or None,
        )
        out.setdefault(spec.name, []).append(Candidate(value, when, side, final, evidence))

    def report_unreadable(
        self,
        spec: FactSpec,
        reason: str,
        shown: str,
        when: datetime | None,
        side: str | None,
        reference: str,
        label: str,
        status: object,
        out: dict[str, list[Candidate]],
    ) -> None:
        """Record that ``reference`` holds a value of ``spec`` that could not be read (quoted)."""
        quoted = f"{shown} — {reason}" if shown else reason
        for target in (spec.unclear, f"unreadable_{spec.concern}_finding" if spec.concern else None):
            if target is not None:
                self.add(
                    out,
                    self.vocabulary.specs[target],
                    True,
                    when,
                    side,
                    True,
                    reference,
                    label,
                    quoted,
                    status,
                )

    # --- Patient --------------------------------------------------------------------------

    def _patient(self, patient: Mapping[str, Any], now: datetime) -> dict[str, Fact]:
        facts: dict[str, Fact] = {}
        reference = f"Patient/{patient.get('id', '?')}"
        for route in self._patient_routes:
            field = route.source.get("field")
            value: float | str | None = None
            shown = ""
            if field == "age":
                born = parse_datetime(patient.get("birthDate"))
                if born is not None and len(str(patient.get("birthDate"))) == 10:
                    years = now.year - born.year - ((now.month, now.day) < (born.month, born.day))
                    value, shown = float(years), f"{years} years (born {patient['birthDate']})"
            elif field == "gender" and isinstance(patient.get("gender"), str):
                value = shown = str(patient["gender"])
            if value is not None:
                evidence = Evidence(reference, route.spec.label, shown)
                facts[route.spec.name] = Fact(route.spec.name, value, (evidence,))
        return facts


def _show(value: bool | float | str, unit: str | None) -> str:
    if isinstance(value, bool):
        return "present" if value else "absent"
    if isinstance(value, float):
        shown = f"{value:g}"
        return f"{shown} {unit}" if unit and unit not in ("1", "{ratio}") else shown
    return value
