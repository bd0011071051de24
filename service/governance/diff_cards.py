"""How the cards of a rule pack changed between two versions, in words (for ``rules diff``).

A card is a rule, matched across the versions by its id: its title, topic, urgency, red flag and
pattern; when it fires; its citation, summary and detail; its suggested orders (matched by label);
its variants (paired by the condition that selects them, so that a new variant is reported as new
rather than as a rewrite of its neighbour); its criteria (matched by label), score, evidence,
suppressions and links; and any other field, named, so that nothing passes unseen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from service.governance.diff_conditions import ConditionDiff, Sentences, expression_key
from service.governance.wording import Wording, canonical

__all__ = ["RULE_KEYS", "CardDiff", "Changes", "keyed", "matched"]

# Fields this summary words out; any other field that changes is still named (CardDiff.rule).
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
        "hooks",
    ]
)


def _hooks(rule: Mapping[str, Any]) -> str:
    """The hooks a rule answers, as the diff names them (``patient-view`` when it names none)."""
    return ", ".join(rule.get("hooks") or ["patient-view"])


def _on(rule: Mapping[str, Any]) -> str:
    """`` on order-select, order-sign`` for a card of other hooks than patient-view (else nothing)."""
    return "" if _hooks(rule) == "patient-view" else f" on {_hooks(rule)}"


def _order(suggestion: Mapping[str, Any]) -> str:
    """A suggested order as the diff names it: “label” (priority, and the draft orders it replaces)."""
    return f"“{suggestion['label']}” ({suggestion['request']['priority']}{_deletes(suggestion)})"


def _deletes(suggestion: Mapping[str, Any]) -> str:
    kinds = suggestion.get("delete") or []
    return f", replacing the draft {' and '.join(str(k) for k in kinds)} order(s)" if kinds else ""


class CardDiff:
    """Words the changes of every card from the ``old`` pack document to the ``new`` one."""

    def __init__(
        self,
        diff: Sentences,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        old_words: Wording,
        new_words: Wording,
        conditions: ConditionDiff,
    ) -> None:
        self.diff = diff
        self.old, self.new = old, new
        self.ow, self.nw = old_words, new_words
        self.conditions = conditions

    def rules(self) -> None:
        """Every card: new, removed, or changed (matched by rule id)."""
        old = keyed(self.old.get("rules", []), "id")
        new = keyed(self.new.get("rules", []), "id")
        added, removed, kept = matched(old, new)
        for rule_id in added:
            rule = new[rule_id]
            self.diff.add(
                "Cards",
                f"New card “{rule['title']}” ({_kind(rule)}){_on(rule)}: “{rule['summary']}” — "
                "fires when " + "; ".join(self.nw.conditions(self.nw.read(rule["when"]))),
            )
            for topic in rule.get("suppresses", []):
                self.diff.add("Suppressions", f"New card “{rule['title']}” suppresses {topic} cards")
            for suggestion in rule.get("suggestions", []):
                if suggestion.get("delete"):  # an order card's replacement: say what it deletes
                    self.diff.add(
                        "Cards", f"New card “{rule['title']}”: suggested order {_order(suggestion)}"
                    )
        for rule_id in removed:
            rule = old[rule_id]
            self.diff.add(
                "Cards", f"Card “{rule['title']}” ({_kind(rule)}) removed: it will no longer be shown"
            )
        for rule_id in kept:
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
        if _hooks(old) != _hooks(new):
            self.diff.add("Cards", f"{card} now answers {_hooks(new)} (was {_hooks(old)})")
        self.conditions.expression(
            f"{card}, when it fires", self.ow.read(old["when"]), self.nw.read(new["when"])
        )
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
        Changes(self.diff, "Cards", keyed(old, "label"), keyed(new, "label")).report(
            added=lambda label, suggestion: f"{card}: new suggested order {_order(suggestion)}",
            removed=lambda label, suggestion: f"{card}: suggested order “{label}” removed",
            kept=lambda label, was, now: self._suggestion(f"{card}: order “{label}”", was, now),
        )

    def _suggestion(self, order: str, was: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        """A suggested order in both versions (``order`` names it: card and label)."""
        if was["request"].get("priority") != now["request"].get("priority"):
            self.diff.add(
                "Cards",
                f"{order} priority {was['request'].get('priority')} → {now['request'].get('priority')}",
            )
        if canonical(was["request"].get("code")) != canonical(now["request"].get("code")):
            self.diff.add("Cards", f"{order} has a different order code")
        if was.get("recommended") != now.get("recommended"):
            state = "now" if now.get("recommended") else "no longer"
            self.diff.add("Cards", f"{order} is {state} the recommended choice")
        if _deletes(was) != _deletes(now):
            self.diff.add(
                "Cards", f"{order} now {_deletes(now).removeprefix(', ') or 'deletes no draft order'}"
            )
        if was["request"].get("note") != now["request"].get("note"):
            self.diff.add("Cards", f"{order} note changed")

    def _variants(self, card: str, old: list[Any], new: list[Any]) -> None:
        """Variants are paired by their condition; unpaired ones are new or removed (by position as
        a last resort, when both versions rewrote the condition of the same slot)."""
        old_by_when = {expression_key(self.ow.read(v["when"])): v for v in old}
        new_by_when = {expression_key(self.nw.read(v["when"])): v for v in new}
        pairs = [(old_by_when[key], new_by_when[key]) for key in new_by_when if key in old_by_when]
        lone_old = [v for v in old if expression_key(self.ow.read(v["when"])) not in new_by_when]
        lone_new = [v for v in new if expression_key(self.nw.read(v["when"])) not in old_by_when]
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
            self.conditions.expression(label, self.ow.read(was["when"]), self.nw.read(now["when"]))
            self._text(label, "summary", was.get("summary", ""), now.get("summary", ""))
            self._lines(label, "detail", was.get("detail", []), now.get("detail", []))
            self._suggestions(label, was.get("suggestions", []), now.get("suggestions", []))

    def _criteria(self, card: str, old: list[Any], new: list[Any]) -> None:
        Changes(self.diff, "Cards", keyed(old, "label"), keyed(new, "label")).report(
            added=lambda label, criterion: f"{card}: now lists the criterion “{label}”",
            removed=lambda label, criterion: f"{card}: no longer lists the criterion “{label}”",
            kept=lambda label, was, now: self.conditions.expression(
                f"{card}, criterion “{label}”", self.ow.read(was["when"]), self.nw.read(now["when"])
            ),
        )


Item = TypeVar("Item")


@dataclass(frozen=True)
class Changes(Generic[Item]):
    """One collection of a pack (its definitions, a score's items, a card's criteria, …) in both
    versions, its items paired by key, and the section of ``diff`` its sentences go under.

    Only the wording differs from one collection to the next, and :meth:`report` takes just that.
    Keys only in the new version come first, in its order, then keys only in the old version, then
    keys in both, in the old version's order (``by_name``: each group sorted by key instead).
    """

    diff: Sentences
    section: str
    old: Mapping[str, Item]
    new: Mapping[str, Item]
    by_name: bool = False

    def report(
        self,
        *,
        added: Callable[[str, Item], str],
        removed: Callable[[str, Item], str],
        kept: Callable[[str, Item, Item], None],
    ) -> None:
        """One sentence per item only in the new version (``added`` words it), then one per item
        only in the old version (``removed``); ``kept`` compares the two versions of each item in
        both and adds what sentences it has to."""
        new_keys, old_keys, both = matched(self.old, self.new)
        if self.by_name:
            new_keys, old_keys, both = sorted(new_keys), sorted(old_keys), sorted(both)
        for key in new_keys:
            self.diff.add(self.section, added(key, self.new[key]))
        for key in old_keys:
            self.diff.add(self.section, removed(key, self.old[key]))
        for key in both:
            kept(key, self.old[key], self.new[key])


def keyed(items: Iterable[Mapping[str, Any]], field: str) -> dict[str, Any]:
    """The items (JSON objects) by the value of their ``field`` (``id``, ``label``), in their order."""
    return {item[field]: item for item in items}


def matched(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """The keys only in ``new`` (in its order), only in ``old``, and in both (in ``old``'s order)."""
    return [k for k in new if k not in old], [k for k in old if k not in new], [k for k in old if k in new]


def _kind(rule: Mapping[str, Any]) -> str:
    flag = ", red flag" if rule.get("red_flag") else ""
    return f"{rule['topic']}, {rule['indicator']}{flag}"
