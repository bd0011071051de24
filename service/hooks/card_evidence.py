"""What one card rests on: its side, the findings that decided it, and what was not recorded.

Shared by the card (:mod:`service.hooks.cards`, a few lines) and its explanation page
(:mod:`service.hooks.explanation`, everything). Plain data, no markup: every string that came from the
request (evidence values, the resource's own wording, ids) is escaped where it is written.

**Side.** The legs named by the card's positive findings — the presenting complaint (calf or leg
pain) and the rule's evidence facts that are present — from each evidence's laterality: one leg,
both legs, or "side not recorded" when the findings carry no side; no side when no leg finding is
documented at all (then the summary has no side prefix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from fhir_mappings.facts import LEGS, Fact, Facts, Vocabulary
from rules.engine import CriterionResult, Recommendation

__all__ = [
    "COMPLAINT_FACTS",
    "SIDE_LABEL",
    "CardEvidence",
    "Finding",
    "Side",
    "card_evidence",
    "card_side",
    "decisive",
    "lead_with_action",
    "score_title",
]

Side = Literal["left", "right", "both", "unknown"]
SIDE_LABEL: dict[str, str] = {
    "left": "Left leg",
    "right": "Right leg",
    "both": "Both legs",
    "unknown": "Side not recorded",
}
COMPLAINT_FACTS = (
    "calf_pain_left",
    "calf_pain_right",
    "calf_pain",
    "leg_pain_left",
    "leg_pain_right",
    "leg_pain",
)
_ACRONYMS = {"dvt": "DVT", "abi": "ABI", "tbi": "TBI", "pe": "PE"}
_PATTERN_PREFIX = re.compile(
    r"^(?P<flag>Red flag, )?[A-Za-z]+ pattern(?: \((?P<paren>[^)]*)\))?(?:, (?P<comma>[^:]*))?: (?P<rest>.+)$"
)


@dataclass(frozen=True)
class Finding:
    """One documented fact as a clinician reads it; ``value``, ``recorded_as``, ``source`` are untrusted."""

    fact: str
    label: str
    value: str
    side: str | None
    when: datetime | None
    source: str
    recorded_as: str
    status: str | None
    present: bool | None

    @property
    def date(self) -> str | None:
        return self.when.date().isoformat() if self.when else None


@dataclass(frozen=True)
class CardEvidence:
    """The card's side, its findings (decisive first), and what was not recorded."""

    side: Side | None
    findings: tuple[Finding, ...]
    not_recorded: tuple[str, ...]
    missing_criteria: tuple[str, ...]

    @property
    def side_label(self) -> str | None:
        return SIDE_LABEL[self.side] if self.side else None


def score_title(name: str) -> str:
    """``wells_dvt`` → ``Wells DVT``."""
    words = [_ACRONYMS.get(word, word) for word in name.split("_")]
    return " ".join(word[:1].upper() + word[1:] for word in words)


def lead_with_action(summary: str) -> str:
    """A pack 1.0.0 summary without its leading machinery ("Venous pattern: …" → "…").

    Qualifiers stay ("Musculoskeletal pattern (calf cramp): …" → "Calf cramp: …", "Red flag,
    arterial pattern: …" → "Red flag: …"); a summary that already leads with the action is kept.
    """
    match = _PATTERN_PREFIX.match(summary)
    if match is None:
        return summary
    heads = ["Red flag"] if match["flag"] else []
    qualifier = match["paren"] or match["comma"]
    if qualifier:
        heads.append(qualifier)
    rest = match["rest"]
    if not heads:
        return rest[:1].upper() + rest[1:]
    heads[-1] = heads[-1][:1].upper() + heads[-1][1:]
    return ": ".join([*heads, rest])


def _leg(name: str) -> tuple[str, str | None]:
    for leg in LEGS:
        if name.endswith(f"_{leg}"):
            return name[: -len(leg) - 1], leg
    return name, None


def _per_leg(name: str, facts: Facts) -> bool:
    return f"{name}_left" in facts.declared


def _present(fact: Fact) -> bool | None:
    return fact.value if isinstance(fact.value, bool) else None


def card_side(recommendation: Recommendation, facts: Facts) -> Side | None:
    """The card's side from its positive leg findings (see the module docstring)."""
    sides: set[str] = set()
    unsided = False
    for name in dict.fromkeys((*COMPLAINT_FACTS, *recommendation.evidence)):
        fact = facts[name]
        if fact.value is not True:
            continue
        for evidence in fact.evidence:
            if evidence.laterality == "bilateral":
                sides.update(LEGS)
            elif evidence.laterality in LEGS:
                sides.add(evidence.laterality)
            elif _leg(name)[1] or _per_leg(name, facts):
                unsided = True
    if sides >= set(LEGS):
        return "both"
    if sides:
        return "left" if "left" in sides else "right"
    return "unknown" if unsided else None


def _source(reference: str) -> str:
    kind, _, ident = reference.partition("/")
    return f"{kind} {ident}".strip()


def _findings(names: tuple[str, ...], facts: Facts, vocabulary: Vocabulary) -> list[Finding]:
    found: list[Finding] = []
    for name in dict.fromkeys(names):
        fact = facts[name]
        if not fact.documented:
            continue
        base, leg = _leg(name)
        label = vocabulary.label(base)
        for evidence in fact.evidence:
            side = evidence.laterality or leg
            found.append(
                Finding(
                    fact=name,
                    label=label,
                    value=evidence.value,
                    side=SIDE_LABEL["both"] if side == "bilateral" else (f"{side} leg" if side else None),
                    when=evidence.when,
                    source=_source(evidence.reference),
                    recorded_as=evidence.label,
                    status=evidence.status,
                    present=_present(fact),
                )
            )
    unique = {(f.label, f.value, f.side, f.date, f.source): f for f in found}
    return list(unique.values())


def _rank(finding: Finding) -> int:
    if finding.present is True:
        return 0
    return 2 if finding.present is False else 1  # measurements and codes between


def card_evidence(recommendation: Recommendation, facts: Facts, vocabulary: Vocabulary) -> CardEvidence:
    """Side, findings (the rule's present ones, then its values, the complaint, absent ones)."""
    own = _findings(recommendation.evidence, facts, vocabulary)
    complaint = [f for f in _findings(COMPLAINT_FACTS, facts, vocabulary) if f.present]
    ranked = sorted(own, key=_rank)
    absent = [f for f in ranked if f.present is False]
    findings = ranked[: len(ranked) - len(absent)] + [f for f in complaint if f not in own] + absent
    not_recorded = tuple(
        dict.fromkeys(
            vocabulary.label(name) for name in recommendation.evidence if not facts[name].documented
        )
    )
    missing = tuple(dict.fromkeys(c.label for c in recommendation.criteria if c.state == "not documented"))
    return CardEvidence(card_side(recommendation, facts), tuple(findings), not_recorded, missing)


def decisive(evidence: CardEvidence, criteria: tuple[CriterionResult, ...], limit: int) -> list[Finding]:
    """The findings the card shows: present ones (then values) first, at most ``limit``.

    Absent findings are shown only for a card whose rule has no criteria (then "absent" is what
    decided it, e.g. a negative D-dimer); otherwise they stay on the explanation page.
    """
    shown = [f for f in evidence.findings if f.present is not False or not criteria]
    return shown[:limit]
