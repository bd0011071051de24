"""From candidate values to facts: the most recent value wins, per leg for per-leg facts.

A preliminary positive more recent than the final result still rules in; among records of the
same moment a True wins (fail-safe). An unsided record of a per-leg finding is read by the fact's
``unsided`` rule: ``both`` puts a True on both legs, ``none`` on neither (the leg-less fact still
holds it); ``<name>_side_unrecorded`` then says whether the winning True record had no side.
An unsided False never says "absent on the left/right": it only sets the leg-less fact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fhir_mappings.facts import LEGS, Evidence, Fact, FactSpec

__all__ = ["SIDE_NOT_RECORDED", "Candidate", "select", "winner"]

SIDE_NOT_RECORDED = "side not recorded"
_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Candidate:
    value: bool | float | str
    when: datetime | None
    laterality: str | None
    final: bool
    evidence: Evidence


def select(spec: FactSpec, found: Sequence[Candidate]) -> dict[str, Fact]:
    """Every fact ``spec`` produces, from its candidates."""
    if not spec.per_leg:
        facts = {spec.name: winner(spec.name, found)}
        if spec.unsided:
            facts.update(_side_flag(spec, facts[spec.name]))
        return facts
    buckets: dict[str, list[Candidate]] = {"left": [], "right": [], "unspecified": []}
    for candidate in found:
        side = candidate.laterality
        for leg in LEGS if side == "bilateral" else (side or "unspecified",):
            buckets[leg].append(candidate)
    unspecified = winner(spec.name, buckets["unspecified"])
    if spec.unsided and unspecified.value is True:
        # the latest unsided record is positive: possibly either leg (fail-safe). An older "absent"
        # on a side no longer says that side is clear: it is dropped; with "both" the positive
        # record is put on both legs.
        latest = next(c for c in buckets["unspecified"] if c.evidence in unspecified.evidence)
        since = latest.when or _OLDEST
        for leg in LEGS:
            buckets[leg] = [c for c in buckets[leg] if c.value is not False or (c.when or _OLDEST) > since]
            if spec.unsided == "both":
                buckets[leg].append(latest)
    facts = {f"{spec.name}_{leg}": winner(f"{spec.name}_{leg}", buckets[leg]) for leg in LEGS}
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
    if spec.unsided:
        facts.update(_side_flag(spec, unspecified))
    return facts


def _side_flag(spec: FactSpec, fact: Fact) -> dict[str, Fact]:
    name = f"{spec.name}_side_unrecorded"
    if fact.value is not True:
        return {}
    unsided = [e for e in fact.evidence if e.laterality in (None, SIDE_NOT_RECORDED)]
    return {name: Fact(name, bool(unsided), tuple(unsided) or fact.evidence, fact.when)}


def winner(name: str, found: Sequence[Candidate]) -> Fact:
    """The most recent final value; a more recent preliminary positive still rules in."""
    if not found:
        return Fact(name, None)
    ordered = sorted(found, key=lambda c: (c.when or _OLDEST, c.value is True), reverse=True)
    finals = [c for c in ordered if c.final]
    best = finals[0] if finals else ordered[0]
    for candidate in ordered:
        if not candidate.final and candidate.value is True and best.value is not True:
            if (candidate.when or _OLDEST) >= (best.when or _OLDEST):
                best = candidate
            break
    return Fact(name, best.value, (best.evidence,), best.when)


def _latest(facts: Sequence[Fact]) -> datetime | None:
    dates = [f.when for f in facts if f.when is not None]
    return max(dates) if dates else None


def _unique(evidence: Iterable[Evidence]) -> tuple[Evidence, ...]:
    return tuple(dict.fromkeys(evidence))
