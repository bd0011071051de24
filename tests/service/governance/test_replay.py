"""`calf-cds rules replay`: audited facts re-evaluated with a candidate; every changed decision listed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient

from fhir_mappings.facts import vocabulary
from service.cli import main
from service.config import Settings
from service.governance.catalogue import Catalogue
from service.governance.replay import rebuild_facts, replay
from service.store.schema import hook_calls
from tests.fhir_builders import NOW
from tests.service.governance.conftest import (
    CANDIDATE,
    CLAUDICATION,
    CRAMP,
    DVT,
    RULE_PACKS,
    SLIGHT_SWELLING,
    STRAIN,
    call,
    count,
    wait_for,
)

PATIENTS = {
    "dvt": DVT,
    "claudication": CLAUDICATION,
    "cramp": CRAMP,
    "strain": STRAIN,
    "slight": SLIGHT_SWELLING,
}


def audit_calls(client: TestClient, settings: Settings) -> dict[str, list[dict[str, object]]]:
    cards = {name: call(client, resources, patient_id=name) for name, resources in PATIENTS.items()}
    engine = create_engine(settings.resolved_database_url())
    wait_for(lambda: count(engine, select(hook_calls)) >= len(PATIENTS))
    engine.dispose()
    return cards


def test_replay_lists_every_changed_decision(gov_client: TestClient, gov_settings: Settings) -> None:
    """The candidate raises ABI to warning, drops cramp from MSK evidence and the 0.5 cm swelling trigger."""
    shown = audit_calls(gov_client, gov_settings)
    assert [c["indicator"] for c in shown["claudication"]] == ["info"]
    catalogue = Catalogue.discover(RULE_PACKS)
    known = {key: catalogue.load(key) for key in catalogue.ordered()}
    engine = create_engine(gov_settings.resolved_database_url())
    report = replay(engine, known[CANDIDATE], vocabulary(), known_packs=known)
    engine.dispose()
    assert report.replayed == len(PATIENTS)
    assert report.not_reproduced == []  # the rebuilt facts give 0.1.0's own cards back
    changed = {call.patient_id: call for call in report.changed}
    assert set(changed) == {"claudication", "cramp", "slight"}
    assert changed["claudication"].before == (("abi", "info"),)
    assert changed["claudication"].after == (("abi", "warning"),)
    assert changed["cramp"].after == ()
    assert changed["slight"].before == (("duplex-dvt", "warning"),)
    text = report.render()
    assert "5 calls replayed; 3 decisions would change; 2 unchanged." in text
    assert "abi: info → warning" in text
    assert "removes conservative (info)" in text
    assert "removes duplex-dvt (warning)" in text


def test_replay_since_leaves_older_calls_out(gov_client: TestClient, gov_settings: Settings) -> None:
    audit_calls(gov_client, gov_settings)
    catalogue = Catalogue.discover(RULE_PACKS)
    engine = create_engine(gov_settings.resolved_database_url())
    tomorrow = NOW + timedelta(days=1)  # the app recorded the calls at its clock, NOW
    report = replay(engine, catalogue.load(CANDIDATE), vocabulary(), since=tomorrow)
    engine.dispose()
    assert report.replayed == 0


def test_cli_replay_json(
    gov_client: TestClient,
    gov_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`calf-cds rules replay --candidate 0.1.1 --json` names each changed call with before and after."""
    audit_calls(gov_client, gov_settings)
    monkeypatch.setenv("CALF_CDS_DATABASE_URL", gov_settings.resolved_database_url())
    monkeypatch.setenv("CALF_CDS_RULES_DIR", str(RULE_PACKS))
    day = NOW.date().isoformat()  # the app recorded the calls at its clock, NOW
    assert main(["rules", "replay", "--candidate", "0.1.1", "--since", day, "--json"], clock=lambda: NOW) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["replayed"] == 5
    assert {c["patient_id"] for c in output["changed"]} == {"claudication", "cramp", "slight"}
    cramp = next(c for c in output["changed"] if c["patient_id"] == "cramp")
    assert cramp["before"] == [["conservative", "info"]]
    assert cramp["after"] == []
    assert cramp["reproduced"] is True


def test_shadow_results_are_audited_never_shown(gov_client: TestClient, gov_settings: Settings) -> None:
    """The candidate runs in shadow: its cards are in the audit row, the response has the active ones."""
    (card,) = call(gov_client, CLAUDICATION)
    assert card["indicator"] == "info"
    engine = create_engine(gov_settings.resolved_database_url())
    wait_for(lambda: count(engine, select(hook_calls)) >= 1)
    with engine.connect() as connection:
        (shadow,) = connection.execute(select(hook_calls.c.shadow)).scalar_one()
    engine.dispose()
    assert shadow["pack_version"] == "0.1.1"
    assert [(r["topic"], r["indicator"]) for r in shadow["recommendations"]] == [("abi", "warning")]


def test_rebuilt_facts_are_typed_by_the_vocabulary() -> None:
    """JSON integers become numbers, a fact's date is its newest evidence, unknown names are reported."""
    stored = {
        "calf_circumference_difference": {"value": 3, "evidence": [
            {"reference": "Observation/a", "when": "2026-11-19T09:00:00+00:00"},
            {"reference": "Observation/b", "when": "2026-11-20T08:00:00"}]},
        "calf_pain": {"value": True, "evidence": []},
        "retired_fact_name": {"value": True, "evidence": []},
    }  # fmt: skip
    facts, unknown = rebuild_facts(stored, vocabulary())
    difference = facts["calf_circumference_difference"]
    assert isinstance(difference.value, float)
    assert difference.value == 3.0
    assert difference.when == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert facts["calf_pain"].value is True
    assert facts["fever"].value is None  # declared, not documented
    assert unknown == ["retired_fact_name"]
