"""Observations (and their components) → candidate facts, fail-safe.

* An Observation counts when ``final``, ``amended`` or ``corrected``. A ``preliminary`` result may
  rule a finding *in* (a boolean ``True``) but never out, and its evidence says "preliminary";
  ``entered-in-error``, ``cancelled`` and anything else are ignored, as are values hidden behind
  ``dataAbsentReason``. A fact may read only some statuses (``"statuses": ["preliminary"]``: the
  preliminary view of a test, kept apart so that rules can let it rule in and never out).
* It is skipped by its status and its codes (those of ``code`` and of each component's ``code``)
  before anything else in it is read: most Observations of a real chart feed no fact.
* Values are read by :mod:`fhir_mappings.reading` (coded yes/no answers, lab units and positivity);
  an unreadable value of a DVT or red-flag concept is reported, never read as absent.
* ``"date": "start-from-duration"`` on a source: an Observation of how long something has lasted is
  dated at its start. ``"min_period"``: a finding recorded over an ``effectivePeriod`` shorter than
  this (bed rest under 3 days) is read as *not met*.
* Laterality comes from ``bodySite``, from a lateralised code, or from a panel component's name;
  leg-only findings whose body site says elsewhere (an arm) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fhir_mappings.facts import FactSpec
from fhir_mappings.fhir_json import codings, get, items, parse_datetime, text
from fhir_mappings.reading import (
    NOTHING,
    Reading,
    coded_result,
    duration_minutes,
    interpretation_codes,
    interpretation_text,
    lab_positive,
    period_length,
    read_answer,
    read_quantity,
    text_is_normal,
    unreadable,
)
from fhir_mappings.selection import Candidate

__all__ = [
    "READ_STATUSES",
    "RULE_IN_STATUSES",
    "VALID_STATUSES",
    "read",
]

if TYPE_CHECKING:
    from fhir_mappings.mapper import Mapper
    from fhir_mappings.routes import Route

Out = dict[str, list[Candidate]]
VALID_STATUSES = frozenset({"final", "amended", "corrected"})
RULE_IN_STATUSES = frozenset({"preliminary"})
READ_STATUSES = VALID_STATUSES | RULE_IN_STATUSES


def read(mapper: Mapper, resource: Mapping[str, Any], now: datetime, out: Out, notes: list[str]) -> None:
    """Read one Observation about the context patient (the caller checked the subject)."""
    status = resource.get("status")
    if not isinstance(status, str) or status not in READ_STATUSES:
        return
    index = mapper.index
    routes = index.routes("observation", resource.get("code"))
    listed = resource.get("component")
    components = (
        [
            (number, component, found)
            for number, component in enumerate(items(listed))
            if (found := index.routes("observation", component.get("code")))
        ]
        if listed
        else ()
    )
    if not routes and not components:
        return  # most of a real chart: nothing the rules read
    when = (
        parse_datetime(resource.get("effectiveDateTime"))
        or parse_datetime(get(resource, "effectivePeriod", "end"))
        or parse_datetime(get(resource, "effectivePeriod", "start"))
        or parse_datetime(resource.get("issued"))
    )
    # a record dated outside a fact's look-back window is not read for it (an old pain score)
    routes = [route for route in routes if not _dated_out(mapper, route, when, now)]
    components = [
        (number, component, kept)
        for number, component, found in components
        if (kept := [route for route in found if not _dated_out(mapper, route, when, now)])
    ]
    if not routes and not components:
        return
    reference = f"Observation/{resource.get('id', '?')}"
    site = resource.get("bodySite")
    side = mapper.laterality(site)
    elsewhere = mapper.body_site_elsewhere(site)
    for route in routes:
        side_here = side or mapper.code_laterality(resource.get("code"), route)
        _read(
            mapper, route, resource, resource, when, side_here, elsewhere, status, reference, now, out, notes
        )
    for number, component, component_routes in components:
        for route in component_routes:
            side_here = mapper.laterality(component.get("code")) or side
            ref = f"{reference}#component[{number}]"
            _read(
                mapper, route, component, resource, when, side_here, elsewhere, status, ref, now, out, notes
            )


def _dated_out(mapper: Mapper, route: Route, when: datetime | None, now: datetime) -> bool:
    """The record's own date is the fact's date and falls outside the fact's window: nothing to read.
    (``_read`` checks the window again on the date it reads, which a duration may move.)"""
    return route.source.get("date") != "start-from-duration" and not mapper.in_window(route.spec, when, now)


def _read(
    mapper: Mapper,
    route: Route,
    element: Mapping[str, Any],
    resource: Mapping[str, Any],
    when: datetime | None,
    side: str | None,
    elsewhere: bool,
    status: str,
    reference: str,
    now: datetime,
    out: Out,
    notes: list[str],
) -> None:
    spec = route.spec
    if spec.statuses is not None:
        reads, final = status in spec.statuses, True
    else:
        reads, final = True, status in VALID_STATUSES
    if not reads or (spec.leg_only and elsewhere):
        return
    reading, when_here, shown = _source_value(mapper, route, element, resource, when)
    if not mapper.in_window(spec, when_here, now):
        return
    label = text(element.get("code")) or spec.label
    if reading.unreadable is not None:
        mapper.report_unreadable(
            spec, reading.unreadable, shown, when_here, side, reference, label, status, out
        )
        if spec.concern is None and spec.unclear is None:  # never dropped silently: the audit says so
            notes.append(f"not read {reference} ({spec.name}): {shown} - {reading.unreadable}"[:300])
        return
    if spec.unclear is not None and final and reading.value is not None:
        unclear_spec = mapper.vocabulary.specs[spec.unclear]
        mapper.add(out, unclear_spec, False, when_here, side, True, reference, label, "readable", status)
    if reading.value is not None:
        mapper.add(out, spec, reading.value, when_here, side, final, reference, label, None, status)
    if reading.value is True and side is None and spec.per_leg and spec.unsided == "none":
        # "confined to one leg" cannot be judged without a side: reported, never guessed
        mapper.report_unreadable(
            spec, "side not recorded", "present", when_here, side, reference, label, status, out
        )


def _source_value(
    mapper: Mapper,
    route: Route,
    element: Mapping[str, Any],
    resource: Mapping[str, Any],
    when: datetime | None,
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
    reading, shown = _value(mapper, spec, element)
    minimum = source.get("min_period")
    if reading.value is True and isinstance(minimum, Mapping):
        length = period_length(resource)
        if length is not None and length < timedelta(
            days=float(minimum.get("days", 0)), hours=float(minimum.get("hours", 0))
        ):
            reading = Reading(False)  # recorded, but for too short a time to meet the criterion
    return reading, when, shown


def _value(mapper: Mapper, spec: FactSpec, element: Mapping[str, Any]) -> tuple[Reading, str]:
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
            if any(mapper.matches(target, c) for c in codings(concept)):
                return Reading({"true": True, "false": False}.get(answer, answer)), shown
        return (unreadable(f"answer {shown!r} not recognised") if shown else NOTHING), shown
    if spec.type == "code":
        return NOTHING, shown
    reading = read_answer(element, lambda name, coding: mapper.matches({"valueset": name}, coding))
    if spec.unclear and reading.value is not None and not coded_result(element, reading):
        return unreadable("resulted without a coded positive or negative"), shown or "flag only"
    return reading, shown
