"""CDS Hooks feedback: parse and check a feedback request, and write its entries off the response path.

Each entry becomes one ``feedback`` row, linked to the audited card by its uuid (``hook_cards``):
the call it came from, the rule, the pack version and the card topic. The CDS Hooks specification
asks a service to accept feedback about any card, so an entry whose card is not (yet) in the audit
trail is stored all the same, with ``call_id`` empty and a note; it is linked later, when the
call's own record arrives (after a database outage the two may be written in either order).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, and_, insert, select, update

from cds_hooks.models import FeedbackCoding, FeedbackEntry, FeedbackRequest
from service.governance.errors import FeedbackError
from service.hooks.cards import OVERRIDE_DISPLAYS, OVERRIDE_SYSTEM
from service.store.schema import feedback, hook_cards
from service.store.writers import AuditWriter

__all__ = [
    "UNLINKED_NOTE",
    "FeedbackWriter",
    "feedback_records",
    "override_display",
    "parse_feedback",
    "relink",
]

UNLINKED_NOTE = "card not in the audit trail when the feedback was written"


def override_display(reason: FeedbackCoding) -> str | None:
    """The reason's display; when the client sent only a code (the CDS Hooks Sandbox does), the
    display of that code among the ``overrideReasons`` our cards offer, if it is one of them."""
    if reason.display:
        return reason.display
    if reason.system not in (None, OVERRIDE_SYSTEM):
        return None
    return OVERRIDE_DISPLAYS.get(reason.code)


def _instant(text: str, pointer: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))  # RFC 3339 allows t and z
    except ValueError:
        raise FeedbackError("outcomeTimestamp is not an ISO 8601 instant", pointer=pointer) from None
    if value.tzinfo is None:
        raise FeedbackError("outcomeTimestamp needs a time zone (an instant)", pointer=pointer)
    return value


def parse_feedback(document: Mapping[str, Any]) -> list[FeedbackEntry]:
    """The entries of a feedback request; raises :class:`~service.governance.errors.FeedbackError` for anything invalid."""
    try:
        request = FeedbackRequest.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        pointer = "/" + "/".join(str(part) for part in first.get("loc", ()))
        reason = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise FeedbackError(f"invalid feedback at {pointer}: {reason}", pointer=pointer) from None
    for index, entry in enumerate(request.feedback):
        here = f"/feedback/{index}"
        _instant(entry.outcome_timestamp, f"{here}/outcomeTimestamp")
        if entry.outcome == "overridden" and entry.accepted_suggestions:
            raise FeedbackError(
                "an overridden card has no acceptedSuggestions", pointer=f"{here}/acceptedSuggestions"
            )
        if entry.outcome == "accepted" and entry.override_reason is not None:
            raise FeedbackError("an accepted card has no overrideReason", pointer=f"{here}/overrideReason")
    return list(request.feedback)


def feedback_records(
    entries: list[FeedbackEntry], *, service_id: str, received_at: datetime, client: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """JSON-ready records (spoolable) for :class:`FeedbackWriter`; never anything secret."""
    records = []
    for entry in entries:
        reason = entry.override_reason.reason if entry.override_reason else None
        records.append(
            {
                "feedback_id": str(uuid.uuid4()),
                "received_at": received_at.isoformat(),
                "service_id": service_id,
                "card_uuid": entry.card,
                "outcome": entry.outcome,
                "accepted_suggestions": [s.id for s in entry.accepted_suggestions],
                "override_reason_system": reason.system if reason else None,
                "override_reason_code": reason.code if reason else None,
                "override_reason_display": override_display(reason) if reason else None,
                "user_comment": entry.override_reason.user_comment if entry.override_reason else None,
                "outcome_timestamp": _instant(entry.outcome_timestamp, "").isoformat(),
                "client": dict(client),
            }
        )
    return records


def _row(record: Mapping[str, Any], card: Mapping[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {column.name: record.get(column.name) for column in feedback.columns}
    for name in ("received_at", "outcome_timestamp"):
        value = row[name]
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value)
    notes = []
    if card is None:
        notes.append(UNLINKED_NOTE)
    else:
        row.update(
            call_id=card["call_id"],
            pack_id=card["pack_id"],
            pack_version=card["pack_version"],
            rule_id=card["rule_id"],
            topic=card["topic"],
        )
        offered = set(card["suggestions"] or ())
        unknown = [s for s in record.get("accepted_suggestions", ()) if s not in offered]
        if unknown:
            notes.append("accepted suggestion(s) not offered on this card: " + ", ".join(unknown))
    row["note"] = "; ".join(notes) or None
    return row


class FeedbackWriter(AuditWriter):
    """Writes feedback records like call records: batched, off the response path, spooled on failure."""

    key = "feedback_id"
    table = feedback
    spool_name = "feedback-spool.jsonl"

    def store(self, connection: Connection, records: Sequence[Mapping[str, Any]]) -> None:
        uuids = list({record["card_uuid"] for record in records})
        cards: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(uuids), 500):
            query = select(hook_cards).where(hook_cards.c.card_uuid.in_(uuids[start : start + 500]))
            cards.update({row["card_uuid"]: row for row in connection.execute(query).mappings()})
        connection.execute(insert(feedback), [_row(r, cards.get(r["card_uuid"])) for r in records])
        relink(connection)


def relink(connection: Connection) -> int:
    """Link feedback stored before its card's call record arrived; returns how many were linked."""
    card = select(hook_cards).where(hook_cards.c.card_uuid == feedback.c.card_uuid)

    def pick(column: str) -> Any:
        return card.with_only_columns(hook_cards.c[column]).scalar_subquery()

    orphans = and_(
        feedback.c.call_id.is_(None),
        feedback.c.card_uuid.in_(select(hook_cards.c.card_uuid)),
    )
    result = connection.execute(
        update(feedback)
        .where(orphans)
        .values(
            call_id=pick("call_id"),
            pack_id=pick("pack_id"),
            pack_version=pick("pack_version"),
            rule_id=pick("rule_id"),
            topic=pick("topic"),
            note=None,
        )
    )
    return result.rowcount
