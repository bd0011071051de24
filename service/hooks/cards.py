"""Assessment → CDS Hooks cards a clinician reads in five seconds.

A card (issue 13; DESIGN "External contract"):

- ``summary`` (< 140 characters): the side, then the action — ``"Left leg: DVT unlikely on recorded
  items — D-dimer within 4 h; scan if positive"``. A pack 1.0.0 summary loses its leading
  "<Pattern> pattern:" and is cut at a word boundary with "…" when the side makes it too long.
- ``detail``: at most about eight rendered lines of Markdown — the two or three findings that
  decided it (value, side, date), one line naming what was not recorded that could change it, and
  the pack's own lines (the next step first) within a character budget that keeps the card's
  buttons in view in a half-screen card list. Every request-supplied string in it goes through
  :func:`service.hooks.card_text.escape_markdown`.
- ``source.label``: the guideline, the pack's id@version and short content hash (the CDS Hooks
  Sandbox shows it right under the summary); the guideline section, the pattern and the full
  hash are on the explanation page.
- ``links``: the card's explanation page (every criterion, the Wells table, all evidence with
  dates and sources, guideline sections, the pack hash, the pattern) as a short-lived signed
  ``absolute`` link (:mod:`service.hooks.explanation`), then the guideline.
- ``suggestions``: coded draft ServiceRequests (the pack's LOINC codes; ABI-family tests get a
  project-local orderable code a site maps to its catalogue) with the card's side in ``bodySite``
  (both legs for ABI-family tests, which always measure both).
- ``overrideReasons``: reasons that fit the card's topic ("Already ordered", "DVT already
  excluded", "Patient declined", "Not relevant to today's visit", …).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cds_hooks.models import Action, Card, Coding, Link, Source, Suggestion
from fhir_mappings.conformance import bundled_codesystem
from fhir_mappings.facts import Facts, Vocabulary
from fhir_mappings.orders import DraftOrders
from rules.codes import Indicator, Topic
from rules.engine import Assessment, Recommendation
from service.hooks.card_text import (
    CardEvidence,
    Finding,
    assessment_link,
    card_evidence,
    clean,
    decisive,
    escape_markdown,
    lead_with_action,
    score_title,
)

__all__ = [
    "CALF_PAIN_REASON",
    "DELETE_LABEL",
    "DETAIL_CHARACTERS",
    "DETAIL_LINES",
    "FINDINGS_SHOWN",
    "LOWER_LIMB",
    "MISSING_WIDTH",
    "ORDERABLES",
    "ORDERABLE_SYSTEM",
    "OVERRIDE_DISPLAYS",
    "OVERRIDE_REASONS",
    "OVERRIDE_SYSTEM",
    "RECOMMENDATION_SYSTEM",
    "SAFETY_LINE",
    "SCORE_WIDTH",
    "SUMMARY_LIMIT",
    "ExplanationLink",
    "build_cards",
    "card_summary",
    "fit",
    "override_reasons",
    "pack_label",
    "render_detail",
    "service_request",
    "suggestion_actions",
]

# A card's topic is a Topic (its display is Topic.display), coded in the published CodeSystem.
RECOMMENDATION_SYSTEM = str(bundled_codesystem("recommendation")["url"])
#: The override reasons a card may offer, (code, display), as the published CodeSystem has them.
OVERRIDE_SYSTEM = str(bundled_codesystem("override-reason")["url"])
OVERRIDE_REASONS = tuple(
    (str(concept["code"]), str(concept["display"]))
    for concept in bundled_codesystem("override-reason")["concept"]
)
OVERRIDE_DISPLAYS: Mapping[str, str] = dict(OVERRIDE_REASONS)
_REASONS_BY_TOPIC: Mapping[Topic, tuple[str, ...]] = {
    Topic.DUPLEX_DVT: ("already-ordered", "dvt-excluded", "patient-declined", "not-relevant-today"),
    Topic.ABI: ("already-ordered", "patient-declined", "not-relevant-today"),
    Topic.CONSERVATIVE: ("advice-given", "dvt-not-excluded", "patient-declined", "not-relevant-today"),
    Topic.URGENT_REFERRAL: ("already-referred", "finding-not-present", "patient-declined"),
}
_ANY_TOPIC_REASONS = ("patient-declined", "not-relevant-today")  # a topic the table does not name
# On an order hook the card is about an order being placed: the reasons say why it stands.
_ORDER_REASONS_BY_TOPIC: Mapping[Topic, tuple[str, ...]] = {
    Topic.DUPLEX_DVT: (
        "clinically-indicated",
        "discussed-with-specialist",
        "result-elsewhere",
        "other-indication",
        "dvt-excluded",
        "patient-declined",
    ),
    Topic.ABI: (
        "clinically-indicated",
        "discussed-with-specialist",
        "result-elsewhere",
        "other-indication",
        "already-ordered",
        "patient-declined",
    ),
    Topic.LUMBAR_IMAGING: ("intervention-considered", "clinically-indicated", "discussed-with-specialist"),
    Topic.URGENT_REFERRAL: _REASONS_BY_TOPIC[Topic.URGENT_REFERRAL],
}
_ANY_ORDER_REASONS = ("clinically-indicated", "discussed-with-specialist", "patient-declined")
DELETE_LABEL = 100  # characters of a draft order's label in a delete action's description
CALF_PAIN_REASON = {
    "coding": [{"system": "http://snomed.info/sct", "code": "300954003", "display": "Pain in calf"}]
}
# Laterality of a draft order (SNOMED CT; fhir_mappings/data/valuesets.json, GUIDANCE.md body sites).
LOWER_LIMB = {
    "left": {
        "system": "http://snomed.info/sct",
        "code": "32153003",
        "display": "Structure of left lower limb",
    },
    "right": {
        "system": "http://snomed.info/sct",
        "code": "62175007",
        "display": "Structure of right lower limb",
    },
}
# ABI-family tests have no verified LOINC or SNOMED order code (GUIDANCE.md): a local orderable
# that a site maps to its order catalogue (README "Card suggestions").
ORDERABLE_SYSTEM = "http://calf-cds.org/fhir/CodeSystem/orderable"
ORDERABLES = {
    "resting-abi": "Resting ankle-brachial index (ABI)",
    "toe-brachial-index": "Toe pressures and toe-brachial index (TBI)",
    "exercise-abi": "Exercise treadmill ankle-brachial index",
}
SUMMARY_LIMIT = 139
DETAIL_LINES = 8
DETAIL_CHARACTERS = 640
FINDINGS_SHOWN = 3
SCORE_WIDTH = 100
# A pack line with a safety message or a time-critical next step is always shown, whatever the
# budget (fail safe): the safety net, no rest-and-ice, what makes it an emergency, a 4-hour scan.
SAFETY_LINE = re.compile(
    r"(?i)safety net|come back|rest-and-ice|takes precedence|do not elevate|emergency|within 4 hours"
)
MISSING_WIDTH = 48  # "Not recorded:" fits one line of a half-screen card (the Sandbox at 1280 px)
ExplanationLink = Callable[[str], str | None]


def fit(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """``text`` cut at a word boundary with "…" to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:—-") + "…"


def card_summary(side_label: str | None, summary: str) -> str:
    """The side, then the pack's summary (leading with its action), under 140 characters."""
    text = lead_with_action(clean(summary, limit=1000))
    return fit(f"{side_label}: {text}" if side_label else text)


def _finding_line(finding: Finding) -> str:
    present = finding.present is True  # "Calf muscle strain · right · 2026-11-18": present goes unsaid
    parts = [finding.label if present else f"{finding.label}: **{escape_markdown(finding.value)}**"]
    if finding.side:
        parts.append(escape_markdown(finding.side.removesuffix(" leg")))
    if finding.date:
        parts.append(finding.date)
    return "- " + " · ".join(parts)


def _score_line(recommendation: Recommendation, *, with_items: bool) -> str | None:
    score = recommendation.score
    if score is None:
        return None
    spread = "" if score.minimum == score.maximum else f" (could be {score.minimum} to {score.maximum})"
    head = (
        f"- {score_title(score.name)} **{score.points}**{' on recorded items' if score.undocumented else ''}"
    )
    met = [f"{c.label} {c.points:+d}" for c in recommendation.criteria if c.points and c.state == "met"]
    if not met or not with_items:  # the rule's findings below show what scored; the page lists all
        return head + spread
    return fit(f"{head}{spread}: {'; '.join(met)}", SCORE_WIDTH)


_ASIDE = re.compile(r"\s*\([^()]*\)$")


def _missing_line(all_labels: tuple[str, ...]) -> str | None:
    """One line naming what is not recorded: labels without their trailing asides, as many as fit."""
    if not all_labels:
        return None
    labels = [_ASIDE.sub("", label) or label for label in all_labels]
    shown = [labels[0]]
    for label in labels[1:]:
        if len("; ".join([*shown, label])) > MISSING_WIDTH:
            break
        shown.append(label)
    more = f" (+{len(labels) - len(shown)} more)" if len(labels) > len(shown) else ""
    return "**Not recorded:** " + fit("; ".join(shown), MISSING_WIDTH) + more


def render_detail(recommendation: Recommendation, evidence: CardEvidence) -> str:
    """The card's Markdown: decisive findings, what was not recorded, then the pack's own lines.

    Each block is one rendered line (a list item or a paragraph), at most :data:`DETAIL_LINES`,
    and the whole stays near :data:`DETAIL_CHARACTERS` so that, in a half-screen card list, the
    card's buttons and links stay in view: the pack's first line (the next step) and every
    safety line (:data:`SAFETY_LINE`: safety net, no rest-and-ice) always show, other lines only
    within that budget; all of them are on the explanation page.
    """
    shown = decisive(evidence, recommendation.criteria, FINDINGS_SHOWN - (recommendation.score is not None))
    own = any(finding.fact in recommendation.evidence for finding in shown)  # not only the complaint
    score = [line for line in [_score_line(recommendation, with_items=not own)] if line]
    missing = None if recommendation.red_flag else _missing_line(evidence.missing_criteria)
    detail = recommendation.detail
    chosen = {0, *(n for n, line in enumerate(detail) if SAFETY_LINE.search(line))} & set(range(len(detail)))
    fixed = len(missing or "") + sum(len(detail[n]) for n in chosen)
    findings = score + [_finding_line(f) for f in shown]
    while len(findings) > 2 and fixed + sum(map(len, findings)) > DETAIL_CHARACTERS:
        findings.pop()  # two findings rather than three when the pack's own lines are long
    blocks = ["\n".join(findings)] if findings else []
    if missing:
        blocks.append(missing)
    lines = len(findings) + (1 if missing else 0)
    used = fixed + sum(map(len, findings))
    for number, line in enumerate(detail):
        if number in chosen or lines + len(chosen) >= DETAIL_LINES or used + len(line) > DETAIL_CHARACTERS:
            continue
        chosen.add(number)
        used += len(line)
    blocks += [detail[n] for n in sorted(chosen)]
    return "\n\n".join(blocks)


def _orderable(code: Mapping[str, Any]) -> dict[str, Any]:
    text = str(code.get("text", "")).lower()
    key = "toe-brachial-index" if "toe" in text else "exercise-abi" if "exercise" in text else "resting-abi"
    return {"system": ORDERABLE_SYSTEM, "code": key, "display": ORDERABLES[key]}


def service_request(
    request: Mapping[str, Any],
    *,
    patient_id: str,
    authored_on: datetime,
    side: str | None = None,
    topic: Topic | None = None,
    encounter_id: str | None = None,
) -> dict[str, Any]:
    """A draft ServiceRequest for a suggestion's ``request`` template, coded and with laterality
    (and the encounter, on an order hook whose context names one)."""
    code = dict(request["code"])
    if not code.get("coding") and topic == Topic.ABI:
        code["coding"] = [_orderable(code)]
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "priority": request["priority"],
        "code": code,
        "subject": {"reference": f"Patient/{patient_id}"},
        **({"encounter": {"reference": f"Encounter/{encounter_id}"}} if encounter_id else {}),
        "authoredOn": authored_on.isoformat(),
        "reasonCode": [CALF_PAIN_REASON],
    }
    if "note" in request:
        resource["note"] = [{"text": request["note"]}]
    if "bodySite" in request:
        resource["bodySite"] = request["bodySite"]
    elif side in ("left", "right", "both"):
        # An ABI-family test measures both legs against the arm whichever leg hurts (§3.1).
        legs = ("left", "right") if side == "both" or topic == Topic.ABI else (side,)
        resource["bodySite"] = [{"coding": [LOWER_LIMB[leg]]} for leg in legs]
    return resource


def override_reasons(topic: Topic, hook: str = "patient-view") -> list[Coding]:
    """The dismissal reasons offered on a card of ``topic`` shown on ``hook``."""
    if hook == "patient-view":
        codes = _REASONS_BY_TOPIC.get(topic, _ANY_TOPIC_REASONS)
    else:
        codes = _ORDER_REASONS_BY_TOPIC.get(topic, _ANY_ORDER_REASONS)
    return [Coding(system=OVERRIDE_SYSTEM, code=code, display=OVERRIDE_DISPLAYS[code]) for code in codes]


def suggestion_actions(
    suggestion: Mapping[str, Any],
    drafts: DraftOrders | None,
    *,
    patient_id: str,
    now: datetime,
    side: str | None,
    topic: Topic,
    encounter_id: str | None = None,
) -> list[Action]:
    """A suggestion's actions: for each kind it ``delete``s, one delete per draft order of that kind
    with an id (``resourceId`` ``ServiceRequest/us1``), then the create of its ``request``.

    The new order takes the side of a deleted draft that names one when its template has no body
    site (a venogram of the left leg becomes an ultrasound of the left leg).
    """
    actions: list[Action] = []
    deleted_sides: list[str] = []
    for kind in suggestion.get("delete", ()) if drafts is not None else ():
        for order in drafts.of_kind(kind) if drafts is not None else ():
            if not order.id:
                continue
            actions.append(
                Action(
                    type="delete",
                    description=f"Remove the draft order: {fit(clean(order.label, limit=1000), DELETE_LABEL)}",
                    resource_id=order.reference,
                )
            )
            if order.laterality:
                deleted_sides.append(order.laterality)
    if deleted_sides and "bodySite" not in suggestion["request"]:
        side = "both" if deleted_sides[0] == "bilateral" else deleted_sides[0]
    actions.append(
        Action(
            type="create",
            description=suggestion["label"],
            resource=service_request(
                suggestion["request"],
                patient_id=patient_id,
                authored_on=now,
                side=side,
                topic=topic,
                encounter_id=encounter_id,
            ),
        )
    )
    return actions


def pack_label(assessment: Assessment) -> str:
    """``calf-pain@1.0.0 #1a2b3c4d``: the pack that produced a card, with its short content hash."""
    digest = assessment.pack_hash.removeprefix("sha256:")[:8]
    return f"{assessment.pack_id}@{assessment.pack_version} #{digest}"


def build_cards(
    assessment: Assessment,
    facts: Facts,
    vocabulary: Vocabulary,
    *,
    patient_id: str,
    now: datetime,
    new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
    explanation_link: ExplanationLink | None = None,
    app_base_url: str | None = None,
    hook: str = "patient-view",
    drafts: DraftOrders | None = None,
    encounter_id: str | None = None,
) -> list[tuple[Card, Recommendation]]:
    """One card per recommendation, most urgent first, each beside the recommendation it shows.

    ``explanation_link(card_uuid)`` gives the URL of the card's explanation page, and
    ``app_base_url`` the service's absolute base URL for the SMART assessment app (neither from the
    CLI, which serves no pages). A card that is not a red flag and lacks findings the assessment asks
    carries a ``smart`` link that opens the form on them; a red flag asks for action, not a form.

    On an order hook, ``drafts`` are the call's draft orders: a suggestion that deletes a kind of
    order gets one ``delete`` action per draft of that kind with an id, before its ``create``
    (:func:`suggestion_actions`).
    """
    label = pack_label(assessment)
    cards: list[tuple[Card, Recommendation]] = []
    for recommendation in assessment.recommendations:
        citation = recommendation.citation
        evidence = card_evidence(recommendation, facts, vocabulary)
        suggestions = [
            Suggestion(
                label=suggestion["label"],
                uuid=new_uuid(),
                is_recommended=suggestion.get("recommended"),
                actions=suggestion_actions(
                    suggestion,
                    drafts,
                    patient_id=patient_id,
                    now=now,
                    side=evidence.side,
                    topic=recommendation.topic,
                    encounter_id=encounter_id,
                ),
            )
            for suggestion in recommendation.suggestions
        ]
        card_uuid = new_uuid()
        links: list[Link] = []
        url = explanation_link(card_uuid) if explanation_link else None
        if url:
            links.append(Link(label="Why this card: criteria, evidence, sources", url=url, type="absolute"))
        links += [
            Link(label=link["label"], url=link["url"], type="absolute") for link in recommendation.links
        ]
        if citation.url:
            links.append(Link(label=f"Guideline: {citation.guideline}", url=citation.url, type="absolute"))
        if app_base_url and not recommendation.red_flag:
            missing = [name for name in recommendation.evidence if not facts[name].documented]
            if (form := assessment_link(missing, app_base_url)) is not None:
                links.append(form)
        card = Card(
            uuid=card_uuid,
            summary=card_summary(evidence.side_label, recommendation.summary),
            detail=render_detail(recommendation, evidence),
            indicator=Indicator.CRITICAL if recommendation.red_flag else recommendation.indicator,
            source=Source(
                label=f"{citation.guideline} · {label}",
                url=citation.url,
                topic=Coding(
                    system=RECOMMENDATION_SYSTEM,
                    code=recommendation.topic,
                    display=recommendation.topic.display,
                ),
            ),
            suggestions=suggestions,
            selection_behavior="at-most-one" if suggestions else None,
            override_reasons=override_reasons(recommendation.topic, hook),
            links=links,
        )
        cards.append((card, recommendation))
    return sorted(cards, key=lambda pair: -Indicator(pair[0].indicator).urgency)
