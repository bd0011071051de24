"""calf-pain 0.1.0, the walking-skeleton pack: one case per card type, through mapper and engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhir_mappings.facts import vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from rules.engine import Assessment, evaluate
from rules.pack import bundled_pack_files, load_pack
from tests.fhir_builders import (
    NOW,
    SNOMED,
    calf_pain,
    finding,
    observation,
    patient,
    quantity,
)

TYPES = {name: kind for name, (kind, _) in vocabulary().types().items()}
PACK = load_pack(json.loads(bundled_pack_files()["calf-pain@0.1.0"].read_text()), TYPES)
MAPPER = Mapper(vocabulary(), bundled_terminology())


def assess(*resources: dict[str, Any]) -> Assessment:
    facts = MAPPER.map(patient_id="p1", patient=patient(), resources=resources, now=NOW)
    return evaluate(PACK, facts)


CASES = [
    pytest.param(
        [
            calf_pain(),
            finding("calf-circumference-difference", quantity(3.5, "cm")),
            finding("acute-onset-during-sport-with-pop"),
        ],
        {"duplex-dvt"},
        {"conservative"},
        id="dvt-signs-give-duplex-not-conservative",
    ),
    pytest.param(
        [
            calf_pain(),
            finding("exertional-leg-pain"),
            finding("relief-standing-still"),
            finding("reproducible-walking-distance"),
        ],
        {"abi"},
        {"conservative", "duplex-dvt", "urgent-referral"},
        id="classic-claudication-no-abi",
    ),
    pytest.param(
        [calf_pain(), finding("acute-onset-during-sport-with-pop"), finding("muscle-belly-tenderness")],
        {"conservative"},
        {"duplex-dvt", "urgent-referral"},
        id="calf-strain-conservative",
    ),
    pytest.param(
        [
            calf_pain(),
            finding("sudden-onset"),
            finding("cold-pale-limb"),
            finding("acute-onset-during-sport-with-pop"),
        ],
        {"urgent-referral"},
        {"conservative"},
        id="acute-limb-ischaemia-red-flag",
    ),
    pytest.param(
        [finding("exertional-leg-pain", days_ago=400), finding("warmth")],
        set(),
        {"abi", "duplex-dvt", "conservative", "urgent-referral"},
        id="no-calf-complaint-no-cards",
    ),
    pytest.param(
        [
            calf_pain(),
            finding("exertional-leg-pain"),
            observation(SNOMED, "446841001", **quantity(0.82, "1")),
        ],
        set(),
        {"abi"},
        id="abnormal-abi-on-file-no-abi-card",
    ),
]


@pytest.mark.parametrize(("resources", "expected", "forbidden"), CASES)
def test_skeleton_pack(resources: list[dict[str, Any]], expected: set[str], forbidden: set[str]) -> None:
    """Each card type appears exactly when the guidance says, and never a forbidden one."""
    topics = set(assess(*resources).topics())
    assert expected <= topics
    assert not (forbidden & topics)


def test_red_flag_is_critical() -> None:
    """A red flag is an urgent-referral card with indicator critical."""
    assessment = assess(calf_pain(), finding("sudden-onset"), finding("cold-pale-limb"))
    (red,) = [r for r in assessment.recommendations if r.topic == "urgent-referral"]
    assert (red.indicator, red.red_flag) == ("critical", True)


def test_wells_criteria_are_listed_with_their_state() -> None:
    """The DVT card lists every Wells criterion as met, not met, or not documented."""
    assessment = assess(
        calf_pain(), finding("entire-leg-swollen"), finding("collateral-superficial-veins", False)
    )
    (dvt,) = [r for r in assessment.recommendations if r.topic == "duplex-dvt"]
    states = {c.label: c.state for c in dvt.criteria}
    assert states["Entire leg swollen"] == "met"
    assert states["Collateral superficial veins (non-varicose)"] == "not met"
    assert states["Previously documented DVT"] == "not documented"
