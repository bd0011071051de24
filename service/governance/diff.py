"""What changed between two rule-pack versions, in a clinician's words (``calf-cds rules diff A B``).

Not a JSON diff: each change is a sentence under a heading a clinician recognises, in the order a
reviewer reads them — first the new version's own changelog (what changed and why, with its
citations), then cards (when they fire, what they suggest, how urgent), thresholds and shared
criteria, scores, suppressions, citations, options, then the wording of the cards, and last the
governance record (status, approvals). Card variants are paired by the condition that selects
them, so a new variant is reported as new rather than as a rewrite of its neighbour.
Thresholds are found by pairing the conditions of the two versions that read the same fact,
definition or score, so "D-dimer (FEU) ≥ 500 ng/mL → ≥ 600 ng/mL" is reported as one change.

This module holds the summary (:class:`PackDiff`) and the sections about the whole pack; the cards
are compared in :mod:`service.governance.diff_cards`, the conditions (compiled expressions, which
word themselves) in :mod:`service.governance.diff_conditions`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.forms import numeral
from service.governance.diff_cards import CardDiff, Changes, keyed
from service.governance.diff_conditions import ConditionDiff
from service.governance.wording import Wording, canonical, name_words

__all__ = ["NOT_CONTENT", "NOUNS", "PACK_KEYS", "SECTIONS", "PackDiff", "diff_packs"]


SECTIONS = (
    "Changelog",
    "Cards",
    "Thresholds",
    "Criteria and definitions",
    "Scores",
    "Suppressions",
    "Citations",
    "Options",
    "Wording",
    "Governance record",
)
# Sections that are not clinical content of their own: the record of why, and who approved.
NOT_CONTENT = ("Changelog", "Governance record")

NOUNS = {
    "Changelog": ("changelog entry", "changelog entries"),
    "Cards": ("card change", "card changes"),
    "Thresholds": ("threshold", "thresholds"),
    "Criteria and definitions": ("criteria change", "criteria changes"),
    "Scores": ("score change", "score changes"),
    "Suppressions": ("suppression change", "suppression changes"),
    "Citations": ("citation change", "citation changes"),
    "Options": ("option change", "option changes"),
    "Wording": ("wording change", "wording changes"),
    "Governance record": ("governance note", "governance notes"),
}


PACK_KEYS = frozenset(
    [
        "$schema",
        "id",
        "version",
        "status",
        "title",
        "description",
        "effective",
        "authors",
        "approvals",
        "changelog",
        "citations",
        "options",
        "definitions",
        "definition_notes",
        "scores",
        "rules",
    ]
)


@dataclass
class PackDiff:
    old_key: str
    new_key: str
    sections: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in SECTIONS})

    def add(self, section: str, line: str) -> None:
        self.sections[section].append(line)

    @property
    def empty(self) -> bool:
        return not any(self.sections[name] for name in SECTIONS if name not in NOT_CONTENT)

    def summary(self) -> str:
        counted = []
        for name, lines in self.sections.items():
            if lines:
                one, many = NOUNS[name]
                counted.append(f"{len(lines)} {one if len(lines) == 1 else many}")
        return ", ".join(counted) if counted else "no changes"

    def render(self, width: int = 100) -> str:
        title = f"What changes from {self.old_key.replace('@', ' ')} to {self.new_key.replace('@', ' ')}"
        out = [title, "=" * len(title), f"In short: {self.summary()}.", ""]
        if self.empty:
            out += [
                "No clinical content changed: cards, criteria, thresholds, scores and citations are the same.",
                "",
            ]
        for name in SECTIONS:
            lines = self.sections[name]
            if not lines:
                continue
            out += [name, "-" * len(name)]
            for line in lines:
                out += textwrap.wrap(line, width, initial_indent="• ", subsequent_indent="  ")
            out.append("")
        return "\n".join(out).rstrip() + "\n"


class _Differ:
    """The sections of a pack diff that are about the whole pack; cards and conditions are
    compared by :class:`CardDiff` and :class:`ConditionDiff`."""

    def __init__(
        self, old: Mapping[str, Any], new: Mapping[str, Any], old_words: Wording, new_words: Wording
    ):
        self.old, self.new = old, new
        self.ow, self.nw = old_words, new_words
        self.diff = PackDiff(f"{old.get('id')}@{old.get('version')}", f"{new.get('id')}@{new.get('version')}")
        self.conditions = ConditionDiff(self.diff, old_words, new_words)
        self.cards = CardDiff(self.diff, old, new, old_words, new_words, self.conditions)

    def governance(self) -> None:
        old, new = self.old, self.new
        section = "Governance record"
        for name in ("status", "title", "description"):
            if old.get(name) != new.get(name):
                self.diff.add(section, f"{name.capitalize()}: “{old.get(name, '')}” → “{new.get(name, '')}”")
        if old.get("effective") != new.get("effective"):
            self.diff.add(
                section, f"Effective: {_period(old.get('effective'))} → {_period(new.get('effective'))}"
            )
        self._people(section, "Author", old.get("authors", []), new.get("authors", []))
        old_approvals = {canonical(a) for a in old.get("approvals", [])}
        for approval in new.get("approvals", []):
            if canonical(approval) not in old_approvals:
                note = f" — {approval['note']}" if approval.get("note") else ""
                self.diff.add(
                    section,
                    f"Approved by {approval['name']} ({approval['role']}) on {approval['date']}{note}",
                )
        if not new.get("approvals"):
            self.diff.add(section, f"{self.diff.new_key} has no recorded approval")
        old_log = {entry.get("version") for entry in old.get("changelog", [])}
        for entry in new.get("changelog", []):
            if entry.get("version") not in old_log:
                for change in entry.get("changes", []):
                    self.diff.add("Changelog", f"{entry.get('version')} ({entry.get('date')}): {change}")

    def _people(self, section: str, role: str, old: list[Any], new: list[Any]) -> None:
        before = {p.get("name") for p in old}
        after = {p.get("name") for p in new}
        for name in sorted(after - before):
            self.diff.add(section, f"{role} added: {name}")
        for name in sorted(before - after):
            self.diff.add(section, f"{role} removed: {name}")

    def _by_name(self, section: str, key: str) -> Changes[Any]:
        """The pack's ``key`` (a JSON object: citations, options, definitions, scores) in both
        versions, compared name by name; its sentences go under ``section``."""
        return Changes(self.diff, section, self.old.get(key, {}), self.new.get(key, {}), by_name=True)

    def citations(self) -> None:
        self._by_name("Citations", "citations").report(
            added=lambda ref, source: f"New source: {_source(source)}",
            removed=lambda ref, source: f"Source no longer cited: {_source(source)}",
            kept=self._citation,
        )

    def _citation(self, ref: str, was: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        if canonical(was) != canonical(now):
            self.diff.add("Citations", f"Source updated: {_source(was)} → {_source(now)}")

    def options(self) -> None:
        self._by_name("Options", "options").report(
            added=lambda name, option: (
                f"New option “{name_words(name)}” ({'on' if option['default'] else 'off'} by default): "
                f"{option['description']}"
            ),
            removed=lambda name, option: f"Option “{name_words(name)}” removed",
            kept=self._option,
        )

    def _option(self, name: str, was: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        if was["default"] != now["default"]:
            before, after = ("on", "off") if was["default"] else ("off", "on")
            self.diff.add("Options", f"Option “{name_words(name)}” is now {after} by default (was {before})")

    def _users(self, name: str) -> str:
        """ " (used by …)": the cards whose conditions read definition ``name``, directly or not."""
        definitions = self.new.get("definitions", {})
        graph = {key: self.nw.read(value).definitions() for key, value in definitions.items()}
        titles = []
        for rule in self.new.get("rules", []):
            seen: set[str] = set()
            todo = [ref for when in _conditions_of(rule) for ref in self.nw.read(when).definitions()]
            while todo:
                ref = todo.pop()
                if ref not in seen:
                    seen.add(ref)
                    todo.extend(graph.get(ref, ()))
            if name in seen:
                titles.append(rule["title"])
        return f" (used by: {', '.join(titles)})" if titles else ""

    def definitions(self) -> None:
        self._by_name("Criteria and definitions", "definitions").report(
            added=lambda name, definition: (
                f"New definition {self.nw.definition(name)}: {self.nw.expr(self.nw.read(definition))}"
            ),
            removed=lambda name, definition: f"Definition {self.ow.definition(name)} removed",
            kept=lambda name, was, now: self.conditions.expression(
                f"Definition {self.nw.definition(name)}{self._users(name)}",
                self.ow.read(was),
                self.nw.read(now),
            ),
        )

    def scores(self) -> None:
        self._by_name("Scores", "scores").report(
            added=lambda name, score: f"New score {self.nw.score(name)} with {len(score['items'])} items",
            removed=lambda name, score: f"Score {self.ow.score(name)} removed",
            kept=lambda name, was, now: self._score(self.nw.score(name), was, now),
        )

    def _score(self, title: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        """A score in both versions: its title, then its items (paired by id)."""
        if old.get("title") != new.get("title"):
            self.diff.add("Scores", f"Score renamed: {old.get('title')} → {new.get('title')}")
        Changes(self.diff, "Scores", keyed(old["items"], "id"), keyed(new["items"], "id")).report(
            added=lambda item_id, item: (
                f"{title}: new item {_item(item)} when {self.nw.expr(self.nw.read(item['when']))}"
            ),
            removed=lambda item_id, item: f"{title}: item {_item(item)} removed",
            kept=lambda item_id, was, now: self._score_item(title, was, now),
        )

    def _score_item(self, title: str, was: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        if was["label"] != now["label"]:
            self.diff.add("Scores", f"{title}: item “{was['label']}” is now “{now['label']}”")
        if was["points"] != now["points"]:
            self.diff.add(
                "Scores",
                f"{title}: item “{now['label']}” now scores {_points(now['points'])} "
                f"(was {_points(was['points'])})",
            )
        self.conditions.expression(
            f"{title}, item “{now['label']}”", self.ow.read(was["when"]), self.nw.read(now["when"])
        )

    def other(self) -> None:
        """Notes on definitions, and any pack field this summary does not know, so nothing passes unseen."""
        old_notes, new_notes = self.old.get("definition_notes", {}), self.new.get("definition_notes", {})
        for name in sorted(set(old_notes) | set(new_notes)):
            if old_notes.get(name) != new_notes.get(name):
                note = new_notes.get(name) or "(removed)"
                self.diff.add("Criteria and definitions", f"Note on {self.nw.definition(name)}: {note}")
        for key in sorted((set(self.old) | set(self.new)) - PACK_KEYS):
            if canonical(self.old.get(key)) != canonical(self.new.get(key)):
                self.diff.add("Governance record", f"Pack field “{key}” changed")


def _conditions_of(rule: Mapping[str, Any]) -> list[Any]:
    """Every expression of a rule (JSON): when it fires, its variants' and its criteria's."""
    return [
        rule["when"],
        *(variant["when"] for variant in rule.get("variants", [])),
        *(criterion["when"] for criterion in rule.get("criteria", [])),
    ]


def _item(item: Mapping[str, Any]) -> str:
    """A score item as the diff names it: “label” (+n points)."""
    return f"“{item['label']}” ({_points(item['points'])})"


def _points(points: int) -> str:
    return f"{'+' if points > 0 else ''}{numeral(points)} point{'s' if abs(points) != 1 else ''}"


def _period(effective: Mapping[str, Any] | None) -> str:
    if not effective:
        return "not set"
    return f"from {effective.get('from')}" + (f" to {effective['to']}" if effective.get("to") else "")


def _source(source: Mapping[str, Any]) -> str:
    url = f" <{source['url']}>" if source.get("url") else ""
    return f"{source.get('title', '?')}{url}"


def diff_packs(
    old: Mapping[str, Any], new: Mapping[str, Any], old_words: Wording, new_words: Wording
) -> PackDiff:
    """Every change from ``old`` to ``new`` (pack documents), as sentences by section."""
    differ = _Differ(old, new, old_words, new_words)
    differ.cards.rules()
    differ.definitions()
    differ.scores()
    differ.citations()
    differ.options()
    differ.governance()
    differ.other()
    return differ.diff
