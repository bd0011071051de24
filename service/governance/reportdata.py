"""The numbers behind the governance report, read from the audit trail (SQLite or PostgreSQL alike).

Feedback is joined to its card through ``hook_cards`` by card uuid at read time, so an entry
written before its call (after an outage) still counts for the right rule version. A card's
outcome is its latest feedback (a card may be acted on after it was first ignored).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from rules.pack import content_hash
from service.governance.catalogue import Catalogue
from service.governance.replay import Decision, aware, changes, decision_of_cards
from service.store.schema import feedback, hook_calls, hook_cards

__all__ = ["Override", "PackEntry", "ReportData", "RuleStat", "ShadowStat", "catalogue_entries", "collect"]


@dataclass(frozen=True)
class PackEntry:
    key: str
    document: Mapping[str, Any]
    content_hash: str
    status: str
    released: date | None
    retired: date | None
    retired_reason: str | None
    role: str  # "active", "shadow" or ""


@dataclass
class RuleStat:
    pack_version: str
    rule_id: str
    topic: str
    shown: int = 0
    accepted: int = 0
    overridden: int = 0

    @property
    def label(self) -> str:
        return f"{self.rule_id} @ {self.pack_version}"


@dataclass(frozen=True)
class Override:
    at: datetime
    rule: str
    reason: str
    comment: str | None


@dataclass
class ShadowStat:
    key: str
    compared: int = 0
    disagreed: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[datetime, str, Decision, Decision]] = field(default_factory=list)


@dataclass
class ReportData:
    generated_at: datetime
    since: datetime | None
    calls: int = 0
    failed_calls: int = 0
    cards_by_period: dict[str, Counter[str]] = field(default_factory=dict)
    period_unit: str = "day"
    rules: list[RuleStat] = field(default_factory=list)
    feedback_entries: int = 0
    unlinked_feedback: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    overrides: list[Override] = field(default_factory=list)
    shadows: dict[str, ShadowStat] = field(default_factory=dict)
    catalogue: list[PackEntry] = field(default_factory=list)

    @property
    def cards(self) -> int:
        return sum(sum(c.values()) for c in self.cards_by_period.values())


def catalogue_entries(catalogue: Catalogue, *, active: str, shadows: tuple[str, ...]) -> list[PackEntry]:
    entries = []
    for key in catalogue.ordered():
        document = catalogue.sources[key].document
        release = catalogue.manifest.releases.get(key)
        entries.append(
            PackEntry(
                key=key,
                document=document,
                content_hash=content_hash(document),
                status=catalogue.manifest.status(key),
                released=release.released if release else None,
                retired=release.retired if release else None,
                retired_reason=release.retired_reason if release else None,
                role="active" if key == active else "shadow" if key in shadows else "",
            )
        )
    return entries


def _periods(first: date, last: date) -> tuple[str, list[date]]:
    """Days when the span is short, ISO weeks (Mondays) when it is long."""
    if (last - first).days <= 62:
        return "day", [first + timedelta(days=i) for i in range((last - first).days + 1)]
    start = first - timedelta(days=first.weekday())
    weeks = []
    while start <= last:
        weeks.append(start)
        start += timedelta(days=7)
    return "week", weeks


def _bucket(day: date, unit: str) -> date:
    return day - timedelta(days=day.weekday()) if unit == "week" else day


def collect(
    engine: Engine,
    catalogue: Catalogue,
    *,
    active: str,
    shadows: tuple[str, ...],
    since: datetime | None,
    now: datetime,
) -> ReportData:
    data = ReportData(generated_at=now, since=since)
    data.catalogue = catalogue_entries(catalogue, active=active, shadows=shadows)
    with engine.connect() as connection:
        _calls(connection, data, since)
        _cards(connection, data, since, now)
        _feedback(connection, data, since)
    return data


def _calls(connection: Any, data: ReportData, since: datetime | None) -> None:
    query = select(hook_calls.c.status_code, func.count()).group_by(hook_calls.c.status_code)
    if since is not None:
        query = query.where(hook_calls.c.received_at >= since)
    for status, count in connection.execute(query):
        data.calls += count
        if status != 200:
            data.failed_calls += count
    shadow_query = select(
        hook_calls.c.call_id, hook_calls.c.received_at, hook_calls.c.cards, hook_calls.c.shadow
    ).where(hook_calls.c.status_code == 200)
    if since is not None:
        shadow_query = shadow_query.where(hook_calls.c.received_at >= since)
    for row in connection.execution_options(yield_per=500).execute(shadow_query).mappings():
        if not row["shadow"]:
            continue
        shown = decision_of_cards(row["cards"] or ())
        for result in row["shadow"]:
            key = f"{result.get('pack_id')}@{result.get('pack_version')}"
            stat = data.shadows.setdefault(key, ShadowStat(key))
            stat.compared += 1
            candidate = decision_of_cards(result.get("recommendations", ()))
            if candidate != shown:
                stat.disagreed += 1
                stat.kinds.update(changes(shown, candidate))
                stat.examples.append((aware(row["received_at"]), row["call_id"], shown, candidate))
    for stat in data.shadows.values():
        stat.examples = sorted(stat.examples, key=lambda e: e[0], reverse=True)[:15]


def _cards(connection: Any, data: ReportData, since: datetime | None, now: datetime) -> None:
    query = select(
        hook_cards.c.received_at, hook_cards.c.topic, hook_cards.c.pack_version, hook_cards.c.rule_id
    )
    if since is not None:
        query = query.where(hook_cards.c.received_at >= since)
    days: list[tuple[date, str]] = []
    stats: dict[tuple[str, str], RuleStat] = {}
    for received_at, topic, version, rule_id in connection.execution_options(yield_per=2000).execute(query):
        days.append((aware(received_at).date(), topic or "?"))
        key = (version or "?", rule_id or "?")
        stat = stats.setdefault(key, RuleStat(version or "?", rule_id or "?", topic or "?"))
        stat.shown += 1
    data.rules = sorted(stats.values(), key=lambda s: (s.rule_id, s.pack_version))
    if not days:
        return
    first = since.date() if since else min(day for day, _ in days)
    last = max(now.date(), max(day for day, _ in days))
    data.period_unit, periods = _periods(first, last)
    counts: dict[date, Counter[str]] = defaultdict(Counter)
    for day, topic in days:
        counts[_bucket(day, data.period_unit)][topic] += 1
    data.cards_by_period = {period.isoformat(): counts.get(period, Counter()) for period in periods}


def _feedback(connection: Any, data: ReportData, since: datetime | None) -> None:
    query = (
        select(
            feedback.c.card_uuid,
            feedback.c.outcome,
            feedback.c.outcome_timestamp,
            feedback.c.received_at,
            feedback.c.override_reason_code,
            feedback.c.override_reason_display,
            feedback.c.user_comment,
            func.coalesce(hook_cards.c.pack_version, feedback.c.pack_version).label("pack_version"),
            func.coalesce(hook_cards.c.rule_id, feedback.c.rule_id).label("rule_id"),
            func.coalesce(hook_cards.c.topic, feedback.c.topic).label("topic"),
            hook_cards.c.received_at.label("card_received_at"),
        )
        .select_from(feedback.outerjoin(hook_cards, hook_cards.c.card_uuid == feedback.c.card_uuid))
        .order_by(feedback.c.outcome_timestamp)
    )
    latest: dict[str, Mapping[str, Any]] = {}
    for row in connection.execute(query).mappings():
        received = aware(row["received_at"])
        in_period = since is None or received >= since
        if in_period:
            data.feedback_entries += 1
            if row["rule_id"] is None:
                data.unlinked_feedback += 1
            if row["outcome"] == "overridden":
                reason = row["override_reason_display"] or row["override_reason_code"] or "(no reason given)"
                data.reasons[reason] += 1
                rule = f"{row['rule_id']} @ {row['pack_version']}" if row["rule_id"] else "(unknown card)"
                data.overrides.append(Override(received, rule, reason, row["user_comment"]))
        card_time = row["card_received_at"]
        if row["rule_id"] is not None and (
            since is None or (card_time is not None and aware(card_time) >= since)
        ):
            latest[row["card_uuid"]] = row
    data.overrides = sorted(data.overrides, key=lambda o: o.at, reverse=True)[:20]
    stats = {(s.pack_version, s.rule_id): s for s in data.rules}
    for row in latest.values():
        stat = stats.get((row["pack_version"], row["rule_id"]))
        if stat is None:
            continue
        if row["outcome"] == "accepted":
            stat.accepted += 1
        elif row["outcome"] == "overridden":
            stat.overridden += 1
