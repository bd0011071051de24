"""calf-pain 1.1.0 beyond the clinical cases: governance fields, card wording (cards-contract.md)
and the fail-safe decisions of issue 12, each pinned on facts as the mapper contract defines them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from fhir_mappings.facts import vocabulary
from rules.engine import Assessment, evaluate
from rules.pack import bundled_pack_files, load_pack
from service.config import Settings
from tests.fhir_builders import NOW
from tests.strategies import as_facts

TYPES = {name: kind for name, (kind, _) in vocabulary().types().items()}
DOCUMENT = json.loads(bundled_pack_files()["calf-pain@1.1.0"].read_text("utf-8"))
PACK = load_pack(DOCUMENT, TYPES)
SIDES = re.compile(r"\b(left|right|both legs|side not recorded)\b", re.IGNORECASE)
# The longest text a placeholder can render to (scores and counts are small integers).
WORST = {
    "points": "-2",
    "undocumented": "10",
    "score": "10 (between -2 and 9 once undocumented items are known)",
}


def assess(**values: Any) -> Assessment:
    """Evaluate 1.1.0 on facts given as name=value (documented an hour ago)."""
    return evaluate(
        PACK, as_facts({name: (value, NOW - timedelta(hours=1)) for name, value in values.items()})
    )


def topics(assessment: Assessment) -> set[str]:
    return {r.topic for r in assessment.recommendations}


def rendered_worst(text: str) -> str:
    return re.sub(r"\{(points|undocumented|score):[a-z_]+\}", lambda m: WORST[m.group(1)], text)


def summaries() -> list[tuple[str, str]]:
    found = []
    for rule in DOCUMENT["rules"]:
        found.append((rule["id"], rule["summary"]))
        found += [(rule["id"], v["summary"]) for v in rule.get("variants", []) if "summary" in v]
    return found


# --- governance -----------------------------------------------------------------------------------


def test_the_pack_is_governed_cited_and_not_yet_approved() -> None:
    """Active from 2026-12-07, no approval recorded (none was available), the 1.1.0 changelog
    first and 1.0.0's kept, every source a URL."""
    assert (DOCUMENT["status"], DOCUMENT["effective"]["from"]) == ("active", "2026-12-07")
    assert DOCUMENT["approvals"] == []
    assert [entry["version"] for entry in DOCUMENT["changelog"]][:2] == ["1.1.0", "1.0.0"]
    assert all(citation.get("url", "").startswith("http") for citation in DOCUMENT["citations"].values())


def test_every_rule_cites_a_section_and_every_definition_is_explained() -> None:
    """Every rule names its guideline and section; every definition has a note."""
    assert all(rule.citation.section and rule.citation.url for rule in PACK.rules)
    assert set(DOCUMENT["definition_notes"]) == set(DOCUMENT["definitions"])


def test_every_changelog_line_of_1_1_says_why_or_cites() -> None:
    """A changelog line says why it changed, on which citation (the wording line excepted)."""
    changes = DOCUMENT["changelog"][0]["changes"]
    explained = [c for c in changes if "Why" in c or "Citation" in c or "citation" in c.lower()]
    assert len(explained) >= len(changes) - 2


def test_1_2_is_the_default_and_1_0_and_1_1_stay_bundled() -> None:
    """The deployed default is 1.2.0 (1.1.0's patient-view answer plus the order hooks, issue 17);
    1.0.0 and 1.1.0 are still shipped (shadow, replay, diff)."""
    assert Settings.model_fields["active_pack"].default == "calf-pain@1.2.0"
    assert {"calf-pain@1.0.0", "calf-pain@1.1.0", "calf-pain@1.2.0"} <= set(bundled_pack_files())


# --- card wording (cards-contract.md) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_id", "summary"), summaries(), ids=[f"{r}:{i}" for i, (r, _) in enumerate(summaries())]
)
def test_summaries_fit_the_card_builder_and_name_no_side(rule_id: str, summary: str) -> None:
    """At most 120 characters once rendered (the builder adds the side), and no side in the text."""
    assert len(rendered_worst(summary)) <= 120, rule_id
    assert not SIDES.search(summary), rule_id


def test_every_source_label_fits() -> None:
    """Guideline, section and pack label stay within the card builder's 200-character source label."""
    for rule in PACK.rules:
        label = f"{rule.citation.guideline} {rule.citation.section} — rules {PACK.key}"
        assert len(label) <= 200, rule.id


def test_the_red_flags_are_critical_urgent_referrals() -> None:
    """Eight red flags: the six of GUIDANCE §1.4 plus spinal infection and an unreadable record."""
    red = {rule.id for rule in PACK.rules if rule.red_flag}
    assert red == {
        "red-flag-acute-limb-ischaemia",
        "red-flag-clti",
        "red-flag-phlegmasia",
        "red-flag-compartment-syndrome",
        "red-flag-cauda-equina",
        "red-flag-infection",
        "red-flag-spinal-infection",
        "red-flag-unreadable-finding",
    }
    assert all((r.topic, r.indicator) == ("urgent-referral", "critical") for r in PACK.rules if r.red_flag)


# --- fail-safe DVT exclusion -------------------------------------------------------------------------


def _reads(name: str, key: str, seen: set[str] | None = None) -> bool:
    """Whether definition ``name`` reads an expression of kind ``key`` (directly or not)."""
    seen = seen if seen is not None else set()

    def walk(node: object) -> bool:
        if isinstance(node, Mapping):
            if key in node:
                return True
            ref = node.get("def")
            if isinstance(ref, str) and ref not in seen:
                seen.add(ref)
                if walk(DOCUMENT["definitions"][ref]):
                    return True
            return any(walk(value) for value in node.values())
        if isinstance(node, list):
            return any(walk(value) for value in node)
        return False

    return walk(DOCUMENT["definitions"][name])


def test_dvt_exclusion_reads_the_decided_score_never_the_documented_points() -> None:
    """`dvt_excluded` rests on `score` (decided), not on `points` (documented items only)."""
    assert _reads("dvt_excluded", "score")
    assert not _reads("dvt_excluded", "points")


WELLS_ABSENT = dict.fromkeys(
    (
        "on_active_cancer_treatment",
        "paralysis_paresis",
        "plaster_cast_immobilisation",
        "bedridden",
        "recent_major_surgery",
        "calf_tenderness_right",
        "entire_leg_swollen_right",
        "pitting_oedema_right",
        "collateral_superficial_veins",
        "wells_alternative_diagnosis",
    ),
    False,
) | {"calf_circumference_difference": 0.0}
STRAIN = {
    "calf_pain_right": True,
    "acute_onset_during_sport_with_pop": True,
    "muscle_belly_tenderness_right": True,
}


def test_negative_d_dimer_excludes_only_on_a_decided_score() -> None:
    """Undecided Wells + negative D-dimer: DVT card offering the scan; decided <= 1: excluded."""
    undecided = assess(**STRAIN, d_dimer_feu=300.0)
    (dvt,) = [r for r in undecided.recommendations if r.topic == "duplex-dvt"]
    assert dvt.summary.startswith("Complete the Wells score or scan: D-dimer negative")
    assert [s["label"] for s in dvt.suggestions] == ["Order proximal leg-vein ultrasound"]
    assert "conservative" not in topics(undecided)
    decided = assess(**STRAIN, **WELLS_ABSENT, d_dimer_feu=300.0)
    assert "duplex-dvt" not in topics(decided)
    assert "conservative" in topics(decided)


def test_an_unreadable_dvt_record_blocks_every_exclusion() -> None:
    """Negative scan and negative D-dimer, but another DVT record is unreadable: not excluded."""
    tested = dict(STRAIN, d_dimer_feu=300.0, venous_duplex_positive=False)
    assert "duplex-dvt" not in topics(assess(**tested))
    for unreadable in ("unreadable_dvt_finding", "d_dimer_unclear", "venous_imaging_unclear"):
        shown = assess(**tested, **{unreadable: True})
        assert "duplex-dvt" in topics(shown), unreadable
        assert "conservative" not in topics(shown), unreadable


def test_a_provisional_dvt_is_suspicion_and_a_confirmed_one_is_not_a_work_up() -> None:
    """dvt_suspected opens the Wells work-up; dvt_active (confirmed, current) gets the confirmed card."""
    provisional = {r.rule_id for r in assess(calf_pain_right=True, dvt_suspected=True).recommendations}
    confirmed = {r.rule_id for r in assess(calf_pain_right=True, dvt_active=True).recommendations}
    assert provisional == {"dvt-workup"}
    assert confirmed == {"dvt-confirmed"}


# --- red flags and the non-critical compartment card ---------------------------------------------


def test_an_undecided_compartment_code_gives_way_to_a_red_flag() -> None:
    """A coded compartment syndrome alone: warning card; with a cauda-equina red flag, only critical cards."""
    alone = assess(calf_pain_right=True, compartment_syndrome_acute=True)
    assert [(r.rule_id, r.indicator) for r in alone.recommendations] == [
        ("compartment-syndrome-unconfirmed", "warning")
    ]
    with_red_flag = assess(calf_pain_right=True, compartment_syndrome_acute=True, saddle_anaesthesia=True)
    assert {r.indicator for r in with_red_flag.recommendations if r.topic == "urgent-referral"} == {
        "critical"
    }


def test_fever_alone_or_back_pain_alone_is_not_a_spinal_red_flag() -> None:
    """Both are needed: fever with back pain (or sciatica)."""
    assert "urgent-referral" not in topics(assess(calf_pain_right=True, low_back_pain=True))
    assert "urgent-referral" not in topics(assess(calf_pain_right=True, fever=True))
    assert "red-flag-spinal-infection" in {
        r.rule_id for r in assess(fever=True, low_back_pain=True).recommendations
    }


# --- every cause gets an answer --------------------------------------------------------------------


def test_neuropathy_alone_gets_no_card() -> None:
    """The pack's decision (neuropathy_pattern note): no conservative or other card; pattern neurogenic."""
    assessment = assess(calf_pain_right=True, peripheral_neuropathy=True, burning_pain_at_rest=True)
    assert assessment.recommendations == ()
    assert assessment.pattern == "neurogenic"


def test_a_recent_leg_fracture_withholds_rest_and_ice() -> None:
    """A bruise-like blow with a recent fracture: no conservative card (fracture care is not PEACE & LOVE)."""
    assert "conservative" in topics(assess(calf_pain_right=True, direct_trauma=True))
    assert "conservative" not in topics(
        assess(calf_pain_right=True, direct_trauma=True, leg_fracture_recent=True)
    )
