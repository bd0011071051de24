"""A card's text: what it rests on, how request strings are made safe in it, and its assessment link.

**Evidence.** What one card rests on: its side, the findings that decided it, and what was not
recorded. Shared by the card (:mod:`service.hooks.cards`, a few lines) and its explanation page
(:mod:`service.hooks.explanation`, everything). The evidence is plain data, no markup: every string from the
request (evidence values, the resource's own wording, ids) is escaped where it is written.

**Side.** The legs named by the card's positive findings — the presenting complaint (calf or leg
pain) and the rule's evidence facts that are present — from each evidence's laterality: one leg,
both legs, or "side not recorded" when the findings carry no side; no side when no leg finding is
documented at all (then the summary has no side prefix).

**Escaping** of request-supplied text wherever the service writes it into a card or a page.
Everything a request carries (codings' displays, ``text``, names, units, values, ids) is untrusted.
It passes through :func:`clean` once — control characters and line breaks become spaces, runs of
white space one space, and very long strings are cut — and then through the escaper for where it
is written:

- :func:`escape_markdown` for card Markdown (``detail``, and the plain-text ``summary`` and labels):
  ``&``, ``<`` and ``>`` become HTML entities (CDS clients such as the Sandbox render raw HTML in
  Markdown), every Markdown metacharacter is backslash-escaped (emphasis, code, links and images,
  tables, strikethrough, headings and lists at the start), and ``:`` and the dots of anything that
  looks like a domain are escaped so that no autolink (``javascript:``, ``www.``, ``evil.com``)
  can form. The result renders as the original text and is safe inside a line of Markdown.
- :func:`escape_html` for pages: HTML-escapes (``markupsafe``) and writes ``:`` as ``&#58;`` so that
  the literal ``javascript:`` never appears either. The explanation page's Jinja2 environment
  applies it to every ``{{ expression }}`` (``finalize``), on top of autoescaping.

Text that the service writes itself (pack wording, labels from the vocabulary) is trusted and
written as it is; the test suite feeds hostile displays, texts, names and units through every card
topic and the page (tests/service/test_cards_hostile.py).

**The assessment link**, the loop back to the form: a CDS Hooks ``smart`` link that opens the
assessment on what a card lacks. A card whose decision waits on undocumented findings carries ``assessment_link(missing, base_url)``;
the EHR launches the app (``/app/launch.html``) and hands it the link's ``appContext``,
``{"missing": [question link ids]}``, which the app marks and lists above the form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from markupsafe import Markup, escape

from cds_hooks.models import Link
from fhir_mappings.facts import LEGS, Fact, Facts, Vocabulary
from fhir_mappings.questionnaire import Assessment, bundled_assessment
from rules.engine import CriterionResult, Recommendation

__all__ = [
    "ASSESSMENT_LABEL",
    "COMPLAINT_FACTS",
    "MAX_TEXT",
    "SIDE_LABEL",
    "CardEvidence",
    "Finding",
    "Side",
    "assessment_link",
    "card_evidence",
    "card_side",
    "clean",
    "decisive",
    "escape_html",
    "escape_markdown",
    "lead_with_action",
    "missing_questions",
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


MAX_TEXT = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
# Markdown metacharacters (CommonMark + GFM tables and strikethrough), escaped with a backslash.
_MARKDOWN = {ord(c): "\\" + c for c in "\\`*_{}[]()#!|~:"}
_MARKDOWN |= {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;"}
_DOMAIN_DOT = re.compile(r"(?<=[0-9A-Za-z])\.(?=[A-Za-z])")
_LINE_START = re.compile(r"^([-+]|\d+(?=\.))(?=\.?(\s|$))")


def clean(value: object, *, limit: int = MAX_TEXT) -> str:
    """Untrusted ``value`` as one line of plain text, at most ``limit`` characters."""
    text = _SPACES.sub(" ", _CONTROL.sub(" ", str(value))).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def escape_markdown(value: object, *, limit: int = MAX_TEXT) -> str:
    """Untrusted ``value`` as inert Markdown text: it renders as itself, never as markup or a link."""
    text = clean(value, limit=limit).translate(_MARKDOWN)
    text = _DOMAIN_DOT.sub(r"\\.", text)
    # A list marker at the very start ("- ", "1. "): what is left once the rest is escaped.
    return _LINE_START.sub(
        lambda m: m.group(1) + "\\" if m.group(1)[0].isdigit() else "\\" + m.group(1), text, count=1
    )


def escape_html(value: object) -> Markup:
    """Untrusted ``value`` for an HTML page; already-safe :class:`Markup` passes through."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    # Safe by construction: markupsafe has escaped every character that HTML would read.
    return Markup(str(escape(str(value))).replace(":", "&#58;"))  # noqa: S704


ASSESSMENT_LABEL = "Record the missing findings (calf pain assessment)"
_LEG_SUFFIXES = ("_left", "_right")


def missing_questions(missing_fact_names: Iterable[str], assessment: Assessment | None = None) -> list[str]:
    """The questions (link ids, in the form's order) that record the given facts; per-leg names
    (``entire_leg_swollen_left``) count as their question; facts the form does not ask are dropped."""
    form = assessment or bundled_assessment()
    wanted = set()
    for name in missing_fact_names:
        wanted.add(name)
        wanted.update(name.removesuffix(leg) for leg in _LEG_SUFFIXES if name.endswith(leg))
    return [q.link_id for q in form.questions() if q.link_id in wanted]


def assessment_link(missing_fact_names: Iterable[str], base_url: str) -> Link | None:
    """A SMART link to the assessment naming the missing findings, or None when the form asks none."""
    questions = missing_questions(missing_fact_names)
    if not questions:
        return None
    return Link.model_validate(
        {
            "label": ASSESSMENT_LABEL,
            "url": f"{base_url.rstrip('/')}/app/launch.html",
            "type": "smart",
            "appContext": json.dumps({"missing": questions}, separators=(",", ":")),
        }
    )
