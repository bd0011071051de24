"""Every clinical case through the live service into an audit trail, then replayed with 1.1.0.

This is the governance rehearsal of issue 12: the service answers each case with the released
1.0.0 while 1.1.0 runs in shadow mode; ``calf-cds rules replay --candidate 1.1.0`` over that audit
trail must report exactly the cases whose decision (card topics and indicators) 1.1.0 changes,
and the shadow records must hold 1.1.0's decision. Cases that need ``contract_facts`` (facts the
mapper rewrite will produce) are left out: the audit trail holds only what this mapper read.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient

from fhir_mappings.facts import vocabulary
from rules.pack import RulePack
from service.app import create_app
from service.cli import main
from service.config import Settings
from service.governance.catalogue import Catalogue
from service.governance.replay import ReplayReport, decision_of, replay
from service.store.schema import hook_calls
from tests.fhir_builders import hook_request
from tests.rules.test_cases import CASES, case_facts
from tests.service.governance.conftest import count, wait_for
from tests.signing import dev_client

NOW = datetime.fromisoformat("2026-11-20T09:00:00+00:00")
AUDITED = [case for case in CASES if "contract_facts" not in case]
ACTIVE, CANDIDATE = "calf-pain@1.0.0", "calf-pain@1.1.0"


def patient_id(index: int) -> str:
    return f"case-{index:03d}"


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """An audit trail of every case answered by 1.0.0 with 1.1.0 in shadow (SQLite)."""
    folder = tmp_path_factory.mktemp("case-audit")
    settings = Settings(
        data_dir=folder / "data",
        database_url=SecretStr(f"sqlite:///{folder / 'audit.sqlite3'}"),
        active_pack=ACTIVE,
        shadow_packs=(CANDIDATE,),
        rules_dir=None,
        db_migrate="upgrade",
        dev=True,
    )
    with dev_client(create_app(settings, clock=lambda: NOW), settings) as client:
        for index, case in enumerate(AUDITED):
            post(client, case, patient_id(index))
    engine = create_engine(settings.resolved_database_url())
    wait_for(lambda: count(engine, select(hook_calls)) >= len(AUDITED), timeout=60)
    engine.dispose()
    return settings


def post(client: TestClient, case: dict[str, Any], who: str) -> None:
    resources = [dict(r, subject={"reference": f"Patient/{who}"}) for r in case["resources"]]
    body = hook_request(resources, patient_resource=dict(case["patient"], id=who), patient_id=who)
    response = client.post("/cds-services/calf-pain", json=body)
    assert response.status_code == 200, response.text


def packs() -> dict[str, RulePack]:
    catalogue = Catalogue.discover(None)
    return {key: catalogue.load(key) for key in catalogue.ordered()}


def run_replay(settings: Settings) -> ReplayReport:
    known = packs()
    engine = create_engine(settings.resolved_database_url())
    try:
        return replay(engine, known[CANDIDATE], vocabulary(), known_packs=known)
    finally:
        engine.dispose()


def test_replay_reports_exactly_the_cases_whose_decision_1_1_changes(audit: Settings) -> None:
    """Replaying the audited cases with 1.1.0 lists every case whose decision differs from 1.0.0's,
    computed independently from the cases themselves, and nothing else."""
    known = packs()
    expected = set()
    for index, case in enumerate(AUDITED):
        facts = case_facts(case)
        if decision_of(known[ACTIVE], facts)[0] != decision_of(known[CANDIDATE], facts)[0]:
            expected.add(patient_id(index))
    report = run_replay(audit)
    assert report.replayed == len(AUDITED)
    assert report.not_reproduced == []
    assert report.unknown_facts == {}
    assert {call.patient_id for call in report.changed} == expected


def test_every_deliberate_version_change_of_an_old_case_is_reported(audit: Settings) -> None:
    """Each pre-1.1.0 case whose recorded 1.1.0 answer differs from its 1.0.0 answer in topics is
    among the replay's changes."""
    changed = {call.patient_id for call in run_replay(audit).changed}
    for index, case in enumerate(AUDITED):
        recorded = case.get("expect_by_version", {}).get("1.1.0")
        if recorded is not None and set(recorded["topics"]) != set(case["expect"]["topics"]):
            assert patient_id(index) in changed, case["id"]


def test_shadow_records_hold_the_candidates_decision(audit: Settings) -> None:
    """Shadow mode: every audit row carries 1.1.0's assessment beside the 1.0.0 cards it showed."""
    engine = create_engine(audit.resolved_database_url())
    with engine.connect() as connection:
        rows = connection.execute(select(hook_calls.c.pack_version, hook_calls.c.shadow)).all()
    engine.dispose()
    assert len(rows) == len(AUDITED)
    for version, shadow in rows:
        stored = shadow if not isinstance(shadow, str) else json.loads(shadow)
        assert version == "1.0.0"
        assert [entry["pack_version"] for entry in stored] == ["1.1.0"]


def test_cli_replay_names_the_candidate_and_counts(
    audit: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`calf-cds rules replay --candidate 1.1.0` over the case audit prints the same count."""
    monkeypatch.setenv("CALF_CDS_DATABASE_URL", audit.resolved_database_url())
    monkeypatch.setenv("CALF_CDS_DATA_DIR", str(Path(str(audit.data_dir))))
    assert main(["rules", "replay", "--candidate", "1.1.0"]) == 0
    out = capsys.readouterr().out
    changed = len(run_replay(audit).changed)
    assert f"{len(AUDITED)} calls replayed; {changed} decisions would change" in out


def test_1_0_runs_as_a_shadow_of_the_default_1_1(tmp_path: Path) -> None:
    """The other way round, as deployed after the release: 1.1.0 answers, 1.0.0 runs in shadow and
    its (different) decision is audited, never shown."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=SecretStr(f"sqlite:///{tmp_path / 'audit.sqlite3'}"),
        active_pack=CANDIDATE,
        shadow_packs=(ACTIVE,),
        rules_dir=None,
        db_migrate="upgrade",
        dev=True,
    )
    (case,) = [c for c in CASES if c["id"] == "ven-d-dimer-feu-0.49-mg-per-l-negative-excluded"]
    with dev_client(create_app(settings, clock=lambda: NOW), settings) as client:
        post(client, case, "shadowed")
    engine = create_engine(settings.resolved_database_url())
    wait_for(lambda: count(engine, select(hook_calls)) >= 1)
    with engine.connect() as connection:
        version, cards, shadow = connection.execute(
            select(hook_calls.c.pack_version, hook_calls.c.cards, hook_calls.c.shadow)
        ).one()
    engine.dispose()
    stored = shadow if not isinstance(shadow, str) else json.loads(shadow)
    shown = cards if not isinstance(cards, str) else json.loads(cards)
    assert version == "1.1.0"
    assert {card["topic"] for card in shown} == {"duplex-dvt"}
    ((shadow_entry),) = stored
    assert shadow_entry["pack_version"] == "1.0.0"
    assert {r["topic"] for r in shadow_entry["recommendations"]} == {"conservative"}
