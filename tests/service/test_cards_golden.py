"""Cards as a clinician sees them: rendered Markdown against reviewed snapshots, and length budgets.

Snapshots live in tests/service/golden/<topic>.html: the card's summary, then its detail rendered
by a GFM-like Markdown renderer. After a deliberate change, regenerate them with
``CALF_CDS_UPDATE_GOLDEN=1 uv run pytest tests/service/test_cards_golden.py`` (the run fails so
that nobody forgets to review the diff), read the diff, and commit it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from service.hooks.cards import SUMMARY_LIMIT, card_summary, fit
from tests.service.card_cases import TOPIC_CASES, all_cases, cards_for, render, rendered_lines, topic_card

GOLDEN = Path(__file__).parent / "golden"
SIDES = ("Left leg: ", "Right leg: ", "Both legs: ", "Side not recorded: ")
FHIR_REFERENCE = re.compile(r"\b(Observation|Condition|Patient|Procedure|Encounter)/[A-Za-z0-9.\-]+")
CASES = all_cases()


def snapshot(topic: str) -> str:
    card = topic_card(topic)
    return f"<!-- summary: {card.summary} -->\n" + render(card.detail or "")


@pytest.mark.parametrize("topic", sorted(TOPIC_CASES))
def test_rendered_card_matches_its_reviewed_snapshot(topic: str) -> None:
    """Each topic's card renders exactly as the reviewed snapshot (GFM-like Markdown → HTML)."""
    path = GOLDEN / f"{topic}.html"
    shown = snapshot(topic)
    if os.environ.get("CALF_CDS_UPDATE_GOLDEN") == "1":
        path.write_text(shown, "utf-8")
        pytest.fail(f"snapshot {path.name} rewritten: review the diff, then run again without the variable")
    assert path.exists(), f"no snapshot {path}; write it with CALF_CDS_UPDATE_GOLDEN=1"
    assert shown == path.read_text("utf-8")


@pytest.mark.parametrize("topic", sorted(TOPIC_CASES))
def test_findings_render_as_separate_lines(topic: str) -> None:
    """Single newlines never run findings together: every finding is its own list item."""
    card = topic_card(topic)
    html = render(card.detail or "")
    findings = [line for line in (card.detail or "").splitlines() if line.startswith("- ")]
    assert findings, "a card shows the findings that decided it"
    assert html.count("<li>") == len(findings)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_every_card_keeps_to_the_length_budget(case: dict[str, Any]) -> None:
    """Summary under 140 characters leading with the side; detail at most eight rendered lines."""
    for card in cards_for(case):
        assert len(card.summary) <= SUMMARY_LIMIT, card.summary
        if not card.summary.startswith(SIDES):  # no side only when no leg finding is shown
            assert not re.search(r" · (left|right|both legs) · ", card.detail or ""), card.summary
        assert rendered_lines(card.detail or "") <= 8, card.detail


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_no_card_shows_a_raw_fhir_reference(case: dict[str, Any]) -> None:
    """Clinician text names findings, never resource ids such as ``Observation/obs-1``."""
    for card in cards_for(case):
        assert not FHIR_REFERENCE.search(card.summary + (card.detail or "")), card.detail


def test_dvt_card_names_its_leg_and_shows_its_evidence() -> None:
    """The DVT card leads with the leg, and shows the findings (with side and date) that scored."""
    card = topic_card("duplex-dvt")
    assert card.summary.startswith("Left leg: DVT likely")
    assert "- Tenderness along the deep veins · left · 2026-11-20" in (card.detail or "")
    assert "Wells DVT **2** on recorded items (could be 0 to 9)" in (card.detail or "")


def test_an_evidence_label_is_not_doubled_with_the_resource_display() -> None:
    """The card uses the finding's own label, not "our label + the resource's display"."""
    case = topic_case_with_display()
    (card,) = cards_for(case)
    assert "- Leg pain brought on by walking or exercise · 2026-11-20" in (card.detail or "")
    assert "Leg pain on exertion" not in (card.detail or "")


def topic_case_with_display() -> dict[str, Any]:
    """The Sandbox's own patient: coded findings whose text differs from their display."""
    finding = "http://calf-cds.org/fhir/CodeSystem/finding"
    subject = {"reference": "Patient/sbx-1"}

    def observation(oid: str, coding: dict[str, str], text: str, **extra: Any) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": oid, "status": "final", "subject": subject,
                "code": {"coding": [coding], "text": text}, "effectiveDateTime": "2026-11-20",
                "valueBoolean": True, **extra}  # fmt: skip

    right = {"coding": [{"system": "http://snomed.info/sct", "code": "62175007"}]}
    return {
        "now": "2026-11-20T09:00:00Z",
        "patient": {"resourceType": "Patient", "id": "sbx-1", "gender": "male", "birthDate": "1954-03-17"},
        "resources": [
            observation(
                "sbx-1-calf-pain",
                {"system": "http://snomed.info/sct", "code": "300954003", "display": "Pain in calf"},
                "Pain in calf",
                bodySite=right,
            ),
            observation(
                "sbx-1-exertional",
                {
                    "system": finding,
                    "code": "exertional-leg-pain",
                    "display": "Leg pain brought on by walking",
                },
                "Leg pain on exertion",
            ),
            observation(
                "sbx-1-relief-standing",
                {
                    "system": finding,
                    "code": "relief-standing-still",
                    "display": "Pain relieved by standing still",
                },
                "Relieved by standing still",
            ),
        ],
    }


def test_a_long_summary_is_cut_at_a_word_boundary() -> None:
    """A 1.0.0 summary made too long by the side is cut at a word with "…", under 140 characters."""
    summary = card_summary("Side not recorded", "Venous pattern: " + "word " * 40)
    assert len(summary) <= SUMMARY_LIMIT
    assert summary.startswith("Side not recorded: Word word")
    assert summary.endswith("word…")


def test_fit_keeps_a_short_text_whole() -> None:
    """Text within the limit is returned unchanged."""
    assert fit("Left leg: D-dimer first") == "Left leg: D-dimer first"


@pytest.mark.parametrize(
    ("pack_summary", "shown"),
    [
        ("Venous pattern: DVT unlikely. D-dimer first.", "Left leg: DVT unlikely. D-dimer first."),
        ("Red flag, arterial pattern: possible ALI. Now.", "Left leg: Red flag: possible ALI. Now."),
        ("Musculoskeletal pattern (calf cramp): stretch.", "Left leg: Calf cramp: stretch."),
        ("Venous pattern, pregnancy: duplex directly.", "Left leg: Pregnancy: duplex directly."),
        (
            "DVT unlikely on recorded items — D-dimer within 4 h",
            "Left leg: DVT unlikely on recorded items — D-dimer within 4 h",
        ),
    ],
)
def test_summary_leads_with_the_action(pack_summary: str, shown: str) -> None:
    """1.0.0's leading "<Pattern> pattern:" goes; a 1.1.0 summary (action first) is kept."""
    assert card_summary("Left leg", pack_summary) == shown
