"""The safety invariants, for every bundled pack, over arbitrary combinations of facts.

Each fact is documented true, documented false or missing; numbers sit on both sides of every
threshold (``tests/strategies.py``). The invariants (issue 3, DESIGN.md):

* evaluation is total: it never raises, and every card renders with its pack version and citation;
* no ``conservative`` card while a red flag is present or DVT is suspected and not excluded;
* a red flag always yields an ``urgent-referral`` card with indicator ``critical``;
* missing data never counts as a negative finding: turning documented negatives (false, or a
  reassuring number) into "not documented" never removes an urgent-referral or DVT card and never
  adds a conservative card;
* adding a DVT risk item (a Wells item documented present) never removes a DVT card;
* ageing a red-flag finding past its look-back window (it is then not documented) never creates a
  red flag;
* on the order hooks (packs from 1.2.0): the same, for whatever is being ordered — every red flag
  patient-view shows, critical; never a conservative card; missing data never silences a card that
  asks for more care; more DVT risk never removes a DVT warning.

"Red flag", "DVT suspected" and "DVT excluded" are read from each pack's own definitions; the
guidance's red-flag triggers are also planted directly (packs from 1.0.0 on).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fhir_mappings.facts import Facts, FactValue
from rules.codes import Pattern, Topic
from rules.engine import Assessment, evaluate
from rules.expressions import Context
from rules.pack import ORDER_HOOKS, RulePack, bundled_pack_files, load_pack
from service.hooks.cards import build_cards
from service.hooks.explanation import explanation
from tests.fhir_builders import NOW
from tests.strategies import (
    REASSURING,
    RED_FLAG_FINDINGS,
    VOCABULARY,
    Drawn,
    as_facts,
    base_name,
    fact_values,
    msk_presentations,
    order_presentations,
    patients,
)

TYPES = {name: kind for name, (kind, _) in VOCABULARY.types().items()}
PACKS: dict[str, RulePack] = {
    key: load_pack(json.loads(path.read_text("utf-8")), TYPES) for key, path in bundled_pack_files().items()
}
KEYS = sorted(PACKS)
# From 1.0.0 on, red flags are never gated on the calf complaint and the guidance triggers are planted.
CURRENT = [key for key in KEYS if tuple(map(int, PACKS[key].version.split("."))) >= (1, 0, 0)]
# From 1.1.0 on, the red flags the issue-12 review added are planted too.
FROM_1_1 = [key for key in KEYS if tuple(map(int, PACKS[key].version.split("."))) >= (1, 1, 0)]
PROPERTY = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OPTIONS = st.booleans()


def options_for(pack: RulePack, flag: bool) -> dict[str, bool]:
    """Every option of the pack switched to ``flag`` (on or off together)."""
    return dict.fromkeys(pack.options, flag)


def context(pack: RulePack, facts: Facts, options: Mapping[str, bool]) -> Context:
    return Context(facts, pack.definitions, pack.scores, {**pack.options, **options})


def holds(ctx: Context, name: str) -> bool:
    return name in ctx.definitions and ctx.definition(name) is True


def topics(assessment: Assessment) -> set[str]:
    return {r.topic for r in assessment.recommendations}


@pytest.mark.parametrize("key", KEYS)
@PROPERTY
@given(facts=patients(), option=OPTIONS)
def test_evaluation_is_total_and_every_card_renders(key: str, facts: Facts, option: bool) -> None:
    """No combination of facts makes a rule fail; every card shows pack and citation, its page the pattern."""
    pack = PACKS[key]
    assessment = evaluate(pack, facts, options=options_for(pack, option))
    assert assessment.errors == ()
    assert assessment.pattern in set(Pattern)
    assert topics(assessment) <= set(Topic)
    for card, recommendation in build_cards(assessment, facts, VOCABULARY, patient_id="p1", now=NOW):
        assert len(card.summary) < 140
        assert pack.key in card.source.label
        assert recommendation.citation.guideline in card.source.label
        assert card.detail is not None
        page = explanation(card, recommendation, assessment, facts, VOCABULARY, now=NOW, expires_at=NOW)
        assert page["pattern"]["overall"] == assessment.pattern  # the page explains the pattern
        assert page["citation"]["section"] == recommendation.citation.section


@pytest.mark.parametrize("key", KEYS)
@PROPERTY
@given(facts=st.one_of(patients(), msk_presentations().map(as_facts)), option=OPTIONS)
def test_no_conservative_card_with_a_red_flag_or_an_open_dvt_question(
    key: str, facts: Facts, option: bool
) -> None:
    """Never conservative care while a red flag is present or DVT is suspected and not excluded."""
    pack = PACKS[key]
    options = options_for(pack, option)
    assessment = evaluate(pack, facts, options=options)
    ctx = context(pack, facts, options)
    shown = topics(assessment)
    open_dvt = holds(ctx, "dvt_suspected") and not holds(ctx, "dvt_excluded")
    danger = holds(ctx, "red_flag") or open_dvt or holds(ctx, "dvt_confirmed")
    if danger or shown & {"urgent-referral", "duplex-dvt"}:
        assert "conservative" not in shown


@pytest.mark.parametrize("key", KEYS)
@PROPERTY
@given(facts=patients(), option=OPTIONS)
def test_a_red_flag_always_gives_a_critical_urgent_referral(key: str, facts: Facts, option: bool) -> None:
    """Whenever the pack's red flag holds, an urgent-referral card with indicator critical is shown.

    Packs before 1.0.0 gate their red-flag rules on a leg complaint; from 1.0.0 on nothing does.
    """
    pack = PACKS[key]
    options = options_for(pack, option)
    assessment = evaluate(pack, facts, options=options)
    ctx = context(pack, facts, options)
    gated = key not in CURRENT
    if holds(ctx, "red_flag") and (holds(ctx, "leg_complaint") or not gated):
        urgent = [r for r in assessment.recommendations if r.topic == "urgent-referral"]
        assert urgent
        assert all(r.indicator == "critical" and r.red_flag for r in urgent)
    kept = {r.rule_id for r in assessment.recommendations}
    for rule in pack.rules:
        if rule.red_flag and rule.when.evaluate(ctx) is True:
            assert rule.id in kept  # no suppression ever removes a red flag


# --- missing is never negative -------------------------------------------------------------------

DATE_MARKERS = ("episode_onset", "symptom_change")
RULE_OUT_TESTS = (
    "d_dimer_feu",
    "d_dimer_ddu",
    "d_dimer_lab_positive",
    "d_dimer_feu_preliminary",
    "d_dimer_ddu_preliminary",
    "venous_duplex_positive",
    "venous_duplex_positive_left",
    "venous_duplex_positive_right",
)


def negatives(pack: RulePack) -> dict[str, object]:
    """Every finding the pack reads that has a negative documented form: false, or a reassuring number.

    D-dimer and ultrasound results are left out here: a resulted test is itself a sign that DVT was
    suspected (GUIDANCE §1.6), so a negative test may rightly raise a DVT card that its absence does
    not. Their rule-out role has its own property below. Date markers (episode onset, symptom
    change) are left out too: the mapper only ever documents them as true, and what they do is
    date-limit other evidence (a D-dimer before the onset, an ABI before the change).
    """
    found: dict[str, object] = {}
    for name in sorted(set(pack.fact_names()) - set(RULE_OUT_TESTS) - set(DATE_MARKERS)):
        kind = TYPES[name]
        if kind == "boolean":
            found[name] = False
        elif kind == "number" and base_name(name) in REASSURING:
            found[name] = REASSURING[base_name(name)]
    return found


@pytest.mark.parametrize("key", KEYS)
@PROPERTY
@given(values=st.one_of(fact_values(), msk_presentations()), data=st.data(), option=OPTIONS)
def test_missing_data_never_counts_as_a_negative_finding(
    key: str, values: dict[str, Drawn], data: st.DataObject, option: bool
) -> None:
    """Not documented is at least as cautious as documented-negative, fact by fact and together.

    Take any patient and some of the findings the pack reads that are not documented true (a few,
    or all of them); in one copy they are documented negative, in the other they are missing. The copy with missing data must show every urgent-referral and DVT
    card the negative copy shows, and no conservative card the negative copy lacks.
    """
    pack = PACKS[key]
    options = options_for(pack, option)
    # Findings documented true stay as they are; the others are compared as negative vs missing.
    candidates = {name: value for name, value in negatives(pack).items() if values[name][0] is not True}
    names = sorted(candidates)
    assume(names)
    share = data.draw(st.sampled_from((0.02, 0.1, 0.3, 1.0)), label="share of findings")
    mask = data.draw(st.binary(min_size=len(names), max_size=len(names)), label="mask")
    chosen = {name for name, byte in zip(names, mask, strict=True) if byte < 256 * share} or {names[0]}
    negative, missing = dict(values), dict(values)
    for name in chosen:
        negative[name] = (candidates[name], NOW)
        missing[name] = (None, None)
    with_negative = topics(evaluate(pack, as_facts(negative), options=options))
    with_missing = topics(evaluate(pack, as_facts(missing), options=options))
    for cautious in ("urgent-referral", "duplex-dvt"):
        if cautious in with_negative:
            assert cautious in with_missing, f"{cautious} lost when {sorted(chosen)} went missing"
    if "conservative" in with_missing:
        assert "conservative" in with_negative, f"conservative gained when {sorted(chosen)} went missing"


# --- the guidance's red-flag triggers (GUIDANCE §1.4), planted into arbitrary patients --------------

RED_FLAG_TRIGGERS: dict[str, dict[str, Any]] = {
    "ali-sudden-cold-pale": {"sudden_onset": True, "cold_pale_limb_right": True},
    "ali-sudden-pulseless": {"sudden_onset": True, "pedal_pulses_left": "absent"},
    "ali-coded": {"acute_limb_ischaemia": True},
    "clti-coded": {"clti_right": True},
    "clti-rest-pain-low-abi": {"rest_pain_relieved_by_dependency": True, "abi_right": 0.35},
    "phlegmasia": {"entire_leg_swollen_left": True, "cyanosis_left": True},
    "compartment-trauma-stretch": {"direct_trauma": True, "pain_on_passive_stretch_right": True},
    "compartment-cast-tense": {"plaster_cast_immobilisation": True, "tense_compartment_left": True},
    "cauda-equina-saddle": {"saddle_anaesthesia": True},
    "cauda-equina-coded": {"cauda_equina": True},
    "cauda-equina-bladder-sciatica": {"bladder_bowel_dysfunction": True, "sciatica_radiculopathy": True},
    "infection-fever-erythema": {"body_temperature": 38.0, "erythema_right": True},
    "infection-fever-cellulitis": {"fever": True, "cellulitis": True},
}


RED_FLAG_TRIGGERS_1_1: dict[str, dict[str, Any]] = {
    "spinal-infection-fever-back-pain": {"body_temperature": 38.2, "low_back_pain": True},
    "spinal-infection-fever-sciatica": {"fever": True, "sciatica_radiculopathy": True},
    "compartment-fracture-out-of-proportion": {"leg_fracture_recent": True, "pain_out_of_proportion": True},
    "compartment-traumatic-coded": {"compartment_syndrome_traumatic": True},
    "cauda-equina-bilateral-sciatica-weakness": {
        "sciatica_radiculopathy": True,
        "bilateral_symptoms": True,
        "limb_weakness_left": True,
        "limb_weakness_right": True,
    },
    "unreadable-red-flag-record": {"unreadable_red_flag_finding": True},
}


@pytest.mark.parametrize("key", FROM_1_1)
@pytest.mark.parametrize("trigger", sorted(RED_FLAG_TRIGGERS_1_1))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=fact_values(), option=OPTIONS)
def test_red_flags_added_in_1_1_fire_whatever_else_is_present(
    key: str, trigger: str, values: dict[str, Drawn], option: bool
) -> None:
    """The red flags added in 1.1.0 (spinal infection, fracture with pain out of proportion, coded
    traumatic compartment syndrome, bilateral sciatica with weakness, an unreadable red-flag record)
    give a critical urgent referral and no conservative card, whatever else is documented."""
    pack = PACKS[key]
    planted = dict(values) | {name: (value, NOW) for name, value in RED_FLAG_TRIGGERS_1_1[trigger].items()}
    assessment = evaluate(pack, as_facts(planted), options=options_for(pack, option))
    urgent = [r for r in assessment.recommendations if r.topic == "urgent-referral"]
    assert urgent
    assert any(r.red_flag and r.indicator == "critical" for r in urgent)
    assert "conservative" not in topics(assessment)


@pytest.mark.parametrize("key", CURRENT)
@pytest.mark.parametrize("trigger", sorted(RED_FLAG_TRIGGERS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=fact_values(), option=OPTIONS)
def test_guidance_red_flags_fire_whatever_else_is_present(
    key: str, trigger: str, values: dict[str, Drawn], option: bool
) -> None:
    """Each red flag of GUIDANCE §1.4 gives a critical urgent referral and no conservative card,
    whatever else is documented (a strain, risk factors, negative findings) and with or without a
    documented calf complaint."""
    pack = PACKS[key]
    planted = dict(values) | {name: (value, NOW) for name, value in RED_FLAG_TRIGGERS[trigger].items()}
    assessment = evaluate(pack, as_facts(planted), options=options_for(pack, option))
    urgent = [r for r in assessment.recommendations if r.topic == "urgent-referral"]
    assert urgent
    assert all(r.indicator == "critical" for r in urgent)
    assert "conservative" not in topics(assessment)


# --- a rule-out needs documented evidence ---------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
@PROPERTY
@given(values=st.one_of(fact_values(), msk_presentations()), option=OPTIONS)
def test_dvt_is_never_excluded_without_a_documented_negative_test(
    key: str, values: dict[str, Drawn], option: bool
) -> None:
    """Conservative care while DVT is suspected rests on documented negative tests: with the D-dimer
    and ultrasound results not documented (and DVT still suspected), the conservative card goes."""
    pack = PACKS[key]
    options = options_for(pack, option)
    facts = as_facts(values)
    shown = topics(evaluate(pack, facts, options=options))
    if "conservative" not in shown or not holds(context(pack, facts, options), "dvt_suspected"):
        return
    untested = dict(values) | dict.fromkeys(RULE_OUT_TESTS, (None, None))
    stripped = as_facts(untested)
    if holds(context(pack, stripped, options), "dvt_suspected"):
        assert "conservative" not in topics(evaluate(pack, stripped, options=options))


PERFUSION = ("abi", "abi_left", "abi_right", "pedal_pulses", "pedal_pulses_left", "pedal_pulses_right")


@pytest.mark.parametrize("key", CURRENT)
@PROPERTY
@given(values=fact_values(), option=OPTIONS)
def test_ischaemic_rest_pain_is_only_discounted_on_documented_normal_perfusion(
    key: str, values: dict[str, Drawn], option: bool
) -> None:
    """Rest pain relieved by dependency is a CLTI red flag unless perfusion is documented normal:
    with the ABIs and pulses not documented it always is."""
    pack = PACKS[key]
    planted = dict(values) | {"rest_pain_relieved_by_dependency": (True, NOW)}
    unperfused = planted | dict.fromkeys(PERFUSION, (None, None))
    assessment = evaluate(pack, as_facts(unperfused), options=options_for(pack, option))
    assert "red-flag-clti" in {r.rule_id for r in assessment.recommendations}


# --- more risk never means less work-up; an old finding never raises a new alarm ------------------

# A Wells item documented present (NICE NG158 Table 1); asymmetry items on one side only, so that
# adding one never turns a one-sided sign into a bilateral one.
DVT_RISK_ITEMS: dict[str, FactValue] = {
    "active_cancer": True,
    "on_active_cancer_treatment": True,
    "palliative_care": True,
    "paralysis_paresis": True,
    "plaster_cast_immobilisation": True,
    "bedridden": True,
    "recent_major_surgery": True,
    "previous_dvt": True,
    "history_of_vte": True,
    "collateral_superficial_veins": True,
    "calf_tenderness_right": True,
    "entire_leg_swollen_right": True,
    "calf_circumference_difference": 3.5,
}


def dvt_cards(assessment: Assessment) -> set[str]:
    return {r.rule_id for r in assessment.recommendations if r.topic == "duplex-dvt"}


@pytest.mark.parametrize("key", KEYS)
@PROPERTY
@given(values=st.one_of(fact_values(), msk_presentations()), data=st.data(), option=OPTIONS)
def test_adding_a_dvt_risk_item_never_removes_a_dvt_card(
    key: str, values: dict[str, Drawn], data: st.DataObject, option: bool
) -> None:
    """Document one or more Wells items as present: every DVT card shown before is still shown
    (the variant may change, e.g. from 'unlikely' to 'likely'; the work-up never disappears)."""
    pack = PACKS[key]
    options = options_for(pack, option)
    items = data.draw(st.sets(st.sampled_from(sorted(DVT_RISK_ITEMS)), min_size=1), label="risk items")
    before = dvt_cards(evaluate(pack, as_facts(values), options=options))
    riskier = dict(values) | {name: (DVT_RISK_ITEMS[name], NOW) for name in items}
    if "calf_circumference_difference" in items and isinstance(
        values["calf_circumference_difference"][0], float
    ):
        # a documented larger difference stays as it was: "adding" never lowers a measurement
        value = max(3.5, values["calf_circumference_difference"][0])
        riskier["calf_circumference_difference"] = (value, NOW)
    after = dvt_cards(evaluate(pack, as_facts(riskier), options=options))
    assert before <= after, f"adding {sorted(items)} removed {sorted(before - after)}"


# The red-flag findings of GUIDANCE §1.4 and the signs that go with them (per-leg sides included).
AGEING_ENTRIES = (
    *RED_FLAG_FINDINGS,
    "erythema",
    "warmth",
    "paresthesia",
    "limb_weakness",
    "paralysis_paresis",
    "low_back_pain",
    "sciatica_radiculopathy",
    "bilateral_symptoms",
)
AGEING = tuple(name for entry in AGEING_ENTRIES for name in VOCABULARY.specs[entry].names())


def red_flags(assessment: Assessment) -> set[str]:
    return {r.rule_id for r in assessment.recommendations if r.red_flag}


@pytest.mark.parametrize("key", KEYS)
@PROPERTY
@given(values=fact_values(), data=st.data(), option=OPTIONS)
def test_ageing_a_red_flag_finding_past_its_window_never_creates_a_red_flag(
    key: str, values: dict[str, Drawn], data: st.DataObject, option: bool
) -> None:
    """A red-flag finding that was present (true, or a measured temperature) ages out of its
    look-back window and is then not documented; an acute DVT ages into a previous DVT. No red flag
    appears that was not there before (an old, resolved episode never raises a new alarm)."""
    pack = PACKS[key]
    options = options_for(pack, option)
    present = sorted(
        name
        for name in AGEING
        if values.get(name, (None, None))[0] is True
        or (base_name(name) == "body_temperature" and values.get(name, (None, None))[0] is not None)
    )
    has_dvt = values["dvt_active"][0] is True
    assume(present or has_dvt)
    chosen = (
        data.draw(st.sets(st.sampled_from(present), max_size=len(present)), label="aged")
        if present
        else set()
    )
    aged = dict(values) | dict.fromkeys(chosen, (None, None))
    if has_dvt and data.draw(st.booleans(), label="age the DVT"):
        aged |= {"dvt_active": (None, None), "previous_dvt": (True, values["dvt_active"][1])}
    before = red_flags(evaluate(pack, as_facts(values), options=options))
    after = red_flags(evaluate(pack, as_facts(aged), options=options))
    assert after <= before, f"ageing {sorted(chosen)} raised {sorted(after - before)}"


# --- the order hooks (packs from 1.2.0): the same invariants on order-select and order-sign ---------

ORDER_RUNS = [(key, hook) for key in KEYS for hook in PACKS[key].hooks() if hook in ORDER_HOOKS]
ORDER_FACTS = tuple(sorted(name for name, spec in VOCABULARY.specs.items() if spec.origin == "draft-orders"))


def cautious(assessment: Assessment) -> set[str]:
    """The cards that ask for more care: red flags, urgent referrals and every warning."""
    return {
        r.rule_id for r in assessment.recommendations if r.indicator != "info" or r.topic == "urgent-referral"
    }


def test_the_order_hooks_are_covered() -> None:
    assert ("calf-pain@1.2.0", "order-select") in ORDER_RUNS
    assert ("calf-pain@1.2.0", "order-sign") in ORDER_RUNS


@pytest.mark.parametrize(("key", "hook"), ORDER_RUNS)
@PROPERTY
@given(facts=st.one_of(patients(), order_presentations().map(as_facts)), option=OPTIONS)
def test_order_hooks_are_total_render_and_keep_the_invariants(
    key: str, hook: str, facts: Facts, option: bool
) -> None:
    """On an order hook: no rule fails, every card renders, never a conservative card, and a red flag
    is always a critical urgent referral that no suppression removes — whatever is being ordered."""
    pack = PACKS[key]
    options = options_for(pack, option)
    assessment = evaluate(pack, facts, hook=hook, options=options)
    assert assessment.errors == ()
    assert topics(assessment) <= set(Topic)
    assert "conservative" not in topics(assessment)
    for card, recommendation in build_cards(assessment, facts, VOCABULARY, patient_id="p1", now=NOW):
        assert len(card.summary) < 140
        assert pack.key in card.source.label
        page = explanation(card, recommendation, assessment, facts, VOCABULARY, now=NOW, expires_at=NOW)
        assert page["citation"]["section"] == recommendation.citation.section
    ctx = context(pack, facts, options)
    if holds(ctx, "red_flag"):
        urgent = [r for r in assessment.recommendations if r.red_flag]
        assert urgent
        assert all(r.indicator == "critical" and r.topic == "urgent-referral" for r in urgent)
    for rule in pack.rules_for(hook):
        if rule.red_flag and rule.when.evaluate(ctx) is True:
            assert rule.id in {r.rule_id for r in assessment.recommendations}


@pytest.mark.parametrize(("key", "hook"), ORDER_RUNS)
@PROPERTY
@given(facts=patients(), option=OPTIONS)
def test_an_order_hook_shows_every_red_flag_patient_view_shows(
    key: str, hook: str, facts: Facts, option: bool
) -> None:
    """The red-flag rules are the same on every hook: the same red-flag cards, whatever is ordered."""
    pack = PACKS[key]
    options = options_for(pack, option)
    on_order = {
        r.rule_id for r in evaluate(pack, facts, hook=hook, options=options).recommendations if r.red_flag
    }
    on_view = {r.rule_id for r in evaluate(pack, facts, options=options).recommendations if r.red_flag}
    assert on_order == on_view


@pytest.mark.parametrize(("key", "hook"), ORDER_RUNS)
@pytest.mark.parametrize("trigger", sorted(RED_FLAG_TRIGGERS | RED_FLAG_TRIGGERS_1_1))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=fact_values(), option=OPTIONS)
def test_guidance_red_flags_fire_on_order_hooks_whatever_is_ordered(
    key: str, hook: str, trigger: str, values: dict[str, Drawn], option: bool
) -> None:
    """Each red flag of GUIDANCE §1.4 (and those 1.1.0 added) gives a critical urgent referral on an
    order hook, whatever the draft orders and the rest of the record hold."""
    pack = PACKS[key]
    triggers = RED_FLAG_TRIGGERS | RED_FLAG_TRIGGERS_1_1
    planted = dict(values) | {name: (value, NOW) for name, value in triggers[trigger].items()}
    assessment = evaluate(pack, as_facts(planted), hook=hook, options=options_for(pack, option))
    urgent = [r for r in assessment.recommendations if r.red_flag]
    assert urgent
    assert all(r.indicator == "critical" for r in urgent)


@pytest.mark.parametrize(("key", "hook"), ORDER_RUNS)
@PROPERTY
@given(values=st.one_of(fact_values(), order_presentations()), data=st.data(), option=OPTIONS)
def test_on_order_hooks_missing_data_never_silences_a_cautious_card(
    key: str, hook: str, values: dict[str, Drawn], data: st.DataObject, option: bool
) -> None:
    """As on patient-view, for the cards that ask for more care (urgent referrals and warnings): a
    finding documented negative and the same finding missing — the missing copy shows every such card
    the negative copy shows. Info cards that advise LESS testing (a D-dimer instead of a scan) may go
    when data goes missing: losing them is the cautious direction."""
    pack = PACKS[key]
    options = options_for(pack, option)
    candidates = {name: value for name, value in negatives(pack).items() if values[name][0] is not True}
    names = sorted(candidates)
    assume(names)
    share = data.draw(st.sampled_from((0.02, 0.1, 0.3, 1.0)), label="share of findings")
    mask = data.draw(st.binary(min_size=len(names), max_size=len(names)), label="mask")
    chosen = {name for name, byte in zip(names, mask, strict=True) if byte < 256 * share} or {names[0]}
    negative, missing = dict(values), dict(values)
    for name in chosen:
        negative[name] = (candidates[name], NOW)
        missing[name] = (None, None)
    with_negative = cautious(evaluate(pack, as_facts(negative), hook=hook, options=options))
    with_missing = cautious(evaluate(pack, as_facts(missing), hook=hook, options=options))
    assert with_negative <= with_missing, (
        f"{sorted(with_negative - with_missing)} lost when {sorted(chosen)} went missing"
    )


@pytest.mark.parametrize(("key", "hook"), ORDER_RUNS)
@PROPERTY
@given(values=st.one_of(fact_values(), order_presentations()), option=OPTIONS)
def test_an_order_fact_not_documented_reads_as_not_ordered(
    key: str, hook: str, values: dict[str, Drawn], option: bool
) -> None:
    """The draft orders are read whole, so an order fact is True or False; should one be missing, it
    means what False means (no card depends on the difference)."""
    pack = PACKS[key]
    options = options_for(pack, option)
    as_false = dict(values) | {n: (False, NOW) for n in ORDER_FACTS if values[n][0] is not True}
    as_missing = dict(values) | {n: (None, None) for n in ORDER_FACTS if values[n][0] is not True}
    first = evaluate(pack, as_facts(as_false), hook=hook, options=options)
    second = evaluate(pack, as_facts(as_missing), hook=hook, options=options)
    assert first.recommendations == second.recommendations


def dvt_warnings(assessment: Assessment) -> set[str]:
    return {
        r.rule_id for r in assessment.recommendations if r.topic == "duplex-dvt" and r.indicator == "warning"
    }


@pytest.mark.parametrize(("key", "hook"), ORDER_RUNS)
@PROPERTY
@given(values=st.one_of(fact_values(), order_presentations()), data=st.data(), option=OPTIONS)
def test_on_order_hooks_more_dvt_risk_never_removes_a_dvt_warning(
    key: str, hook: str, values: dict[str, Drawn], data: st.DataObject, option: bool
) -> None:
    """Adding a Wells item never removes a DVT warning card (a work-up the orders lack), unless a red
    flag appears and its critical card takes over. The info card 'D-dimer instead of the scan' does
    go when the risk rises: then the scan is right."""
    pack = PACKS[key]
    options = options_for(pack, option)
    items = data.draw(st.sets(st.sampled_from(sorted(DVT_RISK_ITEMS)), min_size=1), label="risk items")
    warnings = dvt_warnings
    before = warnings(evaluate(pack, as_facts(values), hook=hook, options=options))
    riskier = dict(values) | {name: (DVT_RISK_ITEMS[name], NOW) for name in items}
    if "calf_circumference_difference" in items and isinstance(
        values["calf_circumference_difference"][0], float
    ):
        riskier["calf_circumference_difference"] = (max(3.5, values["calf_circumference_difference"][0]), NOW)
    after_assessment = evaluate(pack, as_facts(riskier), hook=hook, options=options)
    if any(r.red_flag for r in after_assessment.recommendations):
        return
    assert before <= warnings(after_assessment), (
        f"adding {sorted(items)} removed {sorted(before - warnings(after_assessment))}"
    )
