"""`calf-cds rules diff`: a pack change read out as a clinician's summary, not a JSON diff."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_mappings.facts import vocabulary
from rules.errors import PackError
from rules.pack import bundled_pack_files
from service.cli import main
from service.governance.diff import diff_packs
from service.governance.wording import Wording
from tests.service.governance.conftest import RULE_PACKS

OLD: dict[str, Any] = json.loads(bundled_pack_files()["calf-pain@0.1.0"].read_text("utf-8"))
NEW: dict[str, Any] = json.loads((RULE_PACKS / "calf-pain-0.1.1.json").read_text("utf-8"))
WORDS = Wording(vocabulary(), OLD)


def render(old: dict[str, Any], new: dict[str, Any]) -> str:
    return diff_packs(old, new, Wording(vocabulary(), old), Wording(vocabulary(), new)).render()


def test_diff_reads_as_a_clinical_summary() -> None:
    """Threshold, criteria, urgency, wording, suppression, citation and approval changes, in words."""
    text = render(OLD, NEW)
    assert text.startswith("What changes from calf-pain 0.1.0 to calf-pain 0.1.1")
    assert (
        "In short: 1 changelog entry, 1 card change, 1 threshold, 1 criteria change, 1 suppression change"
        in text
    )
    assert "2 wording changes" in text
    expected = [
        "Definition “DVT suspected” (used by: Suspected deep vein thrombosis, Musculoskeletal calf pain): "
        "calf circumference difference > 0 cm → ≥ 1 cm",
        "Definition “MSK evidence” (used by: Musculoskeletal calf pain): no longer counts leg cramp",
        "Card “Resting ankle-brachial index”: urgency info → warning",
        "Card “Resting ankle-brachial index” now suppresses conservative cards",
        "New source: NICE CG147 Peripheral arterial disease: diagnosis and management",
        "Approved by Test Reviewer (clinical safety officer) on 2026-11-25",
        "Status: “active” → “draft”",
    ]
    flat = " ".join(text.split())
    for sentence in expected:
        assert sentence in flat
    assert "{" not in text  # no JSON leaks into the summary


def test_same_pack_has_no_clinical_changes() -> None:
    text = render(OLD, OLD)
    assert "In short: 1 governance note." in text  # 0.1.0 has no recorded approval
    assert "No clinical content changed" in text


def test_added_and_removed_cards_score_items_and_orders() -> None:
    new = json.loads(json.dumps(OLD))
    removed = new["rules"].pop(-1)
    new["rules"].append(dict(removed, id="conservative-new", title="Calf strain", summary="Rest and load."))
    wells = new["scores"]["wells_dvt"]["items"]
    wells[0]["points"] = 2
    wells.append({"id": "pregnant", "label": "Pregnancy", "points": 1, "when": {"fact": "pregnant"}})
    dvt = next(r for r in new["rules"] if r["id"] == "dvt-workup")
    dvt["suggestions"][0]["request"]["priority"] = "urgent"
    dvt["variants"][0]["when"] = {"score": ["wells_dvt", "<=", 0]}
    dvt["shown_to"] = ["emergency"]  # a field the summary does not word out is still named
    new["definition_notes"] = {"dvt_suspected": "Any unilateral swelling counts."}
    text = " ".join(render(OLD, new).split())
    assert "New card “Calf strain” (conservative, info): “Rest and load.” — fires when" in text
    assert "Card “Musculoskeletal calf pain” (conservative, info) removed" in text
    assert (
        "item “Active cancer (treatment ongoing, within 6 months, or palliative)” now scores +2 points (was +1 point)"
        in text
    )
    assert "new item “Pregnancy” (+1 point) when pregnant" in text
    assert "order “Order proximal leg-vein ultrasound” priority stat → urgent" in text
    assert "Two-level DVT Wells score ≤ 1 → ≤ 0" in text
    assert "Card “Suspected deep vein thrombosis”: shown to changed" in text
    assert "Note on “DVT suspected”: Any unilateral swelling counts." in text


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ({"cmp": ["d_dimer_feu", ">=", 500]}, "D-dimer (FEU) ≥ 500 ng/mL"),
        ({"cmp": ["abi_left", "<=", 0.9]}, "ankle-brachial index (left) ≤ 0.9"),
        ({"cmp": ["body_temperature", ">=", 38]}, "body temperature ≥ 38 °C"),
        ({"not": {"true": {"fact": "pad"}}}, "unless peripheral artery disease"),
        ({"not": {"fact": "fever"}}, "fever documented as absent"),
        ({"known": "abi"}, "ankle-brachial index documented"),
        ({"is": ["pedal_pulses", ["diminished", "absent"]]}, "pedal pulses diminished or absent"),
        ({"score": ["wells_dvt", "<=", 1]}, "Two-level DVT Wells score ≤ 1"),
        ({"def": "dvt_excluded"}, "“DVT excluded”"),
        ({"all": [{"fact": "fever"}, {"fact": "erythema"}]}, "(fever and erythema)"),
    ],
)
def test_expressions_in_words(expression: dict[str, Any], words: str) -> None:
    assert WORDS.expr(WORDS.read(expression)) == words


def test_cli_diff_by_version_and_by_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Packs are named by bare version (found in CALF_CDS_RULES_DIR) or by file path."""
    monkeypatch.setenv("CALF_CDS_RULES_DIR", str(RULE_PACKS))
    assert main(["rules", "diff", "0.1.0", "0.1.1"]) == 0
    by_version = capsys.readouterr().out
    assert main(["rules", "diff", "calf-pain@0.1.0", str(RULE_PACKS / "calf-pain-0.1.1.json")]) == 0
    assert capsys.readouterr().out == by_version
    assert main(["rules", "diff", "0.1.0", "7.7.7"]) == 2
    assert "no pack '7.7.7'" in capsys.readouterr().err


def test_cli_list_shows_status_release_and_role(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("CALF_CDS_RULES_DIR", str(RULE_PACKS))
    monkeypatch.setenv("CALF_CDS_SHADOW_PACKS", "calf-pain@0.1.1")
    assert main(["rules", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    released = next(line for line in lines if line.startswith("calf-pain@0.1.0"))
    candidate = next(line for line in lines if line.startswith("calf-pain@0.1.1"))
    assert released.split()[1:3] == ["active", "2026-11-22"]
    assert released.endswith("active")
    assert candidate.split()[1:3] == ["draft", "-"]
    assert candidate.endswith("shadow")


def test_changelog_comes_first_and_wording_after_the_clinical_changes() -> None:
    """A reviewer reads why (the new version's changelog, one entry per line), then what fires,
    then the wording of the cards."""
    text = render(OLD, NEW)
    order = [text.index(f"\n{name}\n") for name in ("Changelog", "Cards", "Suppressions", "Wording")]
    assert order == sorted(order)
    assert "• 0.1.1 (2026-11-25): Fixture:" in text


def test_a_new_variant_is_reported_as_new_not_as_a_rewrite_of_its_neighbour() -> None:
    """Variants pair by their condition: inserting one before the others names it alone."""
    new = copy.deepcopy(OLD)
    rule = next(r for r in new["rules"] if r.get("variants"))
    first = rule["variants"][0]
    rule["variants"].insert(0, {"when": {"fact": "pregnant"}, "summary": "Brand-new wording."})
    text = " ".join(render(OLD, new).split())
    assert "new wording when pregnant: “Brand-new wording.”" in text
    assert f"summary “{first.get('summary', rule['summary'])}” →" not in text


def test_wrapping_a_condition_in_true_is_read_as_one_change() -> None:
    """`fact` → `true(fact)` says that 'not documented' now reads as not met, in one sentence."""
    new = copy.deepcopy(OLD)
    new["definitions"]["dvt_probe"] = {"any": [{"true": {"fact": "pregnant"}}, {"fact": "bedridden"}]}
    old = copy.deepcopy(OLD)
    old["definitions"]["dvt_probe"] = {"any": [{"fact": "pregnant"}, {"fact": "bedridden"}]}
    text = " ".join(render(old, new).split())
    assert "pregnant now counts only when documented (not documented reads as not met)" in text
    assert "no longer counts" not in text


def test_a_condition_that_does_not_compile_is_refused_naming_the_pack() -> None:
    """The diff reads conditions with the pack's own compiler: one it cannot read is an error."""
    new = copy.deepcopy(OLD) | {"version": "0.1.7"}
    new["rules"][0]["when"] = {"fact": "no_such_fact"}
    with pytest.raises(PackError, match=r"^unknown fact 'no_such_fact' \(calf-pain@0\.1\.7\)$"):
        render(OLD, new)


def test_the_diff_names_the_hooks_of_a_rule_and_the_orders_a_suggestion_replaces(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """1.1.0 → 1.2.0: the red flags answer the order hooks, new order cards name their hooks, and a
    suggestion that deletes draft orders says which kind it replaces."""
    from service.cli import main

    assert main(["rules", "diff", "calf-pain@1.1.0", "calf-pain@1.2.0"]) in (0, 1)
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "“Acute limb ischaemia” now answers patient-view, order-select, order-sign (was patient-view)" in out
    )
    assert "on order-select, order-sign:" in out
    assert "replacing the draft venous_duplex order(s)" in out
