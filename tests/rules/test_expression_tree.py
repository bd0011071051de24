"""The compiled expression tree describes itself: its JSON, its parts, what it reads, its words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from fhir_mappings.facts import vocabulary
from rules.compiler import Compiler
from rules.expressions import Context, Expr, Number, ScoreItem
from rules.forms import AllOf, Compare, Definition, Fact, Known, Not, numeral
from rules.pack import bundled_pack_files
from tests.strategies import EXPRESSION_NAMES, expressions

PACK_FILES = sorted(bundled_pack_files().values()) + sorted(
    (Path(__file__).parents[1] / "data" / "rule-packs").glob("*.json")
)
COMPILER = Compiler(**EXPRESSION_NAMES)


def canonical(node: Any) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def pack_expressions(document: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every expression a pack document holds, with its JSON pointer."""
    for name, expression in document.get("definitions", {}).items():
        yield f"/definitions/{name}", expression
    for name, score in document.get("scores", {}).items():
        for i, item in enumerate(score["items"]):
            yield f"/scores/{name}/items/{i}/when", item["when"]
    for i, step in enumerate(document.get("patterns", ())):
        yield f"/patterns/{i}/when", step["when"]
    for i, rule in enumerate(document["rules"]):
        yield f"/rules/{i}/when", rule["when"]
        for j, variant in enumerate(rule.get("variants", ())):
            yield f"/rules/{i}/variants/{j}/when", variant["when"]
        for j, criterion in enumerate(rule.get("criteria", ())):
            yield f"/rules/{i}/criteria/{j}/when", criterion["when"]


def definitions_named(node: Any) -> set[str]:
    """The definitions a JSON expression names, found by walking the JSON itself."""
    if isinstance(node, dict):
        found = {node["def"]} if isinstance(node.get("def"), str) else set()
        return found.union(*(definitions_named(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(definitions_named(value) for value in node))
    return set()


class Words:
    """A phrasebook that shows which of its names each phrase used."""

    def fact(self, name: str) -> str:
        return f"<{name}>"

    def value(self, name: str, value: Number) -> str:
        return f"{numeral(value)} u({name})"

    def definition(self, name: str) -> str:
        return f"“def {name}”"

    def score(self, name: str) -> str:
        return f"score {name}"

    def option(self, name: str) -> str:
        return f"“opt {name}”"


@dataclass(frozen=True)
class F:
    value: bool | float | str | None
    when: datetime | None = None


@pytest.mark.parametrize("path", PACK_FILES, ids=[path.name for path in PACK_FILES])
def test_every_expression_of_a_pack_gives_back_its_json(path: Path) -> None:
    """``to_json()`` is the JSON the node was compiled from, and compiles back to an equal node."""
    document = json.loads(path.read_text("utf-8"))
    types = {name: kind for name, (kind, _) in vocabulary().types().items()}
    compiler = Compiler.for_pack(document, types)
    for pointer, raw in pack_expressions(document):
        node = compiler.compile(raw, pointer)
        assert canonical(node.to_json()) == canonical(raw), pointer
        assert compiler.compile(node.to_json(), pointer) == node, pointer
        assert node.definitions() == definitions_named(raw), pointer


@given(expressions)
def test_any_expression_gives_back_its_json_and_reads_as_words(raw: dict[str, Any]) -> None:
    """Every form round-trips through the tree, has words, and evaluates (total) on any facts."""
    node = COMPILER.compile(raw, "")
    assert canonical(node.to_json()) == canonical(raw)
    assert COMPILER.compile(node.to_json(), "") == node
    assert node.describe(Words()).strip()
    facts = {name: F(None) for name in EXPRESSION_NAMES["fact_types"]}
    context = Context(facts, {"d": Fact("a")}, {"s": (ScoreItem("i", "i", 1, Fact("b")),)}, {"o": True})
    assert node.evaluate(context) in (True, False, None)


@given(expressions)
def test_facts_and_definitions_gather_from_the_children(raw: dict[str, Any]) -> None:
    """A node's facts and definitions are its own and its children's, nothing through a definition."""
    node = COMPILER.compile(raw, "")

    def walk(expr: Expr) -> Iterator[Expr]:
        yield expr
        for child in expr.children:
            yield from walk(child)

    nodes = list(walk(node))
    assert node.definitions() == ({"d"} if any(isinstance(n, Definition) for n in nodes) else set())
    assert node.facts() == frozenset().union(*(n.facts() for n in nodes if not n.children))


def test_children_are_the_parts_a_node_combines() -> None:
    """``all``/``any`` have their parts, ``not``/``true`` their one part, the other forms none."""
    fever, pain = Fact("a"), Known("n")
    both = COMPILER.compile({"all": [{"fact": "a"}, {"not": {"known": "n"}}]}, "")
    assert both == AllOf((fever, Not(pain)))
    assert both.children == (fever, Not(pain))
    assert Not(pain).children == (pain,)
    assert pain.children == ()


def test_numbers_and_codes_keep_the_form_they_were_written_in() -> None:
    """500 stays 500 (not 500.0), a bare code stays bare, an absent factor stays absent."""
    for raw in (
        {"cmp": ["n", ">=", 500]},
        {"cmp": ["n", ">=", 0.5]},
        {"cmp": ["n", ">=", {"fact": "m"}]},
        {"cmp": ["n", ">=", {"fact": "m", "times": 1}]},
        {"is": ["c", "absent"]},
        {"is": ["c", ["absent"]]},
    ):
        assert canonical(COMPILER.compile(raw, "").to_json()) == canonical(raw)
    assert COMPILER.compile({"cmp": ["n", ">=", 500]}, "") == Compare("n", ">=", 500)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"fact": "a"}, "<a>"),
        ({"known": "c"}, "<c> documented"),
        ({"cmp": ["n", "<=", 0.9]}, "<n> ≤ 0.9 u(n)"),
        ({"cmp": ["n", ">=", {"fact": "m", "times": 10}]}, "<n> ≥ 10 × <m>"),
        ({"cmp": ["n", "!=", {"fact": "m", "times": 1.0}]}, "<n> ≠ <m>"),
        ({"is": ["c", "absent"]}, "<c> absent"),
        ({"is": ["c", ["diminished", "absent"]]}, "<c> diminished or absent"),
        ({"older": ["a", "n"]}, "<a> recorded before <n>"),
        ({"all": [{"fact": "a"}]}, "<a>"),
        ({"any": [{"fact": "a"}, {"fact": "b"}]}, "(<a> or <b>)"),
        ({"all": [{"fact": "a"}, {"fact": "b"}, {"known": "n"}]}, "all of [<a>; <b>; <n> documented]"),
        ({"not": {"true": {"fact": "a"}}}, "unless <a>"),
        ({"not": {"fact": "a"}}, "<a> documented as absent"),
        ({"not": {"known": "n"}}, "<n> not documented"),
        ({"not": {"def": "d"}}, "not “def d”"),
        ({"true": {"fact": "a"}}, "<a> (documented)"),
        ({"score": ["s", ">=", 2.0]}, "score s ≥ 2"),
        ({"points": ["s", ">=", 2]}, '{"points":["s",">=",2]}'),
        ({"option": "o"}, "option “opt o” is on"),
        ({"const": True}, "always"),
        ({"const": False}, "never"),
    ],
)
def test_every_form_reads_as_words(raw: dict[str, Any], words: str) -> None:
    """Each form describes itself with the phrasebook's names (``points`` has no phrase yet)."""
    assert COMPILER.compile(raw, "").describe(Words()) == words
