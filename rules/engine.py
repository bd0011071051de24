"""Evaluate a rule pack on a patient's facts → an :class:`Assessment`.

Every rule is evaluated, then the pack's suppressions apply, then the safety invariants — which
are code, not data, so no pack can switch them off:

1. no ``conservative`` recommendation while a red flag fires or DVT work-up is recommended;
2. a red flag is always ``urgent-referral`` with indicator ``critical``;
3. a red-flag rule that fails to evaluate yields a critical card asking for an in-person check,
   never silence.

The assessment also names one overall pattern (arterial, venous, neurogenic, musculoskeletal or
indeterminate) from the pack's ordered ``patterns``; a pack without them takes the pattern of its
first card.

One call answers one hook: only the rules that answer it (``Rule.hooks``) are evaluated, and the
invariants hold on every hook. Definitions, scores and patterns are the patient's, whatever the hook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rules.codes import Indicator, Pattern, Topic
from rules.errors import RuleError
from rules.expressions import Context, FactLike, ScoreResult, Truth
from rules.pack import HOOKS, Citation, Rule, RulePack

__all__ = ["Assessment", "CriterionResult", "CriterionState", "Recommendation", "Suppression", "evaluate"]

CriterionState = Literal["met", "not met", "not documented"]
_PLACEHOLDER = re.compile(r"\{(fact|score|points|undocumented):([a-z0-9_]+)\}")


@dataclass(frozen=True, slots=True)
class CriterionResult:
    label: str
    state: CriterionState
    points: int | None = None


@dataclass(frozen=True)
class Recommendation:
    """One card-to-be, with everything needed to explain it."""

    rule_id: str
    title: str
    topic: Topic
    indicator: Indicator
    pattern: Pattern
    red_flag: bool
    summary: str
    detail: tuple[str, ...]
    citation: Citation
    suggestions: tuple[Mapping[str, Any], ...]
    links: tuple[Mapping[str, str], ...]
    evidence: tuple[str, ...]
    criteria: tuple[CriterionResult, ...] = ()
    score: ScoreResult | None = None
    fallback: bool = False


@dataclass(frozen=True)
class Suppression:
    rule_id: str
    topic: Topic
    by: str


@dataclass(frozen=True)
class Assessment:
    pack_id: str
    pack_version: str
    pack_hash: str
    recommendations: tuple[Recommendation, ...]
    suppressed: tuple[Suppression, ...] = ()
    errors: tuple[str, ...] = ()
    patterns: tuple[Pattern, ...] = field(default=())
    pattern: Pattern = Pattern.INDETERMINATE
    hook: str = "patient-view"

    def topics(self) -> list[Topic]:
        return [r.topic for r in self.recommendations]


def _state(truth: Truth) -> CriterionState:
    return "not documented" if truth is None else ("met" if truth else "not met")


def _render(text: str, context: Context) -> str:
    def replace(match: re.Match[str]) -> str:
        kind, name = match.groups()
        if kind in ("points", "undocumented") and name in context.score_items:
            result = context.score(name)
            return str(result.points if kind == "points" else result.undocumented)
        if kind == "score" and name in context.score_items:
            result = context.score(name)
            if result.minimum == result.maximum:
                return str(result.points)
            return (
                f"{result.points} (between {result.minimum} and {result.maximum} "
                "once undocumented items are known)"
            )
        if kind == "fact" and name in context.facts:
            value = context.value(name)
            return (
                "not documented"
                if value is None
                else f"{value:g}"
                if isinstance(value, float)
                else str(value)
            )
        return match.group(0)

    return _PLACEHOLDER.sub(replace, text)


def _recommend(rule: Rule, context: Context) -> Recommendation | None:
    if rule.when.evaluate(context) is not True:
        return None
    summary, detail, suggestions = rule.summary, rule.detail, rule.suggestions
    for variant in rule.variants:
        if variant.when.evaluate(context) is True:
            summary, detail, suggestions = variant.summary, variant.detail, variant.suggestions
            break
    criteria = tuple(CriterionResult(c.label, _state(c.when.evaluate(context))) for c in rule.criteria)
    score = context.score(rule.score) if rule.score else None
    if score is not None:
        criteria += tuple(
            CriterionResult(item.label, _state(truth), item.points) for item, truth in score.items
        )
    return Recommendation(
        rule_id=rule.id,
        title=rule.title,
        topic=rule.topic,
        indicator=rule.indicator,
        pattern=rule.pattern,
        red_flag=rule.red_flag,
        summary=_render(summary, context),
        detail=tuple(_render(line, context) for line in detail),
        citation=rule.citation,
        suggestions=suggestions,
        links=rule.links,
        evidence=rule.evidence,
        criteria=criteria,
        score=score,
    )


def _fallback(rule: Rule) -> Recommendation:
    return Recommendation(
        rule_id=rule.id,
        title=rule.title,
        topic=Topic.URGENT_REFERRAL,
        indicator=Indicator.CRITICAL,
        pattern=Pattern.INDETERMINATE,
        red_flag=True,
        summary=f"Red-flag check could not run: {rule.title}. Assess in person now."[:139],
        detail=(
            f"The automated check for **{rule.title}** failed on this record, so it cannot say "
            "whether this red flag is present. Assess for it directly.",
        ),
        citation=rule.citation,
        suggestions=(),
        links=rule.links,
        evidence=rule.evidence,
        fallback=True,
    )


def evaluate(
    pack: RulePack,
    facts: Mapping[str, FactLike],
    *,
    hook: str = "patient-view",
    options: Mapping[str, bool] | None = None,
) -> Assessment:
    """Evaluate the rules of ``pack`` that answer ``hook`` on ``facts``, then apply suppressions and
    the safety invariants. An unknown hook is a :class:`RuleError` (a caller's mistake, not a patient's)."""
    if hook not in HOOKS:
        raise RuleError(f"unknown hook {hook!r}: one of {', '.join(HOOKS)}")
    context = Context(facts, pack.definitions, pack.scores, {**pack.options, **(options or {})})
    fired: list[Recommendation] = []
    errors: list[str] = []
    for rule in pack.rules_for(hook):
        try:
            recommendation = _recommend(rule, context)
        except Exception as error:  # noqa: BLE001 - a failing rule must never take the others down
            errors.append(f"{rule.id}: {type(error).__name__}")
            if rule.red_flag:
                fired.append(_fallback(rule))
            continue
        if recommendation is not None:
            fired.append(recommendation)
    kept, suppressed = _suppress(pack, fired)
    patterns = tuple(dict.fromkeys(r.pattern for r in kept))
    pattern = _pattern(pack, context, kept, errors)
    return Assessment(
        pack_id=pack.id,
        pack_version=pack.version,
        pack_hash=pack.content_hash,
        recommendations=tuple(kept),
        suppressed=tuple(suppressed),
        errors=tuple(errors),
        patterns=patterns,
        pattern=pattern,
        hook=hook,
    )


def _pattern(pack: RulePack, context: Context, kept: list[Recommendation], errors: list[str]) -> Pattern:
    """The first of the pack's pattern steps that holds; indeterminate when none does (or fails)."""
    if not pack.patterns:
        return kept[0].pattern if kept else Pattern.INDETERMINATE
    for index, step in enumerate(pack.patterns):
        try:
            if step.when.evaluate(context) is True:
                return step.pattern
        except Exception as error:  # noqa: BLE001 - a failing step must not take the cards down
            errors.append(f"patterns/{index}: {type(error).__name__}")
            return Pattern.INDETERMINATE
    return Pattern.INDETERMINATE


def _suppress(pack: RulePack, fired: list[Recommendation]) -> tuple[list[Recommendation], list[Suppression]]:
    rules = {rule.id: rule for rule in pack.rules}
    blocked: dict[Topic, str] = {}
    for recommendation in fired:
        rule = rules.get(recommendation.rule_id)
        for topic in rule.suppresses if rule else ():
            blocked.setdefault(topic, recommendation.rule_id)
        # Safety invariant 1, whatever the pack says.
        if recommendation.red_flag or recommendation.topic in (Topic.URGENT_REFERRAL, Topic.DUPLEX_DVT):
            blocked.setdefault(Topic.CONSERVATIVE, recommendation.rule_id)
    kept: list[Recommendation] = []
    suppressed: list[Suppression] = []
    for recommendation in fired:
        by = blocked.get(recommendation.topic)
        if by is not None and not recommendation.red_flag and by != recommendation.rule_id:
            suppressed.append(Suppression(recommendation.rule_id, recommendation.topic, by))
            continue
        kept.append(recommendation)
    return kept, suppressed
