"""FHIR R4 resources (plain JSON) → :class:`~fhir_mappings.facts.Facts`.

Reading rules, declared once here and parameterised by ``data/facts.json``:

* Observations count when ``final``, ``amended`` or ``corrected``. A ``preliminary`` result may rule
  a finding *in* (a boolean ``True``) but never out; ``entered-in-error``, ``cancelled`` and
  anything else are ignored, as are values hidden behind ``dataAbsentReason``.
* Conditions: ``refuted`` and ``entered-in-error`` are ignored. A source with ``"clinical": "active"``
  needs clinicalStatus active, recurrence or relapse and no abatement; ``"ever"`` takes any other.
* Each fact has a look-back window; the most recent valid value wins (per leg for per-leg facts).
* A fact may read only some statuses (``"statuses": ["preliminary"]``: the preliminary view of a
  test, numbers included, kept apart so that rules can let it rule in and never out).
* A source may date its fact differently: ``"date": "onset"`` (a Condition's onset[x] only, no
  fallback to recordedDate) or ``"date": "start-from-duration"`` (an Observation of how long
  something has lasted: the fact is dated at its start, effective time minus the duration).
* ``"min_period"`` on a source: a finding recorded over an ``effectivePeriod`` shorter than this
  (e.g. bed rest for under 3 days) is read as *not met*.
* Laterality comes from ``bodySite`` (lateralised limb structures, laterality qualifiers, text),
  from lateralised codes (ICD-10-CM), or from a panel component's name.
* Resources for another patient are ignored and reported in ``Facts.notes``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir_mappings.errors import VocabularyError
from fhir_mappings.facts import LEGS, Evidence, Fact, Facts, FactSpec, Vocabulary
from fhir_mappings.terminology import FINDING_SYSTEM, INTERPRETATION, Terminology
from fhir_mappings.units import convert

VALID_STATUSES = frozenset({"final", "amended", "corrected"})
RULE_IN_STATUSES = frozenset({"preliminary"})
ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
IGNORED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
_SIDE_WORDS = (("bilateral", "both"), ("left",), ("right",))
# A laboratory's range flags on a test whose positivity is "above the cut-off" (D-dimer).
_ABOVE_RANGE = frozenset({"H", "HH", "HU"})
_BELOW_RANGE = frozenset({"L", "LL", "LU"})


@dataclass(frozen=True, slots=True)
class _Candidate:
    value: bool | float | str
    when: datetime | None
    laterality: str | None
    final: bool
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class _Route:
    spec: FactSpec
    source: Mapping[str, Any]


def parse_datetime(text: object) -> datetime | None:
    """A FHIR date or dateTime as an aware datetime (dates and partial dates at UTC midnight)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _codings(concept: object) -> list[Mapping[str, Any]]:
    if not isinstance(concept, dict):  # JSON objects are dicts: the cheap check in the hot path
        return []
    codings = concept.get("coding")
    return [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []


def _codes(concept: object) -> set[str]:
    """The string codes of a CodeableConcept (a code of any other JSON type is no code)."""
    return {code for c in _codings(concept) if isinstance(code := c.get("code"), str)}


def _text(concept: object) -> str:
    if not isinstance(concept, Mapping):
        return ""
    parts = [concept.get("text")] + [c.get("display") for c in _codings(concept)]
    return " ".join(p for p in parts if isinstance(p, str))


class Mapper:
    """Maps one patient's resources to facts; built once per vocabulary, reused for every call."""

    def __init__(self, vocabulary: Vocabulary, terminology: Terminology) -> None:
        self.vocabulary = vocabulary
        self.terminology = terminology
        self._observation_routes: dict[tuple[str, str], list[_Route]] = {}
        self._condition_routes: dict[tuple[str, str], list[_Route]] = {}
        self._patient_routes: list[_Route] = []
        for spec in vocabulary.specs.values():
            for source in spec.sources:
                self._register(spec, source)
        self._declared = frozenset(vocabulary.types())

    def _register(self, spec: FactSpec, source: Mapping[str, Any]) -> None:
        kind = source.get("from")
        route = _Route(spec, source)
        if kind == "patient":
            self._patient_routes.append(route)
            return
        if kind not in ("observation", "condition"):
            raise VocabularyError(f"unknown source {kind!r}", fact=spec.name)
        table = self._observation_routes if kind == "observation" else self._condition_routes
        keys: list[tuple[str, str]] = []
        if "finding" in source:
            keys.append((FINDING_SYSTEM, str(source["finding"])))
        if "valueset" in source:
            self.terminology.require([source["valueset"]], fact=spec.name)
            keys += [(e.system, e.code) for e in self.terminology.valuesets[source["valueset"]]]
        if not keys:
            raise VocabularyError("a source needs a finding code or a value set", fact=spec.name)
        for answer in spec.answers.values():
            if "valueset" in answer:
                self.terminology.require([answer["valueset"]], fact=spec.name)
        for key in keys:
            table.setdefault(key, []).append(route)

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
        candidates: dict[str, list[_Candidate]] = {}
        notes: list[str] = []
        subject = f"Patient/{patient_id}"
        for resource in resources:
            kind = resource.get("resourceType")
            reference = f"{kind}/{resource.get('id', '?')}"
            owner = resource.get("subject")
            owner_ref = owner.get("reference") if isinstance(owner, dict) else None
            if not isinstance(owner_ref, str) or not (
                owner_ref == subject or owner_ref.endswith("/" + subject)
            ):
                notes.append(f"ignored {reference}: not about the context patient")
                continue
            if kind == "Observation":
                self._observation(resource, reference, now, candidates)
            elif kind == "Condition":
                self._condition(resource, reference, now, candidates)
            else:
                notes.append(f"ignored {reference}: resource type not read")
        values: dict[str, Fact] = {}
        if patient is not None:
            if patient.get("id") not in (None, patient_id):
                notes.append("ignored Patient: not the context patient")
            else:
                values.update(self._patient(patient, now))
        for name, found in candidates.items():
            values.update(self._select(self.vocabulary.specs[name], found))
        return Facts(by_name=values, declared=self._declared, notes=tuple(notes))

    # --- Observations ---------------------------------------------------------------------

    def _observation(
        self,
        resource: Mapping[str, Any],
        reference: str,
        now: datetime,
        out: dict[str, list[_Candidate]],
    ) -> None:
        status = resource.get("status")
        if not isinstance(status, str) or (status not in VALID_STATUSES and status not in RULE_IN_STATUSES):
            return
        routes = self._routes(self._observation_routes, resource.get("code"))
        components = [
            (index, component, found)
            for index, component in enumerate(_list(resource.get("component")))
            if (found := self._routes(self._observation_routes, component.get("code")))
        ]
        if not routes and not components:
            return  # most of a real chart: nothing the rules read
        when = (
            parse_datetime(resource.get("effectiveDateTime"))
            or parse_datetime(_get(resource, "effectivePeriod", "end"))
            or parse_datetime(_get(resource, "effectivePeriod", "start"))
            or parse_datetime(resource.get("issued"))
        )
        side = self._laterality(resource.get("bodySite"))
        for route in routes:
            spec = route.spec
            reads, final = _reads(spec, status)
            value, when_here = self._source_value(route, resource, resource, when)
            if not reads or not self._in_window(spec, when_here, now):
                continue
            side_here = side or self._code_laterality(resource.get("code"), route)
            if value is not None:
                self._add(out, spec, value, when_here, side_here, final, reference, resource, status)
        for index, component, component_routes in components:
            for route in component_routes:
                spec = route.spec
                reads, final = _reads(spec, status)
                value, when_here = self._source_value(route, component, resource, when)
                if not reads or not self._in_window(spec, when_here, now):
                    continue
                side_here = self._laterality(component.get("code")) or side
                ref = f"{reference}#component[{index}]"
                if value is not None:
                    self._add(out, spec, value, when_here, side_here, final, ref, component, status)

    def _source_value(
        self,
        route: _Route,
        element: Mapping[str, Any],
        resource: Mapping[str, Any],
        when: datetime | None,
    ) -> tuple[bool | float | str | None, datetime | None]:
        """The value a source reads from an Observation (or component) and the date it carries."""
        source = route.source
        if source.get("date") == "start-from-duration":
            minutes = None if "dataAbsentReason" in element else _duration_minutes(element)
            if minutes is None or when is None:
                return None, when
            return True, when - timedelta(minutes=minutes)
        value = self._read_value(route.spec, element)
        minimum = source.get("min_period")
        if value is True and isinstance(minimum, Mapping):
            length = _period_length(resource)
            if length is not None and length < _timedelta(minimum):
                value = False  # recorded, but for too short a time to meet the criterion
        return value, when

    def _read_value(self, spec: FactSpec, element: Mapping[str, Any]) -> bool | float | str | None:
        if "dataAbsentReason" in element:
            return None
        if spec.type == "number":
            return self._number(spec, element)
        concept = element.get("valueCodeableConcept")
        if spec.answers:
            for answer, target in spec.answers.items():
                if any(self._matches(target, c) for c in _codings(concept)):
                    return {"true": True, "false": False}.get(answer, answer)
            return None
        if spec.type == "code":
            return None
        if isinstance(element.get("valueBoolean"), bool):
            return bool(element["valueBoolean"])
        flags = [c for i in _list(element.get("interpretation")) for c in _codings(i)]
        for coding in flags:
            if coding.get("system") == INTERPRETATION and coding.get("code") in _ABOVE_RANGE:
                return True
            if coding.get("system") == INTERPRETATION and coding.get("code") in _BELOW_RANGE:
                return False
        for coding in _codings(concept) + flags:
            if self._matches({"valueset": "result-positive"}, coding) or self._matches(
                {"valueset": "finding-present"}, coding
            ):
                return True
            if self._matches({"valueset": "result-negative"}, coding) or self._matches(
                {"valueset": "finding-absent"}, coding
            ):
                return False
        has_value = any(key.startswith("value") for key in element)
        return None if has_value else True  # a finding recorded with no value asserts it

    def _number(self, spec: FactSpec, element: Mapping[str, Any]) -> float | None:
        quantity = element.get("valueQuantity")
        raw: object
        unit: str | None
        if isinstance(quantity, Mapping):
            raw = quantity.get("value")
            unit = quantity.get("code") or quantity.get("unit")
        elif "valueInteger" in element:
            raw, unit = element["valueInteger"], spec.unit
        else:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None
        if unit is None and spec.unit in ("1", "{ratio}"):
            unit = spec.unit
        if not isinstance(unit, str) or spec.unit is None:
            return None
        converted = convert(float(raw), unit, spec.unit)
        if converted is None or not math.isfinite(converted):
            return None  # an overflowing value is no measurement: not documented
        return round(converted, spec.round_to) if spec.round_to is not None else converted

    # --- Conditions -----------------------------------------------------------------------

    def _condition(
        self,
        resource: Mapping[str, Any],
        reference: str,
        now: datetime,
        out: dict[str, list[_Candidate]],
    ) -> None:
        verification = _codes(resource.get("verificationStatus"))
        if verification & IGNORED_VERIFICATION:
            return
        clinical = _codes(resource.get("clinicalStatus"))
        active = (not clinical or bool(clinical & ACTIVE_CLINICAL)) and not any(
            key.startswith("abatement") for key in resource
        )
        when = (
            parse_datetime(resource.get("onsetDateTime"))
            or parse_datetime(_get(resource, "onsetPeriod", "start"))
            or parse_datetime(resource.get("recordedDate"))
        )
        onset = parse_datetime(resource.get("onsetDateTime")) or parse_datetime(
            _get(resource, "onsetPeriod", "start")
        )
        side = self._laterality(_first(resource.get("bodySite")))
        for route in self._routes(self._condition_routes, resource.get("code")):
            if route.source.get("clinical", "active") == "active" and not active:
                continue
            when_here = when
            if route.source.get("date") == "onset":
                if onset is None:
                    continue  # the fact is the onset itself: no onset recorded, nothing to say
                when_here = onset
            if when_here is not None and not self._in_window(route.spec, when_here, now):
                continue
            side_here = side or self._code_laterality(resource.get("code"), route)
            status = "/".join(sorted(str(c) for c in clinical)) or "unknown"
            self._add(out, route.spec, True, when_here, side_here, True, reference, resource, status)

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

    # --- helpers --------------------------------------------------------------------------

    def _routes(self, table: Mapping[tuple[str, str], list[_Route]], concept: object) -> list[_Route]:
        routes: list[_Route] = []
        for coding in _codings(concept):
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(system, str) or not isinstance(code, str):
                continue
            found = table.get((system, code))
            if found is None and self.terminology.lookup(system, code):
                # a code written differently (ICD-10-CM without its dot): match by its normal form
                found = [
                    r
                    for e in self.terminology.lookup(system, code)
                    for r in table.get((e.system, e.code), ())
                ]
            for route in found or ():
                if all(route.spec.name != r.spec.name for r in routes):
                    routes.append(route)
        return routes

    def _matches(self, target: Mapping[str, str], coding: Mapping[str, Any]) -> bool:
        if "finding" in target:
            return coding.get("system") == FINDING_SYSTEM and coding.get("code") == target["finding"]
        name = target.get("valueset")
        return name is not None and self.terminology.contains(name, coding.get("system"), coding.get("code"))

    def _laterality(self, concept: object) -> str | None:
        sides: set[str] = set()
        for coding in _codings(concept):
            for entry in self.terminology.lookup(coding.get("system"), coding.get("code")):
                if entry.laterality:
                    sides.add(entry.laterality)
        if not sides:
            words = _text(concept).lower()
            for group in _SIDE_WORDS:
                if any(word in words for word in group):
                    sides.add("bilateral" if group[0] == "bilateral" else group[0])
                    break
        if "bilateral" in sides or {"left", "right"} <= sides:
            return "bilateral"
        return sides.pop() if len(sides) == 1 else None

    def _code_laterality(self, concept: object, route: _Route) -> str | None:
        name = route.source.get("valueset")
        for coding in _codings(concept):
            for entry in self.terminology.lookup(coding.get("system"), coding.get("code")):
                if entry.valueset == name and entry.laterality:
                    return entry.laterality
        return None

    @staticmethod
    def _in_window(spec: FactSpec, when: datetime | None, now: datetime) -> bool:
        if when is not None and when > now + timedelta(days=1):
            return False  # dated in the future: not a fact we can trust
        if spec.window_hours is None:
            return True
        return when is not None and now - when <= timedelta(hours=spec.window_hours)

    def _add(
        self,
        out: dict[str, list[_Candidate]],
        spec: FactSpec,
        value: bool | float | str,
        when: datetime | None,
        side: str | None,
        final: bool,
        reference: str,
        element: Mapping[str, Any],
        status: object,
    ) -> None:
        if not final and value is not True:
            return  # a preliminary result may rule in, never out
        label = _text(element.get("code")) or spec.label
        shown = _show(value, spec.unit)
        evidence = Evidence(reference, label, shown, when, side, str(status) if status else None)
        out.setdefault(spec.name, []).append(_Candidate(value, when, side, final, evidence))

    def _select(self, spec: FactSpec, found: Sequence[_Candidate]) -> dict[str, Fact]:
        if not spec.per_leg:
            return {spec.name: _winner(spec.name, found)}
        buckets: dict[str, list[_Candidate]] = {"left": [], "right": [], "unspecified": []}
        for candidate in found:
            side = candidate.laterality
            for leg in LEGS if side == "bilateral" else (side or "unspecified",):
                buckets[leg].append(candidate)
        facts = {f"{spec.name}_{leg}": _winner(f"{spec.name}_{leg}", buckets[leg]) for leg in LEGS}
        unspecified = _winner(spec.name, buckets["unspecified"])
        if spec.type == "boolean":
            winners = [f for f in (*facts.values(), unspecified) if f.documented]
            value: bool | None = None
            if any(f.value is True for f in winners):
                value = True
                winners = [f for f in winners if f.value is True]
            elif winners:
                value = False
            evidence = tuple(e for f in winners for e in f.evidence)
            unspecified = Fact(spec.name, value, _unique(evidence), _latest(winners))
        facts[spec.name] = unspecified
        return facts


def _reads(spec: FactSpec, status: object) -> tuple[bool, bool]:
    """Whether ``spec`` reads an Observation of ``status``, and whether it reads it as final."""
    if spec.statuses is not None:
        return status in spec.statuses, True
    return True, status in VALID_STATUSES


def _duration_minutes(element: Mapping[str, Any]) -> float | None:
    quantity = element.get("valueQuantity")
    if not isinstance(quantity, Mapping):
        return None
    raw, unit = quantity.get("value"), quantity.get("code") or quantity.get("unit")
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not isinstance(unit, str):
        return None
    minutes = convert(float(raw), unit, "min")
    return minutes if minutes is not None and 0 <= minutes < 60 * 24 * 366 * 100 else None


def _period_length(resource: Mapping[str, Any]) -> timedelta | None:
    start = parse_datetime(_get(resource, "effectivePeriod", "start"))
    end = parse_datetime(_get(resource, "effectivePeriod", "end"))
    return end - start if start is not None and end is not None else None


def _timedelta(spec: Mapping[str, Any]) -> timedelta:
    return timedelta(days=float(spec.get("days", 0)), hours=float(spec.get("hours", 0)))


def _winner(name: str, found: Sequence[_Candidate]) -> Fact:
    """The most recent final value; a more recent preliminary positive still rules in."""
    if not found:
        return Fact(name, None)
    oldest = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(found, key=lambda c: c.when or oldest, reverse=True)
    finals = [c for c in ordered if c.final]
    best = finals[0] if finals else ordered[0]
    for candidate in ordered:
        if not candidate.final and candidate.value is True and best.value is not True:
            if (candidate.when or oldest) >= (best.when or oldest):
                best = candidate
            break
    return Fact(name, best.value, (best.evidence,), best.when)


def _latest(facts: Sequence[Fact]) -> datetime | None:
    dates = [f.when for f in facts if f.when is not None]
    return max(dates) if dates else None


def _unique(evidence: Iterable[Evidence]) -> tuple[Evidence, ...]:
    return tuple(dict.fromkeys(evidence))


def _show(value: bool | float | str, unit: str | None) -> str:
    if isinstance(value, bool):
        return "present" if value else "absent"
    if isinstance(value, float):
        text = f"{value:g}"
        return f"{text} {unit}" if unit and unit not in ("1", "{ratio}") else text
    return value


def _get(resource: Mapping[str, Any], key: str, inner: str) -> object:
    value = resource.get(key)
    return value.get(inner) if isinstance(value, dict) else None


def _list(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _first(value: object) -> object:
    items = _list(value)
    return items[0] if items else value
