"""Rule packs: versioned JSON documents, validated by a JSON Schema and compiled at load.

A pack is identified by ``id@version`` and by the SHA-256 of its canonical JSON (its content
hash), which every card and audit record carries.

A rule answers one or more CDS Hooks (``hooks``; a rule without the key answers ``patient-view``,
so packs written before the order hooks mean what they always meant). A suggestion of a rule that
answers an order hook may ``delete`` draft orders of named kinds (the order kinds of
``fhir_mappings/data/orderables.json``, read as the facts ``order_<kind>``): checked at load
against the fact vocabulary like every fact a rule reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from rules.codes import Indicator, Pattern, Topic
from rules.compiler import Compiler
from rules.errors import PackError
from rules.expressions import Expr, ScoreItem

__all__ = [
    "DEFAULT_HOOKS",
    "HOOKS",
    "ORDER_HOOKS",
    "Citation",
    "Criterion",
    "PatternRule",
    "Rule",
    "RulePack",
    "Variant",
    "bundled_pack_files",
    "content_hash",
    "load_pack",
    "pack_schema",
]

HOOKS = ("patient-view", "order-select", "order-sign")
ORDER_HOOKS = frozenset({"order-select", "order-sign"})
DEFAULT_HOOKS = ("patient-view",)


@dataclass(frozen=True, slots=True)
class Citation:
    guideline: str
    section: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Criterion:
    label: str
    when: Expr


@dataclass(frozen=True, slots=True)
class PatternRule:
    """One step of the pack's pattern classification: the first that holds names the pattern."""

    pattern: Pattern
    label: str
    when: Expr


@dataclass(frozen=True, slots=True)
class Variant:
    when: Expr
    summary: str
    detail: tuple[str, ...]
    suggestions: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    title: str
    topic: Topic
    indicator: Indicator
    pattern: Pattern
    red_flag: bool
    when: Expr
    citation: Citation
    summary: str
    detail: tuple[str, ...]
    variants: tuple[Variant, ...]
    suggestions: tuple[Mapping[str, Any], ...]
    links: tuple[Mapping[str, str], ...]
    criteria: tuple[Criterion, ...]
    score: str | None
    evidence: tuple[str, ...]
    suppresses: tuple[Topic, ...]
    hooks: tuple[str, ...] = DEFAULT_HOOKS

    def answers(self, hook: str) -> bool:
        """Whether this rule is evaluated on a call of ``hook``."""
        return hook in self.hooks

    def deleted_kinds(self) -> frozenset[str]:
        """Every order kind a suggestion of this rule (or of one of its variants) deletes."""
        suggestions = [*self.suggestions, *(s for v in self.variants for s in v.suggestions)]
        return frozenset(str(kind) for s in suggestions for kind in s.get("delete", ()))


@dataclass(frozen=True)
class RulePack:
    id: str
    version: str
    status: str
    title: str
    content_hash: str
    document: Mapping[str, Any]
    definitions: Mapping[str, Expr]
    scores: Mapping[str, tuple[ScoreItem, ...]]
    options: Mapping[str, bool]
    rules: tuple[Rule, ...]
    citations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    patterns: tuple[PatternRule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"

    def fact_names(self) -> frozenset[str]:
        """Every fact any rule, definition or score of this pack reads."""
        exprs: list[Expr] = list(self.definitions.values())
        exprs += [i.when for items in self.scores.values() for i in items]
        exprs += [p.when for p in self.patterns]
        for rule in self.rules:
            exprs += [rule.when, *(v.when for v in rule.variants), *(c.when for c in rule.criteria)]
        names = frozenset().union(*(e.facts() for e in exprs))
        deleted = frozenset(f"order_{kind}" for r in self.rules for kind in r.deleted_kinds())
        return names | frozenset(n for r in self.rules for n in r.evidence) | deleted

    def hooks(self) -> tuple[str, ...]:
        """The hooks at least one rule of this pack answers, in :data:`HOOKS` order."""
        return tuple(hook for hook in HOOKS if any(rule.answers(hook) for rule in self.rules))

    def rules_for(self, hook: str) -> tuple[Rule, ...]:
        """The rules evaluated on a call of ``hook``."""
        return tuple(rule for rule in self.rules if rule.answers(hook))


@cache
def _schema_file() -> Mapping[str, Any]:
    text = resources.files("rules").joinpath("schema/pack.schema.json").read_text("utf-8")
    schema: Mapping[str, Any] = json.loads(text)
    return schema


def pack_schema() -> Mapping[str, Any]:
    """The pack schema, with the topic, indicator and pattern enums filled in from ``rules.codes``."""
    schema = _schema_file()
    codes: dict[str, type[StrEnum]] = {"topic": Topic, "indicator": Indicator, "pattern": Pattern}
    filled = {
        name: {**schema["$defs"][name], "enum": [code.value for code in enum]} for name, enum in codes.items()
    }
    return {**schema, "$defs": {**schema["$defs"], **filled}}


def content_hash(document: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON form (sorted keys, no insignificant white space)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_pack(document: Mapping[str, Any], fact_types: Mapping[str, str]) -> RulePack:
    """Validate ``document`` against the schema, compile it against ``fact_types``, and return it."""
    pack_id, version = str(document.get("id", "?")), str(document.get("version", "?"))
    validator = jsonschema.Draft202012Validator(pack_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        pointer = "/" + "/".join(str(p) for p in first.absolute_path)
        raise PackError(first.message, pack=pack_id, version=version, pointer=pointer)
    try:
        return _compile(document, fact_types, pack_id, version)
    except PackError as error:
        raise PackError(
            str(error.args[0]).split(" (")[0], pack=pack_id, version=version, pointer=error.pointer
        ) from error


def _compile(
    document: Mapping[str, Any], fact_types: Mapping[str, str], pack_id: str, version: str
) -> RulePack:
    raw_definitions: Mapping[str, Any] = document.get("definitions", {})
    raw_scores: Mapping[str, Any] = document.get("scores", {})
    options = {name: bool(spec["default"]) for name, spec in document.get("options", {}).items()}
    compiler = Compiler(
        fact_types=fact_types,
        definitions=frozenset(raw_definitions),
        scores=frozenset(raw_scores),
        options=frozenset(options),
    )
    _check_acyclic(raw_definitions)
    definitions = {
        name: compiler.compile(expr, f"/definitions/{name}") for name, expr in raw_definitions.items()
    }
    scores = {
        name: tuple(
            ScoreItem(
                id=item["id"],
                label=item["label"],
                points=int(item["points"]),
                when=compiler.compile(item["when"], f"/scores/{name}/items/{i}/when"),
            )
            for i, item in enumerate(spec["items"])
        )
        for name, spec in raw_scores.items()
    }
    citations: Mapping[str, Mapping[str, Any]] = document.get("citations", {})
    rules = tuple(
        _rule(raw, f"/rules/{i}", compiler, citations, frozenset(scores))
        for i, raw in enumerate(document["rules"])
    )
    ids = [r.id for r in rules]
    if len(ids) != len(set(ids)):
        raise PackError("rule ids must be unique", pointer="/rules")
    patterns = tuple(
        PatternRule(
            pattern=Pattern(raw["pattern"]),
            label=str(raw["label"]),
            when=compiler.compile(raw["when"], f"/patterns/{i}/when"),
        )
        for i, raw in enumerate(document.get("patterns", ()))
    )
    return RulePack(
        id=pack_id,
        version=version,
        status=str(document["status"]),
        title=str(document["title"]),
        content_hash=content_hash(document),
        document=document,
        definitions=definitions,
        scores=scores,
        options=options,
        rules=rules,
        citations=citations,
        patterns=patterns,
    )


def _rule(
    raw: Mapping[str, Any],
    pointer: str,
    compiler: Compiler,
    citations: Mapping[str, Mapping[str, Any]],
    scores: frozenset[str],
) -> Rule:
    cite = raw["citation"]
    source = citations.get(cite["ref"])
    if source is None:
        raise PackError(f"unknown citation {cite['ref']!r}", pointer=f"{pointer}/citation/ref")
    if raw.get("score") is not None and raw["score"] not in scores:
        raise PackError(f"unknown score {raw['score']!r}", pointer=f"{pointer}/score")
    for name in raw.get("evidence", ()):
        compiler.compile({"known": name}, f"{pointer}/evidence")
    red_flag = bool(raw.get("red_flag", False))
    if red_flag and (raw["topic"] != Topic.URGENT_REFERRAL or raw["indicator"] != Indicator.CRITICAL):
        raise PackError("a red-flag rule is an urgent-referral card with indicator critical", pointer=pointer)
    hooks = tuple(raw.get("hooks", DEFAULT_HOOKS))
    _check_deletes(raw, pointer, compiler, hooks)
    return Rule(
        id=raw["id"],
        title=raw["title"],
        topic=Topic(raw["topic"]),
        indicator=Indicator(raw["indicator"]),
        pattern=Pattern(raw["pattern"]),
        red_flag=red_flag,
        when=compiler.compile(raw["when"], f"{pointer}/when"),
        citation=Citation(
            guideline=str(source["title"]), section=str(cite["section"]), url=source.get("url")
        ),
        summary=raw["summary"],
        detail=tuple(raw.get("detail", ())),
        variants=tuple(
            Variant(
                when=compiler.compile(v["when"], f"{pointer}/variants/{j}/when"),
                summary=v.get("summary", raw["summary"]),
                detail=tuple(v.get("detail", raw.get("detail", ()))),
                suggestions=tuple(v.get("suggestions", raw.get("suggestions", ()))),
            )
            for j, v in enumerate(raw.get("variants", ()))
        ),
        suggestions=tuple(raw.get("suggestions", ())),
        links=tuple(raw.get("links", ())),
        criteria=tuple(
            Criterion(c["label"], compiler.compile(c["when"], f"{pointer}/criteria/{j}/when"))
            for j, c in enumerate(raw.get("criteria", ()))
        ),
        score=raw.get("score"),
        evidence=tuple(raw.get("evidence", ())),
        suppresses=tuple(map(Topic, raw.get("suppresses", ()))),
        hooks=hooks,
    )


def _check_deletes(raw: Mapping[str, Any], pointer: str, compiler: Compiler, hooks: tuple[str, ...]) -> None:
    """A suggestion deletes only order kinds the vocabulary knows, and only in a rule that answers an
    order hook (a patient-view call has no draft orders to delete)."""
    places = [(f"{pointer}/suggestions", raw.get("suggestions", ()))]
    places += [
        (f"{pointer}/variants/{j}/suggestions", v.get("suggestions", ()))
        for j, v in enumerate(raw.get("variants", ()))
    ]
    for where, suggestions in places:
        for k, suggestion in enumerate(suggestions):
            kinds = suggestion.get("delete", ())
            if kinds and not ORDER_HOOKS & set(hooks):
                raise PackError(
                    "a suggestion that deletes draft orders belongs to a rule that answers an order hook",
                    pointer=f"{where}/{k}/delete",
                )
            for kind in kinds:
                if compiler.fact_types.get(f"order_{kind}") != "boolean":
                    raise PackError(
                        f"unknown order kind {kind!r}: the vocabulary has no boolean fact order_{kind}",
                        pointer=f"{where}/{k}/delete",
                    )


def _check_acyclic(definitions: Mapping[str, Any]) -> None:
    def refs(node: Any) -> set[str]:
        if isinstance(node, dict):
            found = {node["def"]} if isinstance(node.get("def"), str) else set()
            return found.union(*(refs(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(refs(v) for v in node))
        return set()

    graph = {name: refs(expr) for name, expr in definitions.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise PackError(
                "definitions refer to each other in a cycle: " + " → ".join(path),
                pointer=f"/definitions/{name}",
            )
        state[name] = 1
        for ref in graph.get(name, ()):
            visit(ref, (*path, ref))
        state[name] = 2

    for name in graph:
        visit(name, (name,))


def bundled_pack_files() -> dict[str, Path]:
    """Every pack shipped with the package, by ``id@version``."""
    folder = resources.files("rules").joinpath("packs")
    found: dict[str, Path] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            document = json.loads(entry.read_text("utf-8"))
            found[f"{document['id']}@{document['version']}"] = Path(str(entry))
    return found
