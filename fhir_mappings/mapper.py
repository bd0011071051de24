"""FHIR R4 resources (plain JSON) → :class:`~fhir_mappings.facts.Facts`, fail-safe.

**Fail-safe.** Data the mapper cannot read never makes the answer more reassuring: an unreadable,
ambiguous or undocumented record on a DVT or red-flag concept is reported as such
(``unreadable_dvt_finding``, ``unreadable_red_flag_finding``, ``d_dimer_unclear``,
``venous_imaging_unclear``, ``dvt_suspected``, ``<finding>_side_unrecorded``) and never read as
"absent". ``tests/fhir_mappings/test_fail_safe_properties.py`` checks it with Hypothesis.

Reading rules, parameterised by ``data/facts.json``, one module per kind of record:

* :mod:`fhir_mappings.routes`: which facts a coded element feeds, by its codes (one look-up per
  coding; most of a real chart feeds none and is skipped before anything else in it is read).
* :mod:`fhir_mappings.observations`: Observations and their components (statuses, preliminary
  results rule in only, durations, minimum periods, values read by :mod:`fhir_mappings.reading`:
  coded yes/no answers, lab units and positivity).
* :mod:`fhir_mappings.records`: Conditions (acute vs chronic time windows, provisional =
  suspected), Procedure, MedicationRequest/MedicationStatement, Encounter and DiagnosticReport.
* Each fact has a look-back window; the most recent valid value wins (per leg for per-leg facts,
  see :mod:`fhir_mappings.selection`).
* Laterality comes from ``bodySite`` (lateralised limb structures, laterality qualifiers, text),
  from lateralised codes (ICD-10-CM descriptions), or from a panel component's name. Leg-only
  findings whose body site says elsewhere (an arm) are ignored.
* Resources for another patient are ignored and reported in ``Facts.notes``, as is a value of a
  fact with no DVT or red-flag concern that could not be read (an ABI in an unknown unit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from fhir_mappings import observations, records
from fhir_mappings.facts import Evidence, Fact, Facts, FactSpec, Vocabulary
from fhir_mappings.fhir_json import codings, parse_datetime, text
from fhir_mappings.reading import names_elsewhere
from fhir_mappings.routes import Route, RouteIndex
from fhir_mappings.selection import SIDE_NOT_RECORDED, Candidate, select
from fhir_mappings.terminology import FINDING_SYSTEM, Terminology

__all__ = ["Mapper", "Route"]

_SIDE_WORDS = (
    ("bilateral", re.compile(r"\b(bilateral|both)\b")),
    ("left", re.compile(r"\bleft\b")),
    ("right", re.compile(r"\bright\b")),
)


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
        self.index = RouteIndex(vocabulary, terminology)
        self.special = self.index.special
        self._declared = frozenset(vocabulary.types())

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
        suffix = "/" + subject
        for resource in resources:
            kind = resource.get("resourceType")
            owner = resource.get("subject") or resource.get("patient")
            owner_ref = owner.get("reference") if isinstance(owner, dict) else None
            if not isinstance(owner_ref, str) or not (owner_ref == subject or owner_ref.endswith(suffix)):
                notes.append(f"ignored {kind}/{resource.get('id', '?')}: not about the context patient")
                continue
            if kind == "Observation":  # its codes first: most Observations feed no fact
                observations.read(self, resource, now, candidates, notes)
                continue
            reference = f"{kind}/{resource.get('id', '?')}"
            if not isinstance(kind, str) or not records.read(
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

    # --- shared by every reader ------------------------------------------------------------

    def routes(self, kind: str, concept: object) -> list[Route]:
        """The routes of ``kind`` whose value set or finding code one of the concept's codings is in."""
        return self.index.routes(kind, concept)

    def matches(self, target: Mapping[str, str], coding: Mapping[str, Any]) -> bool:
        if "finding" in target:
            return coding.get("system") == FINDING_SYSTEM and coding.get("code") == target["finding"]
        name = target.get("valueset")
        return name is not None and self.terminology.contains(name, coding.get("system"), coding.get("code"))

    def laterality(self, concept: object) -> str | None:
        if concept is None:
            return None  # no body site (most records)
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
        if concept is None:
            return False
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
        for route in self.index.patient:
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
