"""The order-hook clinical cases (tests/rules/order-cases/*.json), end to end below the service.

Each case is a patient's resources plus the draft orders of an ``order-select`` or ``order-sign``
call, with the expected cards: topics present and forbidden, indicators, wording, the rules that must
(and must not) fire, the recommended suggestion of a topic's card — which draft orders it deletes
(``resourceType/id``) and what it creates — and the draft orders read as about another patient.
Written from the guidance (GUIDANCE.md, the issue's bullets), each with its rationale and citation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from rules.codes import Pattern, Topic
from rules.pack import HOOKS, ORDER_HOOKS
from tests.rules.order_cases import ORDER_VERSIONS, hooks_of, load_order_cases, request_codes, run_order_case

CASES = load_order_cases()


def applies(case: Mapping[str, Any], version: str) -> bool:
    since = tuple(int(p) for p in str(case.get("since", ORDER_VERSIONS[0])).split("."))
    return tuple(int(p) for p in version.split(".")) >= since


RUNS = [
    (case, version, hook)
    for case in CASES
    for version in ORDER_VERSIONS
    if applies(case, version)
    for hook in hooks_of(case)
]


def _shown(run: Any) -> str:
    return (
        "\n".join(
            f"[{r.topic}/{r.indicator}] {r.rule_id}: {r.summary}" for r in run.assessment.recommendations
        )
        or "(no cards)"
    )


@pytest.mark.parametrize(("case", "version", "hook"), RUNS, ids=[f"{c['id']}@{v}:{h}" for c, v, h in RUNS])
def test_order_case(case: dict[str, Any], version: str, hook: str) -> None:
    """Expected topics, indicators, wording, rules, suggestions and foreign orders."""
    run = run_order_case(case, version, hook)
    expect = case["expect"]
    by_topic: dict[str, list[Any]] = {}
    for recommendation in run.assessment.recommendations:
        by_topic.setdefault(recommendation.topic, []).append(recommendation)
    shown = _shown(run)
    assert not run.assessment.errors, run.assessment.errors
    assert run.assessment.hook == hook
    for topic in expect["topics"]:
        assert topic in by_topic, f"missing {topic}; cards:\n{shown}"
    for topic in expect["forbidden"]:
        assert topic not in by_topic, f"forbidden {topic} shown; cards:\n{shown}"
    for topic, indicator in expect.get("indicators", {}).items():
        assert {r.indicator for r in by_topic[topic]} == {indicator}, shown
    for topic, phrases in expect.get("mentions", {}).items():
        text = " ".join(f"{r.summary}\n{' '.join(r.detail)}" for r in by_topic[topic]).lower()
        for phrase in phrases:
            assert phrase.lower() in text, f"{topic} card does not say {phrase!r}:\n{text}"
    fired = {r.rule_id for r in run.assessment.recommendations}
    assert set(expect.get("rules", ())) <= fired, shown
    assert not set(expect.get("forbidden_rules", ())) & fired, shown
    for topic, wanted in expect.get("recommended", {}).items():
        recommended = [s for r in by_topic[topic] for s in run.resolved(r) if s["recommended"]]
        if wanted is None:
            assert not recommended, f"{topic} card recommends {recommended}"
            continue
        assert recommended, f"{topic} card has no recommended suggestion; cards:\n{shown}"
        (suggestion,) = recommended[:1]
        assert suggestion["delete"] == wanted["delete"], suggestion
        assert any(wanted["create"] in code for code in request_codes(suggestion["request"])), suggestion
    assert list(run.drafts.foreign) == expect.get("foreign", [])


def test_case_ids_are_unique_and_distinct_from_patient_view_cases() -> None:
    from tests.rules.test_cases import CASES as PATIENT_VIEW_CASES

    ids = [case["id"] for case in CASES]
    assert len(ids) == len(set(ids))
    assert not set(ids) & {case["id"] for case in PATIENT_VIEW_CASES}


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_every_order_case_has_rationale_citation_hook_and_a_valid_expectation(case: dict[str, Any]) -> None:
    """A case says why and on what authority, names an order hook and only known topics."""
    assert case["rationale"].strip()
    assert case["citation"].strip()
    assert set(hooks_of(case)) <= ORDER_HOOKS <= set(HOOKS)
    assert case["draftOrders"]["resourceType"] == "Bundle"
    expect = case["expect"]
    named = set(expect["topics"]) | set(expect["forbidden"]) | set(expect.get("indicators", {}))
    assert named <= set(Topic)
    assert not set(expect["topics"]) & set(expect["forbidden"])
    assert expect.get("pattern", "indeterminate") in set(Pattern)
    assert str(case.get("since", ORDER_VERSIONS[0])) in ORDER_VERSIONS


# Each bullet of issue 17 has at least one case where its card fires and one where it does not.
BULLETS = {
    "order-duplex-d-dimer-first": "venous scan while DVT is unlikely (decided), no D-dimer",
    "order-d-dimer-dvt-likely-scan": "D-dimer while DVT is likely",
    "order-d-dimer-pregnancy-scan": "D-dimer in pregnancy",
    "order-venography-ultrasound": "venography for suspected DVT",
    "order-arterial-imaging-abi-first": "arterial imaging without a valid ABI",
    "order-compression-abi-first": "compression without an ABI, PAD possible",
    "red-flag-compartment-syndrome": "compression with acute compartment syndrome",
    "order-lumbar-mri-intervention": "lumbar MRI for neurogenic symptoms",
    "order-rest-ice-or-analgesic-dvt-open": "rest-and-ice or analgesia alone while DVT is open",
}


@pytest.mark.parametrize("rule_id", sorted(BULLETS))
def test_every_bullet_has_a_positive_and_a_negative_case(rule_id: str) -> None:
    positive = [c for c in CASES if rule_id in c["expect"].get("rules", ())]
    topic_of = {c["id"]: c for c in CASES}
    negative = [
        c
        for c in CASES
        if rule_id not in c["expect"].get("rules", ())
        and (rule_id in c["expect"].get("forbidden_rules", ()) or not c["expect"]["topics"])
    ]
    assert positive, BULLETS[rule_id]
    assert negative, BULLETS[rule_id]
    assert topic_of


def test_the_sandbox_pama_codes_are_recognised() -> None:
    """The CDS Hooks Sandbox PAMA view's CPT orders named in the issue are all exercised by a case."""
    codes = {
        coding["code"]
        for case in CASES
        for entry in case["draftOrders"]["entry"]
        if entry["resource"].get("id") == "example-request-id"
        for coding in entry["resource"]["code"]["coding"]
    }
    assert {"73706", "73725", "72148", "78457", "78458"} <= codes
