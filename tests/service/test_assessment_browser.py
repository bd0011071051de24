"""Card → form → record → card, in headless Chromium on loopback, with the keyboard only.

A patient sits on sekmet-fhir; the hook cannot decide; the SMART app opens (open-server launch as
a sandbox does, or the EHR launch against a local SMART authorization server), the form is answered
with Tab, arrows, typing and Enter, the findings are saved to the FHIR server, and the next hook
call gives the decided card. Screenshots go to tests/artifacts/assessment/ (gitignored).
The browser is Debian's chromium driven by playwright-core (webapp/package-lock.json), with every
host but 127.0.0.1 unresolvable.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.hooks.card_text import assessment_link
from tests.assessment_builders import ASSESSMENT, CALF_STRAIN, CLAUDICATION, PRACTITIONER, SUSPECTED_DVT
from tests.browser.ehr import SmartEhr
from tests.browser.servers import ROOT, calf_cds, drive
from tests.fhir_builders import FINDING, RIGHT_LEG, SNOMED, patient
from tests.service.test_fhir_e2e import FhirServer, cards, fetching_call, start_sekmet
from tests.signing import dev_client

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
TOKEN = "ehr-bearer-7c1d"
CASES = {
    "dvt": (SUSPECTED_DVT, "duplex-dvt"),
    "pad": (CLAUDICATION, "abi"),
    "strain": (CALF_STRAIN, "conservative"),
}
SCOPES = (
    "launch openid fhirUser patient/Patient.r patient/Observation.rs patient/Condition.rs "
    "patient/Observation.c patient/QuestionnaireResponse.c"
)


@pytest.fixture(scope="module", autouse=True)
def browser_available() -> None:
    """Chromium and playwright-core (scripts/test.sh installs both) or a skip (a failure under CI)."""
    missing = [what for what, ok in (
        ("chromium", shutil.which("chromium") is not None),
        ("node", shutil.which("node") is not None),
        ("webapp/node_modules/playwright-core", (ROOT / "webapp" / "node_modules" / "playwright-core").is_dir()),
    ) if not ok]  # fmt: skip
    if missing:
        if os.environ.get("CALF_CDS_TEST_REQUIRE_BROWSER"):
            pytest.fail(f"scripts/test.sh should have installed: {', '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/test.sh installs them)")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`calf-cds serve --dev` on loopback: the app, the Questionnaire and $extract."""
    with calf_cds(tmp_path_factory.mktemp("calf-cds-browser")) as base:
        yield base


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The hook, in process on today's date, fetching from the FHIR server."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("calf-cds-hook"), dev=True)
    with dev_client(create_app(settings), settings) as client:
        yield client


def typed(link_id: str, value: Any) -> Any:
    """How the keyboard gives an answer: a choice by the start of its text, anything else as is."""
    question = ASSESSMENT.question(link_id)
    assert question is not None
    if question.answers and not isinstance(value, bool):
        (answer,) = [a for a in question.answers if a.key == value]
        return answer.coding["display"]
    return value


def topics(hook: TestClient, base: str, patient_id: str, token: str | None = None) -> list[str]:
    """The card topics of a patient-view call that fetches from ``base`` (open servers ignore the token)."""
    answer = hook.post("/cds-services/calf-pain", json=fetching_call(base, patient_id, token=token or TOKEN))
    return [topic for topic, _, _ in cards(answer)]


def observations(server: FhirServer, patient_id: str, token: str | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    found = httpx.get(
        f"{server.base}/Observation",
        params={"patient": patient_id, "_count": "200"},
        headers=headers,
        timeout=10,
    )
    return [
        e["resource"] for e in found.json().get("entry", []) if e["resource"]["resourceType"] == "Observation"
    ]


def check_network(report: dict[str, Any]) -> None:
    """Loopback only; no error in the page (a CSP violation is a console error)."""
    assert report["pageErrors"] == []
    assert report["console"] == []
    assert all(urlsplit(r["url"]).hostname == "127.0.0.1" for r in report["requests"]), report["requests"]


@pytest.mark.parametrize("case", list(CASES))
def test_open_launch_from_undecided_card_to_decided_card(
    tmp_path: Path, service: str, hook: TestClient, case: str
) -> None:
    """A sandbox patient: no decided card → the form, answered by keyboard (at most 20 questions,
    exactly those the Questionnaire's enableWhen shows) → Observations on the server → the card."""
    answers, topic = CASES[case]
    server = start_sekmet(tmp_path, token=None)
    try:
        patient_id = f"browser-{case}"
        server.put(patient(patient_id, birth_date="1958-03-02"))
        assert topic not in topics(hook, server.base, patient_id)
        link = assessment_link(
            ["entire_leg_swollen_right", "relief_standing_still", "calf_tenderness_right"], service
        )
        assert link is not None
        query = {
            "fhirServiceUrl": server.base,
            "patient": patient_id,
            "user": PRACTITIONER,
            "appContext": link.app_context,
        }
        plan = {"url": f"{service}/app/?{urlencode(query)}", "shot": f"open-{case}", "submit": True,
                "answers": {"calf_pain": "Right", **{k: typed(k, v) for k, v in answers.items()}}}  # fmt: skip
        report = drive(plan)
        check_network(report)
        booleans = {k: v for k, v in answers.items() if isinstance(v, bool)}
        assert report["shown"] == ASSESSMENT.shown(booleans)
        assert len(report["shown"]) <= 20
        assert report["answered"] == report["shown"]
        assert any("Is the entire leg swollen?" in text for text in report["needed"])
        assert report["status"] == "Saved.", report
        written = observations(server, patient_id)
        assert len(written) == len(answers) + 1
        assert {o["performer"][0]["reference"] for o in written} == {PRACTITIONER}
        assert topics(hook, server.base, patient_id) == [topic]
    finally:
        server.stop()


def test_ehr_launch_prefills_and_keeps_the_token_in_the_browser(
    tmp_path: Path, service: str, hook: TestClient
) -> None:
    """SMART EHR launch with PKCE against a local authorization server: the app asks for the
    registered scopes, pre-fills what the chart holds, writes with the EHR's token, and never
    sends that token to calf-cds."""
    server = start_sekmet(tmp_path, token=TOKEN)
    patient_id = "browser-ehr"
    charted = {"calf_pain": "Right", "exertional_leg_pain": True, "relief_standing_still": True}
    ehr = SmartEhr(upstream=server.base, access_token=TOKEN, patient=patient_id, user="Practitioner/dr-ng",
                   app_context=json.dumps({"missing": ["walking_distance_to_onset", "pedal_pulses"]})).start()  # fmt: skip
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
        httpx.put(
            f"{server.base}/Patient/{patient_id}",
            json=patient(patient_id, birth_date="1958-03-02"),
            headers=headers,
            timeout=10,
        )
        for resource in chart_findings(patient_id):
            assert (
                httpx.post(
                    f"{server.base}/Observation", json=resource, headers=headers, timeout=10
                ).status_code
                == 201
            )
        launch = f"{service}/app/launch.html?{urlencode({'iss': ehr.base, 'launch': ehr.launch})}"
        remaining = {k: typed(k, v) for k, v in CLAUDICATION.items() if k not in charted}
        report = drive({"url": launch, "shot": "ehr-launch", "submit": True, "answers": remaining})
        check_network(report)
        assert ehr.granted_scope == SCOPES
        assert report["status"] == "Saved.", report
        assert "Distance walked before the pain starts" in " ".join(report["needed"])
        to_calf_cds = [r for r in report["requests"] if r["url"].startswith(service)]
        assert to_calf_cds
        assert not any(r["bearer"] for r in to_calf_cds)
        fhir_calls = [
            r for r in ehr.requests if r["path"].startswith("/fhir/") and ".well-known" not in r["path"]
        ]
        assert fhir_calls
        assert all(r["authorization"] == f"Bearer {TOKEN}" for r in fhir_calls)
        written = [o for o in observations(server, patient_id, TOKEN) if "derivedFrom" in o]
        assert len(written) == len(CLAUDICATION) + 1  # the pre-filled answers are saved too
        assert {o["performer"][0]["reference"] for o in written} == {"Practitioner/dr-ng"}
        assert topics(hook, ehr.base, patient_id, token=TOKEN) == ["abi"]
    finally:
        ehr.stop()
        server.stop()


def chart_findings(patient_id: str) -> list[dict[str, Any]]:
    """What the chart already holds: right calf pain, exertional, relieved by standing still."""
    now = datetime.now(UTC).isoformat()
    base = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": now}  # fmt: skip
    return [
        {
            **base,
            "code": {"coding": [{"system": SNOMED, "code": "300954003"}]},
            "bodySite": RIGHT_LEG,
            "valueBoolean": True,
        },
        {
            **base,
            "code": {"coding": [{"system": FINDING, "code": "exertional-leg-pain"}]},
            "valueBoolean": True,
        },
        {
            **base,
            "code": {"coding": [{"system": FINDING, "code": "relief-standing-still"}]},
            "valueBoolean": True,
        },
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/app/?code=stolen&state=never-issued", "unknown or used launch state"),
        ("/app/launch.html?launch=abc", "iss is not a URL"),
        ("/app/?fhirServiceUrl=javascript:alert(1)&patient=p1", "fhirServiceUrl must be an http(s) URL"),
        ("/app/", "open this app from the EHR"),
    ],
    ids=["replayed code", "no iss", "script URL", "no launch"],
)
def test_a_bad_launch_says_why_and_calls_nothing(service: str, path: str, message: str) -> None:
    """A code the app never asked for, a launch without an EHR, or a non-http server: the app stops
    with the reason, and makes no request beyond its own files."""
    report = drive({"url": service + path, "shot": "bad-launch", "submit": False, "answers": {}})
    assert message in report["status"], report["status"]
    check_network(report)
    assert all(r["url"].startswith(service + "/app/") for r in report["requests"]), report["requests"]
