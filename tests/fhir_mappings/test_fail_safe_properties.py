"""The fail-safe principle, as properties (Hypothesis): unreadable data never reassures.

Mapper level (holds for any pack): blurring one DVT or red-flag finding — no side, an unreadable
unit, a text-only flag, free text — never turns a fact of its concern into "absent", and never
loses it silently: the finding still holds, or the chart says it could not be read.
Card level (runs against the default pack): removing, blurring or ageing one such finding never
turns a work-up or red-flag answer into a conservative one.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings.facts import Facts, vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from rules.engine import evaluate
from service.config import Settings
from service.hooks.packs import PackRegistry
from tests.fhir_builders import NOW, patient
from tests.strategies import BLURS, CONCERN_FINDINGS, PERTURBATIONS, concern_charts, concern_record, perturb

VOCABULARY = vocabulary()
MAPPER = Mapper(VOCABULARY, bundled_terminology())
CONCERN_FACTS = frozenset(
    name
    for spec in VOCABULARY.specs.values()
    if spec.concern
    for name in spec.names()
    if spec.type == "boolean"
)
ALL_CONCERN_FACTS = frozenset(
    name for spec in VOCABULARY.specs.values() if spec.concern for name in spec.names()
)
REPORTS = (
    "unreadable_dvt_finding",
    "unreadable_red_flag_finding",
    "d_dimer_unclear",
    "venous_imaging_unclear",
)
DEFAULT_PACK = str(Settings.model_fields["active_pack"].default)
WORK_UP = frozenset({"duplex-dvt", "urgent-referral"})


def facts_of(chart: list[dict[str, Any]]) -> Facts:
    return MAPPER.map(patient_id="p1", patient=patient(), resources=chart, now=NOW)


def changed(chart: list[dict[str, Any]], index: int, how: str) -> list[dict[str, Any]]:
    after = perturb(chart[index], how)
    return [r for i, r in enumerate(chart) if i != index] + ([after] if after is not None else [])


@settings(max_examples=150, deadline=None)
@given(concern_charts(), st.sampled_from(PERTURBATIONS))
def test_blurring_never_makes_a_concern_fact_absent(
    drawn: tuple[list[dict[str, Any]], int], how: str
) -> None:
    """No DVT or red-flag fact goes from true or undocumented to False when one finding is blurred,
    removed or aged."""
    chart, index = drawn
    before, after = facts_of(chart), facts_of(changed(chart, index, how))
    turned = [n for n in CONCERN_FACTS if before[n].value is not False and after[n].value is False]
    assert not turned, f"{how} turned {turned} to False"


@settings(max_examples=150, deadline=None)
@given(concern_charts(), st.sampled_from(BLURS))
def test_blurring_never_loses_a_finding_silently(drawn: tuple[list[dict[str, Any]], int], how: str) -> None:
    """After blurring, the finding is still read as present, or the chart reports it as unreadable."""
    chart, index = drawn
    after = facts_of(changed(chart, index, how))
    reference = f"Observation/{chart[index]['id']}"
    still = [
        n
        for n in ALL_CONCERN_FACTS | frozenset(REPORTS)
        if (after[n].value is True or isinstance(after[n].value, float))
        and any(e.reference.startswith(reference) for e in after[n].evidence)
    ]
    assert still, f"{how} of {chart[index]['code']} left no trace"


@cache
def _registry() -> PackRegistry:
    return PackRegistry.load(Settings(active_pack=DEFAULT_PACK, shadow_packs=(), rules_dir=None))


def _topics(chart: list[dict[str, Any]]) -> set[str]:
    assessment = evaluate(_registry().active, facts_of(chart))
    return {r.topic for r in assessment.recommendations}


@settings(max_examples=100, deadline=None)
@given(concern_charts(), st.sampled_from(PERTURBATIONS))
def test_one_changed_finding_never_gives_a_conservative_answer(
    drawn: tuple[list[dict[str, Any]], int], how: str
) -> None:
    """A chart that gets a DVT work-up or an urgent referral never gets conservative care instead
    after one of its DVT or red-flag findings is removed, blurred or aged."""
    chart, index = drawn
    before = _topics(chart)
    if not before & WORK_UP:
        return
    after = _topics(changed(chart, index, how))
    assert not ("conservative" in after and not after & WORK_UP), (
        f"{how}: {sorted(before)} -> {sorted(after)}"
    )


def test_every_concern_finding_template_is_read() -> None:
    """Each template the strategies draw is read by the mapper as a positive finding (no dead templates)."""
    for index, name in enumerate(CONCERN_FINDINGS):
        facts = facts_of([concern_record(name, "right", 2.0, index)])
        read = [n for n in ALL_CONCERN_FACTS | frozenset(REPORTS) if facts[n].value not in (None, False)]
        assert read, name
