"""The last check before a response leaves: every card against the CDS Hooks 2.0.1 rules.

`card_problems(card)` lists what is wrong with one card, each problem with its JSON pointer:

- `summary` a non-empty string under 140 characters; `indicator` info, warning or critical;
  `source` with a non-empty `label` (and absolute `url`/`icon`, a `topic` Coding with a `code`);
  `detail` and `uuid` strings when present;
- `suggestions`: each with a `label`; `actions` each with a `type` (create, update, delete) and a
  `description`, a `resource` object for create and update; `selectionBehavior` (at-most-one or
  any) present exactly when there are suggestions;
- `overrideReasons`: Codings with `code` and `display` (the client shows `display`);
- `links`: `label`, absolute `url`, `type` absolute or smart, `appContext` only on smart links;
- nowhere a null, an empty string, an empty list or an empty object.

`check_response(body, record)` applies it to a whole response: a card that fails is dropped and
the drop is audited (`record.notes`, and `check` on the card's entry in `record.cards`), except a
red-flag card, which is replaced by `fallback_red_flag_card` — a minimal, valid critical card —
because a red flag must never disappear.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from service.hooks.cards import RECOMMENDATION_SYSTEM, TOPIC_DISPLAY
from service.hooks.pipeline import CallRecord

__all__ = [
    "ACTION_TYPES",
    "FALLBACK_DETAIL",
    "FALLBACK_SUMMARY",
    "INDICATORS",
    "LINK_TYPES",
    "RED_FLAG_TOPIC",
    "SELECTION_BEHAVIORS",
    "action_problems",
    "card_problems",
    "check_response",
    "fallback_red_flag_card",
    "is_red_flag",
]

INDICATORS = frozenset({"info", "warning", "critical"})
ACTION_TYPES = frozenset({"create", "update", "delete"})
SELECTION_BEHAVIORS = frozenset({"at-most-one", "any"})
LINK_TYPES = frozenset({"absolute", "smart"})
RED_FLAG_TOPIC = "urgent-referral"
FALLBACK_SUMMARY = "Red flag found: assess this patient in person now."
FALLBACK_DETAIL = (
    "A red-flag recommendation could not be shown in full because it failed the service's "
    "response checks. Assess the patient in person now; the call is recorded in the audit trail."
)


def _is_absolute(url: object) -> bool:
    return isinstance(url, str) and url.startswith(("https://", "http://")) and len(url) > 8


def _empty_values(value: Any, pointer: str) -> Iterator[str]:
    if value is None or value == "" or value == [] or value == {}:
        yield f"{pointer}: null or empty"
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _empty_values(item, f"{pointer}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _empty_values(item, f"{pointer}/{index}")


def _coding_problems(coding: object, pointer: str, *, display_required: bool) -> Iterator[str]:
    if not isinstance(coding, Mapping):
        yield f"{pointer}: not a Coding object"
        return
    if not isinstance(coding.get("code"), str):
        yield f"{pointer}/code: required string"
    for key in ("system", "display"):
        if key in coding and not isinstance(coding[key], str):
            yield f"{pointer}/{key}: not a string"
    if display_required and not isinstance(coding.get("display"), str):
        yield f"{pointer}/display: required on an override reason"


def _list(card: Mapping[str, Any], key: str, problems: list[str]) -> list[Any]:
    value = card.get(key, [])
    if not isinstance(value, list):
        problems.append(f"/{key}: not an array")
        return []
    return value


def action_problems(action: object, pointer: str) -> Iterator[str]:
    if not isinstance(action, Mapping):
        yield f"{pointer}: not an object"
        return
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        yield f"{pointer}/type: must be create, update or delete"
    if not isinstance(action.get("description"), str):
        yield f"{pointer}/description: required string"
    resource = action.get("resource")
    if kind in ("create", "update") and not (
        isinstance(resource, Mapping) and isinstance(resource.get("resourceType"), str)
    ):
        yield f"{pointer}/resource: a {kind} action needs a FHIR resource"
    if "resourceId" in action and not isinstance(action["resourceId"], str | list):
        yield f"{pointer}/resourceId: not a reference"


def _source_problems(source: object) -> Iterator[str]:
    if not isinstance(source, Mapping):
        yield "/source: required object"
        return
    if not isinstance(source.get("label"), str):
        yield "/source/label: required string"
    for key in ("url", "icon"):
        if key in source and not _is_absolute(source[key]):
            yield f"/source/{key}: not an absolute URL"
    if "topic" in source:
        yield from _coding_problems(source["topic"], "/source/topic", display_required=False)


def _suggestion_problems(card: Mapping[str, Any], problems: list[str]) -> None:
    suggestions = _list(card, "suggestions", problems)
    behavior = card.get("selectionBehavior")
    if suggestions and behavior not in SELECTION_BEHAVIORS:
        problems.append("/selectionBehavior: required with suggestions (at-most-one or any)")
    if not suggestions and "selectionBehavior" in card:
        problems.append("/selectionBehavior: given without suggestions")
    for index, suggestion in enumerate(suggestions):
        pointer = f"/suggestions/{index}"
        if not isinstance(suggestion, Mapping):
            problems.append(f"{pointer}: not an object")
            continue
        if not isinstance(suggestion.get("label"), str):
            problems.append(f"{pointer}/label: required string")
        if "uuid" in suggestion and not isinstance(suggestion["uuid"], str):
            problems.append(f"{pointer}/uuid: not a string")
        if "isRecommended" in suggestion and not isinstance(suggestion["isRecommended"], bool):
            problems.append(f"{pointer}/isRecommended: not a boolean")
        actions = suggestion.get("actions", [])
        if not isinstance(actions, list):
            problems.append(f"{pointer}/actions: not an array")
            continue
        for number, action in enumerate(actions):
            problems.extend(action_problems(action, f"{pointer}/actions/{number}"))


def _link_problems(card: Mapping[str, Any], problems: list[str]) -> None:
    for index, link in enumerate(_list(card, "links", problems)):
        pointer = f"/links/{index}"
        if not isinstance(link, Mapping):
            problems.append(f"{pointer}: not an object")
            continue
        if not isinstance(link.get("label"), str):
            problems.append(f"{pointer}/label: required string")
        if not _is_absolute(link.get("url")):
            problems.append(f"{pointer}/url: required absolute URL")
        if link.get("type") not in LINK_TYPES:
            problems.append(f"{pointer}/type: must be absolute or smart")
        if "appContext" in link and (link.get("type") != "smart" or not isinstance(link["appContext"], str)):
            problems.append(f"{pointer}/appContext: only a string, and only on a smart link")
        if "autolaunchable" in link and not isinstance(link["autolaunchable"], bool):
            problems.append(f"{pointer}/autolaunchable: not a boolean")


def card_problems(card: object) -> list[str]:
    """Everything that makes `card` break the CDS Hooks card rules (empty when it is fine)."""
    if not isinstance(card, Mapping):
        return ["/: a card must be a JSON object"]
    problems = list(_empty_values(card, ""))
    summary = card.get("summary")
    if not isinstance(summary, str):
        problems.append("/summary: required string")
    elif len(summary) >= 140:
        problems.append("/summary: must be under 140 characters")
    if card.get("indicator") not in INDICATORS:
        problems.append("/indicator: must be info, warning or critical")
    for key in ("uuid", "detail"):
        if key in card and not isinstance(card[key], str):
            problems.append(f"/{key}: not a string")
    problems.extend(_source_problems(card.get("source")))
    _suggestion_problems(card, problems)
    for index, reason in enumerate(_list(card, "overrideReasons", problems)):
        problems.extend(_coding_problems(reason, f"/overrideReasons/{index}", display_required=True))
    _link_problems(card, problems)
    return problems


def is_red_flag(card: object, entry: Mapping[str, Any] | None = None) -> bool:
    """Whether a card (or the recommendation behind it) is a red flag: critical or urgent referral."""
    if entry is not None and (entry.get("indicator") == "critical" or entry.get("topic") == RED_FLAG_TOPIC):
        return True
    if not isinstance(card, Mapping):
        return False
    source = card.get("source")
    topic = source.get("topic") if isinstance(source, Mapping) else None
    code = topic.get("code") if isinstance(topic, Mapping) else None
    return card.get("indicator") == "critical" or code == RED_FLAG_TOPIC


def fallback_red_flag_card(card: object) -> dict[str, Any]:
    """A minimal critical card that always passes the checks, keeping the card's uuid if it can."""
    card_uuid = card.get("uuid") if isinstance(card, Mapping) else None
    return {
        "uuid": card_uuid if isinstance(card_uuid, str) and card_uuid else str(uuid.uuid4()),
        "summary": FALLBACK_SUMMARY,
        "detail": FALLBACK_DETAIL,
        "indicator": "critical",
        "source": {
            "label": "calf-cds safety fallback",
            "topic": {
                "system": RECOMMENDATION_SYSTEM,
                "code": RED_FLAG_TOPIC,
                "display": TOPIC_DISPLAY[RED_FLAG_TOPIC],
            },
        },
    }


def check_response(body: dict[str, Any], record: CallRecord) -> dict[str, Any]:
    """`body` with every failing card dropped (or, for a red flag, replaced); audited in `record`."""
    cards = body.get("cards")
    if not isinstance(cards, list):
        record.notes.append("response check: cards was not an array; answered with no cards")
        return {**body, "cards": []}
    entries = {
        entry.get("uuid"): entry for entry in record.cards if isinstance(entry, dict) and entry.get("uuid")
    }
    kept: list[Any] = []
    for index, card in enumerate(cards):
        problems = card_problems(card)
        if not problems:
            kept.append(card)
            continue
        card_uuid = card.get("uuid") if isinstance(card, Mapping) else None
        entry = entries.get(card_uuid)
        shown = "; ".join(problems[:5])
        if is_red_flag(card, entry):
            kept.append(fallback_red_flag_card(card))
            outcome = "replaced by the minimal red-flag card"
        else:
            outcome = "dropped"
        record.notes.append(f"response check: card {index} ({card_uuid or 'no uuid'}) {outcome}: {shown}")
        if entry is not None:
            entry["check"] = f"{outcome}: {shown}"
    actions = body.get("systemActions", [])
    checked: dict[str, Any] = {**body, "cards": kept}
    if actions:
        bad = [p for i, a in enumerate(actions) for p in action_problems(a, f"/systemActions/{i}")]
        if bad:
            record.notes.append("response check: systemActions dropped: " + "; ".join(bad[:5]))
            checked.pop("systemActions")
    return checked
