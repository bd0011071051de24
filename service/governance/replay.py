"""Replay audited calls with a candidate pack: which decisions would change (``calf-cds rules replay``).

Each successful call's audit row keeps the facts the rules read, as JSON ``name → {value,
evidence}`` (documented facts only). They are rebuilt into :class:`~fhir_mappings.facts.Facts`
(values typed by the vocabulary; a fact's date is its newest evidence date, as the mapper sets
it) and evaluated with the candidate. The *decision* of a call is its cards' topics and
indicators; every call whose decision differs from what was shown is listed.

As a check on the rebuild itself, a call whose own pack version is still known (same content
hash) is re-evaluated with that pack too: if that does not reproduce the cards that were shown,
the call is counted as *not reproducible* (for example, a fact the vocabulary no longer has).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from fhir_mappings.facts import Evidence, Fact, Facts, Vocabulary
from rules.engine import evaluate
from rules.pack import RulePack
from service.store.schema import hook_calls

__all__ = [
    "Decision",
    "ReplayReport",
    "ReplayedCall",
    "aware",
    "changes",
    "decision_of",
    "decision_of_cards",
    "describe",
    "rebuild_facts",
    "replay",
]

Decision = tuple[tuple[str, str], ...]  # sorted (topic, indicator) pairs of the cards shown


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; the audit trail writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def describe(decision: Decision) -> str:
    if not decision:
        return "no cards"
    return ", ".join(f"{topic} ({indicator})" for topic, indicator in decision)


def changes(before: Decision, after: Decision) -> list[str]:
    """What the candidate would do differently, topic by topic."""
    old, new = Counter(before), Counter(after)
    old_topics = dict(before)
    new_topics = dict(after)
    words = []
    for topic in sorted(set(old_topics) | set(new_topics)):
        if topic not in old_topics:
            words.append(f"adds {topic} ({new_topics[topic]})")
        elif topic not in new_topics:
            words.append(f"removes {topic} ({old_topics[topic]})")
        elif old_topics[topic] != new_topics[topic]:
            words.append(f"{topic}: {old_topics[topic]} → {new_topics[topic]}")
        elif old[(topic, old_topics[topic])] != new[(topic, new_topics[topic])]:
            words.append(
                f"{topic}: {old[(topic, old_topics[topic])]} → {new[(topic, new_topics[topic])]} cards"
            )
    return words


def _parse_when(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return aware(datetime.fromisoformat(text))
    except ValueError:
        return None


def rebuild_facts(stored: Mapping[str, Any], vocabulary: Vocabulary) -> tuple[Facts, list[str]]:
    """Facts from an audit row's ``facts`` JSON, and the names it held that the vocabulary lacks."""
    types = vocabulary.types()
    facts: dict[str, Fact] = {}
    unknown = []
    for name, entry in stored.items():
        if name not in types or not isinstance(entry, Mapping):
            unknown.append(name)
            continue
        kind = types[name][0]
        value = entry.get("value")
        if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        elif kind == "boolean" and not isinstance(value, bool):
            value = None
        elif kind == "code" and value is not None:
            value = str(value)
        evidence = tuple(
            Evidence(
                reference=str(item.get("reference", "")),
                label=str(item.get("label", "")),
                value=str(item.get("value", "")),
                when=_parse_when(item.get("when")),
                laterality=item.get("laterality"),
                status=item.get("status"),
            )
            for item in entry.get("evidence", ())
            if isinstance(item, Mapping)
        )
        dates = [item.when for item in evidence if item.when is not None]
        facts[name] = Fact(name, value, evidence, max(dates) if dates else None)
    return Facts(by_name=facts, declared=frozenset(types)), unknown


def decision_of_cards(cards: Iterable[Mapping[str, Any]]) -> Decision:
    return tuple(sorted((str(c.get("topic")), str(c.get("indicator"))) for c in cards))


def decision_of(pack: RulePack, facts: Facts, hook: str = "patient-view") -> tuple[Decision, tuple[str, ...]]:
    """The candidate's decision on ``facts`` for a call of ``hook``, and the ids of the rules behind it."""
    assessment = evaluate(pack, facts, hook=hook)
    recommendations = assessment.recommendations
    decision = tuple(sorted((r.topic, r.indicator) for r in recommendations))
    return decision, tuple(r.rule_id for r in recommendations)


@dataclass(frozen=True)
class ReplayedCall:
    call_id: str
    received_at: datetime
    patient_id: str | None
    pack_version: str | None
    before: Decision
    after: Decision
    rules: tuple[str, ...]
    reproduced: bool | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "received_at": self.received_at.isoformat(),
            "patient_id": self.patient_id,
            "pack_version": self.pack_version,
            "before": [list(pair) for pair in self.before],
            "after": [list(pair) for pair in self.after],
            "candidate_rules": list(self.rules),
            "changes": changes(self.before, self.after),
            "reproduced": self.reproduced,
        }


@dataclass
class ReplayReport:
    candidate: str
    candidate_hash: str
    since: datetime | None
    replayed: int = 0
    changed: list[ReplayedCall] = field(default_factory=list)
    not_reproduced: list[str] = field(default_factory=list)
    unknown_facts: Counter[str] = field(default_factory=Counter)
    skipped_hooks: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "candidate_hash": self.candidate_hash,
            "since": self.since.isoformat() if self.since else None,
            "replayed": self.replayed,
            "skipped_hooks": dict(self.skipped_hooks),
            "changed": [call.to_json() for call in self.changed],
            "not_reproduced": self.not_reproduced,
            "unknown_facts": dict(self.unknown_facts),
        }

    def render(self) -> str:
        period = f" since {self.since:%Y-%m-%d}" if self.since else ""
        lines = [
            f"Replay of {self.candidate} ({self.candidate_hash[:19]}…) on audited calls{period}",
            f"{self.replayed} calls replayed; {len(self.changed)} decisions would change; "
            f"{self.replayed - len(self.changed)} unchanged.",
        ]
        if self.skipped_hooks:
            skipped = ", ".join(f"{hook} ({count})" for hook, count in sorted(self.skipped_hooks.items()))
            lines.append(f"Not replayed, a hook the candidate does not answer: {skipped}")
        if self.not_reproduced:
            lines.append(
                f"Warning: {len(self.not_reproduced)} calls did not reproduce their own cards from the "
                "audited facts; their replay is less certain: " + ", ".join(self.not_reproduced[:10])
            )
        if self.unknown_facts:
            names = ", ".join(f"{n} ({c})" for n, c in self.unknown_facts.most_common(10))
            lines.append(f"Facts in the audit trail that the vocabulary no longer has: {names}")
        if self.changed:
            lines.append("")
        for call in self.changed:
            lines.append(
                f"{call.received_at:%Y-%m-%d %H:%M} call {call.call_id} patient {call.patient_id or '?'} "
                f"(shown by {call.pack_version or '?'}): {'; '.join(changes(call.before, call.after))}"
            )
            lines.append(f"    before: {describe(call.before)}")
            lines.append(f"    after:  {describe(call.after)}")
        return "\n".join(lines) + "\n"


def replay(
    engine: Engine,
    candidate: RulePack,
    vocabulary: Vocabulary,
    *,
    known_packs: Mapping[str, RulePack] | None = None,
    since: datetime | None = None,
) -> ReplayReport:
    """Re-evaluate every successful audited call of ``candidate``'s pack id since ``since``, each for
    its own hook; a call of a hook the candidate does not answer is skipped and counted."""
    report = ReplayReport(candidate.key, candidate.content_hash, since)
    packs = known_packs or {}
    query = (
        select(
            hook_calls.c.call_id,
            hook_calls.c.received_at,
            hook_calls.c.hook,
            hook_calls.c.patient_id,
            hook_calls.c.pack_id,
            hook_calls.c.pack_version,
            hook_calls.c.pack_hash,
            hook_calls.c.facts,
            hook_calls.c.cards,
        )
        .where(hook_calls.c.status_code == 200, hook_calls.c.pack_id == candidate.id)
        .order_by(hook_calls.c.received_at, hook_calls.c.call_id)
    )
    if since is not None:
        query = query.where(hook_calls.c.received_at >= since)
    with engine.connect() as connection:
        answered = {"patient-view", *candidate.hooks()}
        for row in connection.execution_options(yield_per=500).execute(query).mappings():
            hook = str(row["hook"] or "patient-view")
            if hook not in answered:
                report.skipped_hooks[hook] += 1
                continue
            stored = row["facts"] if not isinstance(row["facts"], str) else json.loads(row["facts"])
            facts, unknown = rebuild_facts(stored or {}, vocabulary)
            report.unknown_facts.update(unknown)
            before = decision_of_cards(row["cards"] or ())
            after, rules = decision_of(candidate, facts, hook)
            original = packs.get(f"{row['pack_id']}@{row['pack_version']}")
            reproduced = None
            if original is not None and original.content_hash == row["pack_hash"]:
                reproduced = decision_of(original, facts, hook)[0] == before
                if not reproduced:
                    report.not_reproduced.append(row["call_id"])
            report.replayed += 1
            call = ReplayedCall(
                call_id=row["call_id"],
                received_at=aware(row["received_at"]),
                patient_id=row["patient_id"],
                pack_version=row["pack_version"],
                before=before,
                after=after,
                rules=rules,
                reproduced=reproduced,
            )
            if call.changed:
                report.changed.append(call)
    return report
