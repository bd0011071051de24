"""The governance report: the numbers, the sections, the served page, and feedback round-tripping into it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient

from service.cli import main
from service.config import Settings
from service.governance.catalogue import Catalogue
from service.governance.report import render
from service.governance.reportdata import collect
from service.store.schema import feedback, hook_calls
from tests.fhir_builders import NOW
from tests.service.governance.conftest import CANDIDATE, CLAUDICATION, DVT, RULE_PACKS, call, count, wait_for
from tests.service.governance.sample import populate
from tests.service.governance.test_svg import parse

SECTIONS = ("catalogue", "cards", "rates", "reasons", "shadow", "packs")


def charts(page: str) -> dict[str, int]:
    """data-chart name → number of marks drawn, for every SVG chart on the page."""
    found = {}
    for svg in re.findall(r"<svg .*?</svg>", page, re.S):
        root = parse(svg)  # every chart is well-formed XML
        found[root.attrib["data-chart"]] = found.get(root.attrib["data-chart"], 0) + int(
            root.attrib["data-marks"]
        )
    return found


def test_report_from_three_weeks_of_traffic(gov_settings: Settings) -> None:
    """Every section is there, every plot has marks, and the numbers agree with what was sent."""
    sample = populate(gov_settings, days=8)
    engine = create_engine(gov_settings.resolved_database_url())
    data = collect(engine, Catalogue.discover(RULE_PACKS), active="calf-pain@0.1.0", shadows=(CANDIDATE,),
                   since=None, now=NOW)  # fmt: skip
    engine.dispose()
    assert data.calls == sample.calls
    assert data.cards == sample.cards
    assert sum(s.accepted for s in data.rules) == sample.accepted
    assert sum(s.overridden for s in data.rules) == sample.overridden
    assert len(data.cards_by_period) == 8  # one column per day
    assert data.shadows[CANDIDATE].compared == sample.calls
    assert data.shadows[CANDIDATE].disagreed > 0
    page = render(data, active="calf-pain@0.1.0", shadows=(CANDIDATE,))
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    drawn = charts(page)
    assert set(drawn) == {
        "cards-per-topic",
        "outcomes-per-rule",
        "override-reasons",
        "shadow-agreement",
        "shadow-changes",
    }
    assert all(marks > 0 for marks in drawn.values())
    for shown in ("calf-pain@0.1.1", "Test Reviewer", "NICE NG158"):
        assert shown in page
    for external in ("<script", " src=", "<link"):  # self-contained, no script
        assert external not in page


def test_empty_report_still_renders(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    engine = create_engine(settings.resolved_database_url())
    from service.governance import database

    database.upgrade(engine)
    data = collect(engine, Catalogue.discover(), active=settings.active_pack, shadows=(), since=None, now=NOW)
    engine.dispose()
    page = render(data, active=settings.active_pack, shadows=())
    assert "No cards were shown in this period" in page
    assert set(charts(page)) == {
        "cards-per-topic",
        "outcomes-per-rule",
        "override-reasons",
        "shadow-agreement",
    }


def test_feedback_round_trips_into_the_served_report(gov_client: TestClient, gov_settings: Settings) -> None:
    """Cards shown → clinician overrides one with a reason and a comment → the report shows both."""
    (abi,) = call(gov_client, CLAUDICATION)
    (dvt,) = call(gov_client, DVT)
    comment = "ABI done at the vascular clinic <last week>"
    body = {"feedback": [
        {"card": abi["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-20T09:05:00Z",
         "overrideReason": {"reason": {"system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                                       "code": "cds-not-applicable", "display": "CDS does not apply to patient"},
                            "userComment": comment}},
        {"card": dvt["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-20T09:06:00Z",
         "acceptedSuggestions": [{"id": dvt["suggestions"][0]["uuid"]}]},
    ]}  # fmt: skip
    engine = create_engine(gov_settings.resolved_database_url())
    wait_for(lambda: count(engine, select(hook_calls)) >= 2)
    assert gov_client.post("/cds-services/calf-pain/feedback", json=body).status_code == 200
    wait_for(lambda: count(engine, select(feedback)) >= 2)
    engine.dispose()
    response = gov_client.get("/governance/report")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "CDS does not apply to patient" in page
    assert "ABI done at the vascular clinic &lt;last week&gt;" in page  # escaped, never markup
    assert re.search(r"<code>abi-resting</code></td><td>0\.1\.0</td><td>ABI</td><td class=\"n\">1</td>"
                     r"<td class=\"n\">0 \(0%\)</td><td class=\"n\">1 \(100%\)</td>", page)  # fmt: skip
    assert re.search(
        r"<code>dvt-workup</code>.*?<td class=\"n\">1 \(100%\)</td><td class=\"n\">0 \(0%\)</td>", page
    )
    assert charts(page)["override-reasons"] == 1


def test_report_since_must_be_a_date(client: TestClient) -> None:
    response = client.get("/governance/report", params={"since": "last tuesday"})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_cli_report_writes_a_self_contained_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=SecretStr(f"sqlite:///{tmp_path / 'a.db'}"),
                        rules_dir=RULE_PACKS, shadow_packs=(CANDIDATE,))  # fmt: skip
    sample = populate(settings, days=3)
    monkeypatch.setenv("CALF_CDS_DATABASE_URL", settings.resolved_database_url())
    monkeypatch.setenv("CALF_CDS_RULES_DIR", str(RULE_PACKS))
    out = tmp_path / "report.html"
    assert main(["report", "--out", str(out), "--since", "2026-11-01"]) == 0
    assert f"({sample.calls} calls" in capsys.readouterr().out
    page = out.read_text("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "since 2026-11-01" in page
    for external in ("<link", "<script", "@import"):
        assert external not in page
