"""One clinical case per card topic, from tests/rules/cases, and how a card's Markdown renders.

Shared by the golden-card tests and the CDS Hooks Sandbox end-to-end test. The Markdown renderer
is markdown-it-py's GFM-like preset (tables, strikethrough, autolinks, raw HTML passed through, as
the Sandbox does), so the tests see what a client shows, not what the service wrote.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from cds_hooks.models import Card
from rules.engine import evaluate
from service.config import Settings
from service.hooks.cards import build_cards
from service.hooks.packs import PackRegistry
from service.hooks.pipeline import CalfPainService

CASES_DIR = Path(__file__).resolve().parents[1] / "rules" / "cases"
TOPIC_CASES = {
    "abi": ("arterial", "art-claudication-no-abi-resting-abi"),
    "duplex-dvt": ("venous", "ven-left-leg-condition-m79662-tenderness-pitting-likely"),
    "conservative": ("musculoskeletal", "msk-calf-strain-pop-icd-conservative-safety-net"),
    "urgent-referral": ("red-flags", "rf-ali-sudden-onset-cold-pale-limb"),
}
MARKDOWN = MarkdownIt("gfm-like")


@cache
def calf_service(active_pack: str = "calf-pain@1.0.0") -> CalfPainService:
    registry = PackRegistry.load(Settings(active_pack=active_pack, shadow_packs=(), rules_dir=None))
    return registry.service(clock=lambda: datetime.fromisoformat("2026-11-20T09:00:00+00:00"))


def all_cases() -> list[dict[str, Any]]:
    return [case for path in sorted(CASES_DIR.glob("*.json")) for case in json.loads(path.read_text("utf-8"))]


def topic_case(topic: str) -> dict[str, Any]:
    group, case_id = TOPIC_CASES[topic]
    cases = json.loads((CASES_DIR / f"{group}.json").read_text("utf-8"))
    return next(case for case in cases if case["id"] == case_id)


def case_now(case: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(case["now"].replace("Z", "+00:00"))


def cards_for(case: dict[str, Any], active_pack: str = "calf-pain@1.0.0") -> list[Card]:
    """The cards of a case, with predictable uuids and an example explanation link."""
    calf = calf_service(active_pack)
    now = case_now(case)
    patient = case["patient"]
    facts = calf.mapper.map(patient_id=patient["id"], patient=patient, resources=case["resources"], now=now)
    counter = itertools.count(1)
    pairs = build_cards(
        evaluate(calf.active, facts),
        facts,
        calf.vocabulary,
        patient_id=patient["id"],
        now=now,
        new_uuid=lambda: f"00000000-0000-4000-8000-{next(counter):012d}",
        explanation_link=lambda card_uuid: (
            f"https://cds.example.org/explanations/{card_uuid}?expires=1&sig=x"
        ),
    )
    return [card for card, _ in pairs]


def topic_card(topic: str) -> Card:
    return next(c for c in cards_for(topic_case(topic)) if c.source.topic and c.source.topic.code == topic)


def render(markdown: str) -> str:
    return MARKDOWN.render(markdown)


def rendered_lines(markdown: str) -> int:
    """How many lines a client shows: top-level paragraphs and headings, list items, table rows,
    code lines and hard breaks (a single newline inside a paragraph is not a line in GFM)."""
    lines = 0
    for token in MARKDOWN.parse(markdown):
        top_paragraph = token.type == "paragraph_open" and not token.hidden and token.level == 0
        if top_paragraph or token.type in ("list_item_open", "heading_open", "tr_open", "hr"):
            lines += 1
        elif token.type in ("fence", "code_block"):
            lines += token.content.count("\n")
        elif token.type == "inline" and token.children:
            lines += sum(1 for child in token.children if child.type == "hardbreak")
    return lines
