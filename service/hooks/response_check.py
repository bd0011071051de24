"""The last check before a response leaves: the card contract, and what this service does with a card that breaks it.

The contract itself is CDS Hooks' and lives with the protocol
(:func:`cds_hooks.card_contract.card_problems`, driven by the :mod:`cds_hooks.models`). What is
this service's own: a card that fails is dropped and the drop is audited, except a red-flag card
(critical, or the ``urgent-referral`` topic), which is replaced by :func:`fallback_red_flag_card`
— a minimal, valid critical card — because a red flag must never disappear.

:func:`check_response` writes nothing: it returns the checked body with what the audit record
should say (:class:`CheckedResponse`), and the front door puts that in the record.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cds_hooks.card_contract import action_problems, card_problems
from rules.codes import Indicator, Topic
from service.hooks.cards import RECOMMENDATION_SYSTEM

__all__ = [
    "FALLBACK_SUMMARY",
    "CheckedResponse",
    "check_response",
    "fallback_red_flag_card",
    "is_red_flag",
]

RED_FLAG_TOPIC = Topic.URGENT_REFERRAL
FALLBACK_SUMMARY = "Red flag found: assess this patient in person now."
FALLBACK_DETAIL = (
    "A red-flag recommendation could not be shown in full because it failed the service's "
    "response checks. Assess the patient in person now; the call is recorded in the audit trail."
)


@dataclass(frozen=True)
class CheckedResponse:
    """The response to send, the audit notes of what the check changed, and per card uuid the
    outcome of a card that failed (the ``check`` of its entry in the audit record)."""

    body: dict[str, Any]
    notes: tuple[str, ...] = ()
    checks: Mapping[str, str] = field(default_factory=dict)


def is_red_flag(card: object, entry: Mapping[str, Any] | None = None) -> bool:
    """Whether a card (or the recommendation behind it) is a red flag: critical or urgent referral."""
    if entry is not None and (
        entry.get("indicator") == Indicator.CRITICAL or entry.get("topic") == RED_FLAG_TOPIC
    ):
        return True
    if not isinstance(card, Mapping):
        return False
    source = card.get("source")
    topic = source.get("topic") if isinstance(source, Mapping) else None
    code = topic.get("code") if isinstance(topic, Mapping) else None
    return card.get("indicator") == Indicator.CRITICAL or code == RED_FLAG_TOPIC


def fallback_red_flag_card(card: object) -> dict[str, Any]:
    """A minimal critical card that always passes the checks, keeping the card's uuid if it can."""
    card_uuid = card.get("uuid") if isinstance(card, Mapping) else None
    return {
        "uuid": card_uuid if isinstance(card_uuid, str) and card_uuid else str(uuid.uuid4()),
        "summary": FALLBACK_SUMMARY,
        "detail": FALLBACK_DETAIL,
        "indicator": Indicator.CRITICAL.value,
        "source": {
            "label": "calf-cds safety fallback",
            "topic": {
                "system": RECOMMENDATION_SYSTEM,
                "code": RED_FLAG_TOPIC.value,
                "display": RED_FLAG_TOPIC.display,
            },
        },
    }


def check_response(body: dict[str, Any], entries: Sequence[Mapping[str, Any]] = ()) -> CheckedResponse:
    """``body`` with every failing card dropped (or, for a red flag, replaced).

    ``entries`` are the audit record's card entries (``uuid``, ``topic``, ``indicator``): a card
    broken beyond recognition is still known as a red flag by the recommendation behind it.
    """
    cards = body.get("cards")
    if not isinstance(cards, list):
        return CheckedResponse(
            {**body, "cards": []}, ("response check: cards was not an array; answered with no cards",)
        )
    by_uuid = {entry.get("uuid"): entry for entry in entries if entry.get("uuid")}
    notes: list[str] = []
    checks: dict[str, str] = {}
    kept: list[Any] = []
    for index, card in enumerate(cards):
        problems = card_problems(card)
        if not problems:
            kept.append(card)
            continue
        card_uuid = card.get("uuid") if isinstance(card, Mapping) else None
        entry = by_uuid.get(card_uuid)
        shown = "; ".join(problems[:5])
        if is_red_flag(card, entry):
            kept.append(fallback_red_flag_card(card))
            outcome = "replaced by the minimal red-flag card"
        else:
            outcome = "dropped"
        notes.append(f"response check: card {index} ({card_uuid or 'no uuid'}) {outcome}: {shown}")
        if entry is not None:
            checks[str(card_uuid)] = f"{outcome}: {shown}"
    actions = body.get("systemActions", [])
    checked: dict[str, Any] = {**body, "cards": kept}
    if actions:
        bad = [p for i, a in enumerate(actions) for p in action_problems(a, f"/systemActions/{i}")]
        if bad:
            notes.append("response check: systemActions dropped: " + "; ".join(bad[:5]))
            checked.pop("systemActions")
    return CheckedResponse(checked, tuple(notes), checks)
