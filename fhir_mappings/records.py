"""Conditions, Procedures, medications, Encounters and DiagnosticReports → candidate facts.

Conditions, by acuity and status (sources in ``data/facts.json``):

* ``verificationStatus`` refuted / entered-in-error: ignored. provisional / differential /
  unconfirmed: *suspected* — read only by sources with ``"verification": "suspected"``
  (``dvt_suspected``) or ``"any"`` (red-flag diagnoses: a suspected acute limb ischaemia needs the
  same urgent assessment), never as a confirmed fact.
* ``"acuity": "acute"``: counts only when dated (onset[x], else the assertedDate extension, else
  recordedDate) within the acute window (``acute_window`` in facts.json, 30 days, or the pack's
  option). ``"undated"`` says what a Condition with no date means for that concept: ``counts``
  (fail-safe for DVT, PE and red flags) or ``no`` (an undated injury or knee-replacement code is
  usually an old problem-list entry, and reading it as recent would offer an alternative diagnosis).
* ``"acuity": "chronic"``: counts while active, whatever its onset (the fact's look-back window,
  meant for findings, does not apply): PAD-family, CLTI, spinal stenosis, an active calf-pain problem.
* ``"acuity": "history"``: counts when the diagnosis is older than the acute window or no longer
  active (an old DVT is the Wells item "previously documented DVT").
* ``"clinical": "active"`` needs clinicalStatus active/recurrence/relapse and no abatement (chronic
  problems count while active, whatever their onset); ``"ever"`` takes any status.

Other resources (``"from"`` in facts.json): ``procedure`` (completed, performed within the fact's
window; ``"kind": "surgery"`` = Procedure.category SNOMED CT 387713003 "Surgical procedure", an
ICD-10-PCS Medical and Surgical code, or an operation named in the code's text (arthroplasty,
-ectomy, fixation, ...); ``"kind": "cast"`` = a cast or plaster named in the code
text), ``medication`` (MedicationRequest / MedicationStatement by ATC prefix or ingredient name),
``encounter`` (an inpatient stay of known length), ``report`` (DiagnosticReport conclusions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fhir_mappings.fhir_json import asserted_date, codes, codings, concepts, get, items, parse_datetime, text
from fhir_mappings.selection import Candidate

if TYPE_CHECKING:
    from fhir_mappings.mapper import Mapper
    from fhir_mappings.routes import Route

__all__ = [
    "ACTIVE_CLINICAL",
    "ACT_CODE",
    "ATC",
    "ICD10PCS",
    "IGNORED_VERIFICATION",
    "INPATIENT_CLASSES",
    "SURGICAL_CATEGORY",
    "SUSPECTED_VERIFICATION",
    "Out",
    "read",
]

Out = dict[str, list[Candidate]]
ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
IGNORED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
SUSPECTED_VERIFICATION = frozenset({"provisional", "differential", "unconfirmed"})
ATC = "http://www.whocc.no/atc"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SURGICAL_CATEGORY = "387713003"  # SNOMED CT "Surgical procedure" (FHIR R4 procedure-category value set)
INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})
_CAST = re.compile(r"\b(cast|casts|casting|plaster)\b", re.IGNORECASE)
# Words that name an operation in a procedure's text/display (SNOMED CT, CPT and local displays
# alike); read only to place a completed procedure in the 12-week surgery window (fail-safe: a minor
# operation read as major adds a Wells point, never removes one).
_SURGERY = re.compile(
    r"\b(\w+ectomy|\w+otomy|\w+ostomy|\w*plasty|replacement|fixation|amputation|resection|repair|"
    r"surgery|surgical|operation|operative|transplant\w*|laparoscop\w*|arthroscop\w*|osteosynthesis)\b",
    re.IGNORECASE,
)
_REPORT_STATUSES = frozenset({"final", "amended", "corrected", "appended", "preliminary"})


def read(
    mapper: Mapper, kind: str, resource: Mapping[str, Any], reference: str, now: datetime, out: Out
) -> bool:
    """Read one non-Observation resource; False when its type is not one the mapper reads."""
    if kind == "Condition":
        _condition(mapper, resource, reference, now, out)
    elif kind == "Procedure":
        _procedure(mapper, resource, reference, now, out)
    elif kind in ("MedicationRequest", "MedicationStatement"):
        _medication(mapper, resource, reference, now, out)
    elif kind == "Encounter":
        _encounter(mapper, resource, reference, now, out)
    elif kind == "DiagnosticReport":
        _report(mapper, resource, reference, now, out)
    else:
        return False
    return True


# --- Conditions ----------------------------------------------------------------------------


def _condition(mapper: Mapper, resource: Mapping[str, Any], reference: str, now: datetime, out: Out) -> None:
    routes = mapper.routes("condition", resource.get("code"))
    if not routes:
        return  # skipped by its codes before anything else in it is read: most of a problem list
    verification = codes(resource.get("verificationStatus"))
    if verification & IGNORED_VERIFICATION:
        return
    suspected = bool(verification & SUSPECTED_VERIFICATION)
    clinical = codes(resource.get("clinicalStatus"))
    active = (not clinical or bool(clinical & ACTIVE_CLINICAL)) and not any(
        key.startswith("abatement") for key in resource
    )
    onset = parse_datetime(resource.get("onsetDateTime")) or parse_datetime(
        get(resource, "onsetPeriod", "start")
    )
    when = onset or asserted_date(resource) or parse_datetime(resource.get("recordedDate"))
    side = mapper.laterality(resource.get("bodySite"))
    status = "/".join(sorted(clinical)) or "unknown"
    if suspected:
        status += " (" + "/".join(sorted(verification & SUSPECTED_VERIFICATION)) + ")"
    label = text(resource.get("code"))
    for route in routes:
        source = route.source
        mode = source.get("verification", "confirmed")
        if (mode == "suspected") != suspected and mode != "any":
            continue
        acuity = source.get("acuity")
        window = _acute_window(mapper, source)
        recent = when is None or now - when <= window
        if acuity == "history":
            if active and recent:
                continue  # a current episode, not a previous one
        elif source.get("clinical", "active") == "active" and not active:
            continue
        if acuity == "acute" and not recent:
            continue  # an acute diagnosis older than its window is history, not current
        when_here = when
        if source.get("date") == "onset":
            if onset is None:
                continue  # the fact is the onset itself: no onset recorded, nothing to say
            when_here = onset
        if when_here is None and source.get("undated", "counts") == "no":
            continue
        if when_here is not None and acuity != "chronic" and not mapper.in_window(route.spec, when_here, now):
            continue  # a chronic problem counts while active, whatever its onset
        side_here = side or mapper.code_laterality(resource.get("code"), route)
        shown = _shown_condition(mapper, resource, route)
        mapper.add(out, route.spec, True, when_here, side_here, True, reference, label, shown, status)


def _acute_window(mapper: Mapper, source: Mapping[str, Any]) -> timedelta:
    own = source.get("window")
    if isinstance(own, Mapping):
        return timedelta(days=float(own.get("days", 0)), hours=float(own.get("hours", 0)))
    return mapper.acute_window


def _shown_condition(mapper: Mapper, resource: Mapping[str, Any], route: Route) -> str:
    """What the card quotes: the matching code's own description (e.g. the gestational week)."""
    name = route.source.get("valueset")
    for coding in codings(resource.get("code")):
        for entry in mapper.terminology.lookup(coding.get("system"), coding.get("code")):
            if entry.valueset == name:
                return f"{entry.code} {entry.display}".strip()
    return "present"


# --- Procedures ----------------------------------------------------------------------------


def _procedure(mapper: Mapper, resource: Mapping[str, Any], reference: str, now: datetime, out: Out) -> None:
    if resource.get("status") != "completed":
        return
    when = (
        parse_datetime(resource.get("performedDateTime"))
        or parse_datetime(get(resource, "performedPeriod", "end"))
        or parse_datetime(get(resource, "performedPeriod", "start"))
    )
    if when is None:
        return  # an undated procedure cannot be placed in a 12-week window
    code = resource.get("code")
    label = text(code) or "procedure"
    surgical = (
        any(
            c.get("code") == SURGICAL_CATEGORY
            for cat in concepts(resource.get("category"))
            for c in codings(cat)
        )
        or any(c.get("system") == ICD10PCS and str(c.get("code", "")).startswith("0") for c in codings(code))
        or bool(_SURGERY.search(label))
    )
    side = mapper.laterality(resource.get("bodySite"))
    for route in mapper.special.get("procedure", ()):
        kind = route.source.get("kind")
        wanted = (kind == "surgery" and surgical) or (kind == "cast" and bool(_CAST.search(label)))
        if wanted and mapper.in_window(route.spec, when, now):
            mapper.add(out, route.spec, True, when, side, True, reference, label, "performed", "completed")


# --- Medications ---------------------------------------------------------------------------


def _medication(mapper: Mapper, resource: Mapping[str, Any], reference: str, now: datetime, out: Out) -> None:
    status = _string(resource.get("status"))
    concept = resource.get("medicationCodeableConcept")
    reference_display = get(resource, "medicationReference", "display")
    label = text(concept) or (reference_display if isinstance(reference_display, str) else "")
    atc = [
        str(c.get("code"))
        for c in codings(concept)
        if c.get("system") == ATC and isinstance(c.get("code"), str)
    ]
    when = (
        parse_datetime(resource.get("authoredOn"))
        or parse_datetime(resource.get("effectiveDateTime"))
        or parse_datetime(get(resource, "effectivePeriod", "end"))
        or parse_datetime(get(resource, "effectivePeriod", "start"))
        or parse_datetime(resource.get("dateAsserted"))
    )
    for route in mapper.special.get("medication", ()):
        source = route.source
        prefixes = tuple(map(str, source.get("atc", ())))
        names = [str(n) for n in source.get("names", ())]
        matched = any(code.startswith(prefixes) for code in atc) or any(
            re.search(rf"\b{re.escape(name)}\b", label, re.IGNORECASE) for name in names
        )
        if not matched:
            continue
        statuses = set(map(str, source.get("statuses", ("active",))))
        if status not in statuses:
            continue
        if status != "active" and (when is None or not mapper.in_window(route.spec, when, now)):
            continue  # a finished course counts only within the fact's window
        if when is not None and when > now + timedelta(days=1):
            continue
        mapper.add(out, route.spec, True, when, None, True, reference, label, str(status), status)


# --- Encounters ----------------------------------------------------------------------------


def _encounter(mapper: Mapper, resource: Mapping[str, Any], reference: str, now: datetime, out: Out) -> None:
    status = _string(resource.get("status"))
    klass = resource.get("class")
    if status not in ("finished", "in-progress") or not isinstance(klass, Mapping):
        return
    if _string(klass.get("code")) not in INPATIENT_CLASSES:
        return
    start = parse_datetime(get(resource, "period", "start"))
    end = parse_datetime(get(resource, "period", "end"))
    if status == "in-progress" and end is None:
        end = now
    if start is None or end is None or end > now + timedelta(days=1):
        return  # length not known: the Wells item needs 3 days or more
    for route in mapper.special.get("encounter", ()):
        minimum = timedelta(days=float(route.source.get("min_days", 3)))
        if end - start >= minimum and mapper.in_window(route.spec, end, now):
            days = (end - start).total_seconds() / 86400
            label = text(items(resource.get("type"))[0]) if items(resource.get("type")) else "inpatient stay"
            shown = f"inpatient stay of {days:.1f} days"
            mapper.add(out, route.spec, True, end, None, True, reference, label, shown, status)


# --- DiagnosticReports ---------------------------------------------------------------------


def _report(mapper: Mapper, resource: Mapping[str, Any], reference: str, now: datetime, out: Out) -> None:
    status = _string(resource.get("status"))
    if status not in _REPORT_STATUSES:
        return
    routes = mapper.routes("report", resource.get("code"))
    if not routes:
        return
    when = (
        parse_datetime(resource.get("effectiveDateTime"))
        or parse_datetime(get(resource, "effectivePeriod", "end"))
        or parse_datetime(resource.get("issued"))
    )
    final = status != "preliminary"
    label = text(resource.get("code")) or "venous duplex report"
    conclusion_codes = concepts(resource.get("conclusionCode"))
    conclusion = resource.get("conclusion")
    value: bool | None = None
    side = None
    for concept in conclusion_codes:
        for coding in codings(concept):
            if mapper.matches({"valueset": "result-positive"}, coding) or mapper.matches(
                {"valueset": "dvt"}, coding
            ):
                value = True
                side = side or mapper.laterality(concept)
            elif mapper.matches({"valueset": "result-negative"}, coding) and value is None:
                value = False
    quoted = conclusion if isinstance(conclusion, str) else " / ".join(text(c) for c in conclusion_codes)
    if value is None and not quoted:
        return  # no conclusion: the result Observations (if sent) are read on their own
    for route in routes:
        side_here = side or mapper.code_laterality(resource.get("code"), route)
        if not mapper.in_window(route.spec, when, now):
            continue
        if value is None:
            mapper.report_unreadable(
                route.spec,
                "conclusion not coded positive or negative",
                quoted,
                when,
                side_here,
                reference,
                label,
                status,
                out,
            )
            continue
        if route.spec.unclear is not None and final:
            unclear = mapper.vocabulary.specs[route.spec.unclear]
            mapper.add(
                out, unclear, False, when, side_here, True, reference, label, "coded conclusion", status
            )
        mapper.add(out, route.spec, value, when, side_here, final, reference, label, quoted or None, status)


def _string(value: object) -> str | None:
    """A JSON string member as a string; anything else (a list, an object) as absent."""
    return value if isinstance(value, str) else None
