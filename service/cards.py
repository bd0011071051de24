"""Assessment → CDS Hooks cards: summary, evidence in markdown, source, suggestions, override reasons."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cds_hooks.models import Action, Card, Coding, Link, Source, Suggestion
from fhir_mappings.facts import Facts, Vocabulary
from rules.engine import Assessment, Recommendation

RECOMMENDATION_SYSTEM = "http://calf-cds.org/fhir/CodeSystem/recommendation"
TOPIC_DISPLAY = {
    "abi": "ABI-family physiological testing",
    "duplex-dvt": "DVT work-up (ultrasound and/or D-dimer)",
    "conservative": "Conservative care with a safety net",
    "urgent-referral": "Urgent referral for a red flag",
}
NON_ADHERENCE_SYSTEM = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
OVERRIDE_REASONS = (
    ("cds-not-applicable", "CDS does not apply to patient"),
    (
        "recipient-disagrees-evidence",
        "Recipient disagrees with recommendation because of issues with the evidence",
    ),
    ("recipient-concerns-outcomes", "Recipient has concerns regarding potential health outcomes"),
    (
        "does-not-align-preferences",
        "Recommendation does not align with patient preferences or values",
    ),
    ("not-convenient-feasible", "Recommendation is not convenient or feasible"),
    ("cds-suboptimal-context", "CDS delivered in suboptimal context"),
)
CALF_PAIN_REASON = {
    "coding": [{"system": "http://snomed.info/sct", "code": "300954003", "display": "Pain in calf"}]
}
_MARK = {"met": "met", "not met": "not met", "not documented": "**not documented**"}


def _summary(text: str) -> str:
    return text if len(text) < 140 else text[:138].rstrip() + "…"


def _date(when: datetime | None) -> str:
    return when.date().isoformat() if when else "undated"


def render_detail(
    recommendation: Recommendation,
    facts: Facts,
    vocabulary: Vocabulary,
    pack_label: str,
    overall_pattern: str | None = None,
) -> str:
    """The card's markdown: pattern, advice, criteria, evidence, what was not documented, source.

    The pattern line names the assessment's overall pattern and, where this card addresses another
    one (an ABI card beside a neurogenic picture), that too.
    """
    pattern = overall_pattern or recommendation.pattern
    if pattern != recommendation.pattern:
        pattern = f"{pattern} (this card: {recommendation.pattern})"
    lines = [
        f"**Pattern:** {pattern} · **Rule:** `{recommendation.rule_id}` ({pack_label})",
        "",
    ]
    lines += [*recommendation.detail, ""]
    if recommendation.score is not None:
        score = recommendation.score
        range_note = "" if score.minimum == score.maximum else f" (could be {score.minimum}–{score.maximum})"
        lines.append(
            f"**{recommendation.score.name.replace('_', ' ').title()} score:** {score.points}{range_note}"
        )
    if recommendation.criteria:
        lines.append("**Criteria:**")
        for criterion in recommendation.criteria:
            points = f" ({criterion.points:+d})" if criterion.points is not None else ""
            lines.append(f"- {criterion.label}{points}: {_MARK[criterion.state]}")
        lines.append("")
    shown, missing = [], []
    for name in recommendation.evidence:
        fact = facts[name]
        if not fact.documented:
            missing.append(vocabulary.label(name))
            continue
        for evidence in fact.evidence:
            side = f" ({evidence.laterality})" if evidence.laterality else ""
            shown.append(
                f"- {evidence.label}{side}: {evidence.value} — {_date(evidence.when)} — `{evidence.reference}`"
            )
    if shown:
        lines += ["**Evidence:**", *dict.fromkeys(shown), ""]
    if missing:
        lines += ["**Not documented:** " + "; ".join(dict.fromkeys(missing)), ""]
    citation = recommendation.citation
    lines.append(f"Source: {citation.guideline}, {citation.section}.")
    return "\n".join(lines).strip()


def service_request(request: Mapping[str, Any], *, patient_id: str, authored_on: datetime) -> dict[str, Any]:
    """A draft ServiceRequest for a suggestion's ``request`` template."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "priority": request["priority"],
        "code": request["code"],
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": authored_on.isoformat(),
        "reasonCode": [CALF_PAIN_REASON],
    }
    if "note" in request:
        resource["note"] = [{"text": request["note"]}]
    if "bodySite" in request:
        resource["bodySite"] = request["bodySite"]
    return resource


def build_cards(
    assessment: Assessment,
    facts: Facts,
    vocabulary: Vocabulary,
    *,
    patient_id: str,
    now: datetime,
    new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> list[tuple[Card, Recommendation]]:
    """One card per recommendation, most urgent first, each beside the recommendation it shows."""
    pack_label = f"rules {assessment.pack_id}@{assessment.pack_version}"
    cards: list[tuple[Card, Recommendation]] = []
    for recommendation in assessment.recommendations:
        citation = recommendation.citation
        suggestions = [
            Suggestion(
                label=suggestion["label"],
                uuid=new_uuid(),
                is_recommended=suggestion.get("recommended"),
                actions=[
                    Action(
                        type="create",
                        description=suggestion["label"],
                        resource=service_request(
                            suggestion["request"], patient_id=patient_id, authored_on=now
                        ),
                    )
                ],
            )
            for suggestion in recommendation.suggestions
        ]
        links = [Link(label=link["label"], url=link["url"], type="absolute") for link in recommendation.links]
        if citation.url:
            links.append(Link(label=f"Guideline: {citation.guideline}", url=citation.url, type="absolute"))
        card = Card(
            uuid=new_uuid(),
            summary=_summary(recommendation.summary),
            detail=render_detail(recommendation, facts, vocabulary, pack_label, assessment.pattern),
            indicator="critical" if recommendation.red_flag else recommendation.indicator,
            source=Source(
                label=f"{citation.guideline} {citation.section} — {pack_label}"[:200],
                url=citation.url,
                topic=Coding(
                    system=RECOMMENDATION_SYSTEM,
                    code=recommendation.topic,
                    display=TOPIC_DISPLAY.get(recommendation.topic, recommendation.topic),
                ),
            ),
            suggestions=suggestions,
            selection_behavior="at-most-one" if suggestions else None,
            override_reasons=[
                Coding(system=NON_ADHERENCE_SYSTEM, code=code, display=display)
                for code, display in OVERRIDE_REASONS
            ],
            links=links,
        )
        cards.append((card, recommendation))
    rank = {"critical": 0, "warning": 1, "info": 2}
    return sorted(cards, key=lambda pair: rank[pair[0].indicator])
