"""What changed between two rule-pack versions, in a clinician's words (``calf-cds rules diff A B``).

Not a JSON diff: each change is a sentence under a heading a clinician recognises, in the order a
reviewer reads them — first the new version's own changelog (what changed and why, with its
citations), then cards (when they fire, what they suggest, how urgent), thresholds and shared
criteria, scores, suppressions, citations, options, then the wording of the cards, and last the
governance record (status, approvals). Card variants are paired by the condition that selects
them, so a new variant is reported as new rather than as a rewrite of its neighbour.
Thresholds are found by pairing the conditions of the two versions that read the same fact,
definition or score, so "D-dimer (FEU) ≥ 500 ng/mL → ≥ 600 ng/mL" is reported as one change.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.expressions import Expr
from rules.forms import (
    AllOf,
    AnyOf,
    Compare,
    CompareFacts,
    Definition,
    Fact,
    IsCode,
    IsTrue,
    Known,
    Not,
    Option,
    Score,
    numeral,
)
from service.governance.wording import Wording, canonical, name_words

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


# Fields this summary words out; any other field that changes is still named (see _Differ.other).
RULE_KEYS = frozenset(
    [
        "id",
        "title",
        "topic",
        "indicator",
        "pattern",
        "red_flag",
        "when",
        "citation",
        "summary",
        "detail",
        "variants",
        "suggestions",
        "links",
        "criteria",
        "score",
        "evidence",
        "suppresses",
    ]
)
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


def _text(node: Expr) -> str:
    """An expression's JSON as text: the same text for the same expression in either version."""
    return canonical(node.to_json())


def _signature(node: Expr) -> str | None:
    """What a condition is about (its fact, definition or score), to pair old and new versions."""
    if isinstance(node, Fact | Known | Definition | Option | Compare | CompareFacts | IsCode | Score):
        return f"{node.form}:{node.name}"
    if isinstance(node, Not | IsTrue):
        inner = _signature(node.part)
        return f"{node.form}:{inner}" if inner else None
    return None


class _Differ:
    def __init__(
        self, old: Mapping[str, Any], new: Mapping[str, Any], old_words: Wording, new_words: Wording
    ):
        self.old, self.new = old, new
        self.ow, self.nw = old_words, new_words
        self.diff = PackDiff(f"{old.get('id')}@{old.get('version')}", f"{new.get('id')}@{new.get('version')}")

    # -- expressions ------------------------------------------------------------------------

    def expression(self, where: str, old: Expr, new: Expr) -> None:
        """Report the change from ``old`` to ``new`` as thresholds and added/removed conditions."""
        if _text(old) == _text(new):
            return
        if isinstance(old, Compare) and isinstance(new, Compare) and old.name == new.name:
            self.diff.add(
                "Thresholds",
                f"{where}: {self.ow.expr(old)} → {self.nw.expr(new).removeprefix(self.nw.fact(new.name) + ' ')}",
            )
            return
        if isinstance(old, Score) and isinstance(new, Score) and old.name == new.name:
            self.diff.add(
                "Thresholds",
                f"{where}: {self.ow.expr(old)} → {self.nw.expr(new).removeprefix(self.nw.score(new.name) + ' ')}",
            )
            return
        if isinstance(old, AllOf | AnyOf) and type(old) is type(new):
            self._members(where, old.parts, new.parts, old.form)
            return
        if isinstance(old, Not | IsTrue) and isinstance(new, Not | IsTrue) and type(old) is type(new):
            self.expression(where, old.part, new.part)
            return
        self.diff.add(
            "Criteria and definitions",
            f"{where}: was {self.ow.expr(old)}; now {self.nw.expr(new)}",
        )

    def _members(self, where: str, old: tuple[Expr, ...], new: tuple[Expr, ...], kind: str) -> None:
        old_left = {_text(x): x for x in old}
        new_left = {_text(x): x for x in new}
        for same in set(old_left) & set(new_left):
            del old_left[same], new_left[same]
        self._truth_pairs(where, old_left, new_left)
        paired = []
        for ok_text, ov in list(old_left.items()):
            sig = _signature(ov)
            match = next((nt for nt, nv in new_left.items() if sig and _signature(nv) == sig), None)
            if match is not None:
                paired.append((ov, new_left.pop(match)))
                del old_left[ok_text]
        for ov, nv in paired:
            self.expression(where, ov, nv)
        verb_add = "now also requires" if kind == "all" else "now also counts"
        verb_drop = "no longer requires" if kind == "all" else "no longer counts"
        for nv in new_left.values():
            self.diff.add("Criteria and definitions", f"{where}: {verb_add} {self.nw.expr(nv)}")
        for ov in old_left.values():
            self.diff.add("Criteria and definitions", f"{where}: {verb_drop} {self.ow.expr(ov)}")

    def _truth_pairs(self, where: str, old_left: dict[str, Expr], new_left: dict[str, Expr]) -> None:
        """A condition wrapped in (or freed from) ``true`` is one change: how "not documented" reads."""
        for old_text, old_value in list(old_left.items()):
            wrapped = _text(IsTrue(old_value))
            unwrapped = _text(old_value.part) if isinstance(old_value, IsTrue) else None
            if wrapped in new_left:
                del old_left[old_text], new_left[wrapped]
                self.diff.add(
                    "Criteria and definitions",
                    f"{where}: {self.ow.expr(old_value)} now counts only when documented "
                    "(not documented reads as not met)",
                )
            elif unwrapped is not None and unwrapped in new_left:
                new_value = new_left.pop(unwrapped)
                del old_left[old_text]
                self.diff.add(
                    "Criteria and definitions",
                    f"{where}: {self.nw.expr(new_value)} is now read three-valued (not documented stays open)",
                )

    # -- sections ---------------------------------------------------------------------------

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

    def citations(self) -> None:
        old, new = self.old.get("citations", {}), self.new.get("citations", {})
        for ref in sorted(set(new) - set(old)):
            self.diff.add("Citations", f"New source: {_source(new[ref])}")
        for ref in sorted(set(old) - set(new)):
            self.diff.add("Citations", f"Source no longer cited: {_source(old[ref])}")
        for ref in sorted(set(old) & set(new)):
            if canonical(old[ref]) != canonical(new[ref]):
                self.diff.add("Citations", f"Source updated: {_source(old[ref])} → {_source(new[ref])}")

    def options(self) -> None:
        old, new = self.old.get("options", {}), self.new.get("options", {})
        for name in sorted(set(new) - set(old)):
            state = "on" if new[name]["default"] else "off"
            self.diff.add(
                "Options", f"New option “{name_words(name)}” ({state} by default): {new[name]['description']}"
            )
        for name in sorted(set(old) - set(new)):
            self.diff.add("Options", f"Option “{name_words(name)}” removed")
        for name in sorted(set(old) & set(new)):
            if old[name]["default"] != new[name]["default"]:
                was, now = ("on", "off") if old[name]["default"] else ("off", "on")
                self.diff.add("Options", f"Option “{name_words(name)}” is now {now} by default (was {was})")

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
        old, new = self.old.get("definitions", {}), self.new.get("definitions", {})
        for name in sorted(set(new) - set(old)):
            self.diff.add(
                "Criteria and definitions",
                f"New definition {self.nw.definition(name)}: {self.nw.expr(self.nw.read(new[name]))}",
            )
        for name in sorted(set(old) - set(new)):
            self.diff.add("Criteria and definitions", f"Definition {self.ow.definition(name)} removed")
        for name in sorted(set(old) & set(new)):
            where = f"Definition {self.nw.definition(name)}{self._users(name)}"
            self.expression(where, self.ow.read(old[name]), self.nw.read(new[name]))

    def scores(self) -> None:
        old, new = self.old.get("scores", {}), self.new.get("scores", {})
        for name in sorted(set(new) - set(old)):
            self.diff.add("Scores", f"New score {self.nw.score(name)} with {len(new[name]['items'])} items")
        for name in sorted(set(old) - set(new)):
            self.diff.add("Scores", f"Score {self.ow.score(name)} removed")
        for name in sorted(set(old) & set(new)):
            title = self.nw.score(name)
            if old[name].get("title") != new[name].get("title"):
                self.diff.add("Scores", f"Score renamed: {old[name].get('title')} → {new[name].get('title')}")
            before = {item["id"]: item for item in old[name]["items"]}
            after = {item["id"]: item for item in new[name]["items"]}
            for item_id in [i for i in after if i not in before]:
                item = after[item_id]
                self.diff.add(
                    "Scores",
                    f"{title}: new item “{item['label']}” ({_points(item['points'])}) when {self.nw.expr(self.nw.read(item['when']))}",
                )
            for item_id in [i for i in before if i not in after]:
                item = before[item_id]
                self.diff.add(
                    "Scores", f"{title}: item “{item['label']}” ({_points(item['points'])}) removed"
                )
            for item_id in [i for i in before if i in after]:
                was, now = before[item_id], after[item_id]
                if was["label"] != now["label"]:
                    self.diff.add("Scores", f"{title}: item “{was['label']}” is now “{now['label']}”")
                if was["points"] != now["points"]:
                    self.diff.add(
                        "Scores",
                        f"{title}: item “{now['label']}” now scores {_points(now['points'])} "
                        f"(was {_points(was['points'])})",
                    )
                self.expression(
                    f"{title}, item “{now['label']}”", self.ow.read(was["when"]), self.nw.read(now["when"])
                )

    def rules(self) -> None:
        old = {rule["id"]: rule for rule in self.old.get("rules", [])}
        new = {rule["id"]: rule for rule in self.new.get("rules", [])}
        for rule_id in [r for r in new if r not in old]:
            rule = new[rule_id]
            self.diff.add(
                "Cards",
                f"New card “{rule['title']}” ({_kind(rule)}): “{rule['summary']}” — fires when "
                + "; ".join(self.nw.conditions(self.nw.read(rule["when"]))),
            )
            for topic in rule.get("suppresses", []):
                self.diff.add("Suppressions", f"New card “{rule['title']}” suppresses {topic} cards")
        for rule_id in [r for r in old if r not in new]:
            rule = old[rule_id]
            self.diff.add(
                "Cards", f"Card “{rule['title']}” ({_kind(rule)}) removed: it will no longer be shown"
            )
        for rule_id in [r for r in old if r in new]:
            self.rule(old[rule_id], new[rule_id])

    def rule(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        card = f"Card “{new['title']}”"
        if old["title"] != new["title"]:
            self.diff.add("Cards", f"Card “{old['title']}” is now titled “{new['title']}”")
        if old["topic"] != new["topic"]:
            self.diff.add("Cards", f"{card} now recommends {new['topic']} (was {old['topic']})")
        if old["indicator"] != new["indicator"]:
            self.diff.add("Cards", f"{card}: urgency {old['indicator']} → {new['indicator']}")
        if old.get("red_flag", False) != new.get("red_flag", False):
            state = "is now a red flag" if new.get("red_flag") else "is no longer a red flag"
            self.diff.add("Cards", f"{card} {state}")
        if old["pattern"] != new["pattern"]:
            self.diff.add("Cards", f"{card}: pattern {old['pattern']} → {new['pattern']}")
        self.expression(f"{card}, when it fires", self.ow.read(old["when"]), self.nw.read(new["when"]))
        if canonical(old["citation"]) != canonical(new["citation"]):
            self.diff.add(
                "Citations",
                f"{card} now cites {self._cite(new['citation'], self.new)} (was {self._cite(old['citation'], self.old)})",
            )
        self._text(card, "summary", old["summary"], new["summary"])
        self._lines(card, "detail", old.get("detail", []), new.get("detail", []))
        self._suggestions(card, old.get("suggestions", []), new.get("suggestions", []))
        self._variants(card, old.get("variants", []), new.get("variants", []))
        self._criteria(card, old.get("criteria", []), new.get("criteria", []))
        if old.get("score") != new.get("score"):
            self.diff.add(
                "Cards",
                f"{card} now shows score {new.get('score') or 'none'} (was {old.get('score') or 'none'})",
            )
        before, after = set(old.get("evidence", [])), set(new.get("evidence", []))
        for name in sorted(after - before):
            self.diff.add("Cards", f"{card} now shows evidence for {self.nw.fact(name)}")
        for name in sorted(before - after):
            self.diff.add("Cards", f"{card} no longer shows evidence for {self.ow.fact(name)}")
        before, after = set(old.get("suppresses", [])), set(new.get("suppresses", []))
        for topic in sorted(after - before):
            self.diff.add("Suppressions", f"{card} now suppresses {topic} cards")
        for topic in sorted(before - after):
            self.diff.add("Suppressions", f"{card} no longer suppresses {topic} cards")
        links_before = {link["url"]: link["label"] for link in old.get("links", [])}
        links_after = {link["url"]: link["label"] for link in new.get("links", [])}
        for url in sorted(set(links_after) - set(links_before)):
            self.diff.add("Cards", f"{card}: new link “{links_after[url]}” ({url})")
        for url in sorted(set(links_before) - set(links_after)):
            self.diff.add("Cards", f"{card}: link “{links_before[url]}” removed")
        for key in sorted((set(old) | set(new)) - RULE_KEYS):
            if canonical(old.get(key)) != canonical(new.get(key)):
                self.diff.add("Cards", f"{card}: {key.replace('_', ' ')} changed")

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

    def _cite(self, citation: Mapping[str, Any], document: Mapping[str, Any]) -> str:
        source = document.get("citations", {}).get(citation["ref"], {})
        return f"{source.get('title', citation['ref'])}, {citation['section']}"

    def _text(self, card: str, what: str, old: str, new: str) -> None:
        if old != new:
            self.diff.add("Wording", f"{card}: {what} “{old}” → “{new}”")

    def _lines(self, card: str, what: str, old: list[str], new: list[str]) -> None:
        for line in new:
            if line not in old:
                self.diff.add("Wording", f"{card}: new {what} text “{line}”")
        for line in old:
            if line not in new:
                self.diff.add("Wording", f"{card}: {what} text removed “{line}”")

    def _suggestions(self, card: str, old: list[Any], new: list[Any]) -> None:
        before = {s["label"]: s for s in old}
        after = {s["label"]: s for s in new}
        for label in [label for label in after if label not in before]:
            request = after[label]["request"]
            self.diff.add("Cards", f"{card}: new suggested order “{label}” ({request['priority']})")
        for label in [label for label in before if label not in after]:
            self.diff.add("Cards", f"{card}: suggested order “{label}” removed")
        for label in [label for label in before if label in after]:
            was, now = before[label], after[label]
            if was["request"].get("priority") != now["request"].get("priority"):
                self.diff.add(
                    "Cards",
                    f"{card}: order “{label}” priority {was['request'].get('priority')} → "
                    f"{now['request'].get('priority')}",
                )
            if canonical(was["request"].get("code")) != canonical(now["request"].get("code")):
                self.diff.add("Cards", f"{card}: order “{label}” has a different order code")
            if was.get("recommended") != now.get("recommended"):
                state = "now" if now.get("recommended") else "no longer"
                self.diff.add("Cards", f"{card}: order “{label}” is {state} the recommended choice")
            if was["request"].get("note") != now["request"].get("note"):
                self.diff.add("Cards", f"{card}: order “{label}” note changed")

    def _variants(self, card: str, old: list[Any], new: list[Any]) -> None:
        """Variants are paired by their condition; unpaired ones are new or removed (by position as
        a last resort, when both versions rewrote the condition of the same slot)."""
        old_by_when = {_text(self.ow.read(v["when"])): v for v in old}
        new_by_when = {_text(self.nw.read(v["when"])): v for v in new}
        pairs = [(old_by_when[key], new_by_when[key]) for key in new_by_when if key in old_by_when]
        lone_old = [v for v in old if _text(self.ow.read(v["when"])) not in new_by_when]
        lone_new = [v for v in new if _text(self.nw.read(v["when"])) not in old_by_when]
        if len(old) == len(new):
            pairs += list(zip(lone_old, lone_new, strict=True))
            lone_old, lone_new = [], []
        for variant in lone_new:
            self.diff.add(
                "Cards",
                f"{card}: new wording when {self.nw.expr(self.nw.read(variant['when']))}: “{variant.get('summary', '')}”",
            )
            self._suggestions(f"{card}, new variant", [], variant.get("suggestions", []))
        for variant in lone_old:
            self.diff.add(
                "Cards", f"{card}: wording for {self.ow.expr(self.ow.read(variant['when']))} removed"
            )
        for was, now in pairs:
            label = f"{card}, variant when {self.nw.expr(self.nw.read(now['when']))}"
            self.expression(label, self.ow.read(was["when"]), self.nw.read(now["when"]))
            self._text(label, "summary", was.get("summary", ""), now.get("summary", ""))
            self._lines(label, "detail", was.get("detail", []), now.get("detail", []))
            self._suggestions(label, was.get("suggestions", []), now.get("suggestions", []))

    def _criteria(self, card: str, old: list[Any], new: list[Any]) -> None:
        before = {c["label"]: c for c in old}
        after = {c["label"]: c for c in new}
        for label in [label for label in after if label not in before]:
            self.diff.add("Cards", f"{card}: now lists the criterion “{label}”")
        for label in [label for label in before if label not in after]:
            self.diff.add("Cards", f"{card}: no longer lists the criterion “{label}”")
        for label in [label for label in before if label in after]:
            self.expression(
                f"{card}, criterion “{label}”",
                self.ow.read(before[label]["when"]),
                self.nw.read(after[label]["when"]),
            )


def _conditions_of(rule: Mapping[str, Any]) -> list[Any]:
    """Every expression of a rule (JSON): when it fires, its variants' and its criteria's."""
    return [
        rule["when"],
        *(variant["when"] for variant in rule.get("variants", [])),
        *(criterion["when"] for criterion in rule.get("criteria", [])),
    ]


def _kind(rule: Mapping[str, Any]) -> str:
    flag = ", red flag" if rule.get("red_flag") else ""
    return f"{rule['topic']}, {rule['indicator']}{flag}"


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
    differ.rules()
    differ.definitions()
    differ.scores()
    differ.citations()
    differ.options()
    differ.governance()
    differ.other()
    return differ.diff
