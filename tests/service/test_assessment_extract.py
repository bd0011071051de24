"""`POST /fhir/QuestionnaireResponse/$extract` and `calf-cds extract`: one front door, two entry points."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from starlette.testclient import TestClient

from service.assessment.cli import run_extract
from service.cli import main
from service.config import Settings
from tests.assessment_builders import CLAUDICATION, SUSPECTED_DVT, response
from tests.fhir_builders import NOW

EXTRACT = "/fhir/QuestionnaireResponse/$extract"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def outcome(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


def test_extract_answers_a_transaction_bundle_without_a_token(client: TestClient) -> None:
    """The SMART app calls $extract from the browser with no client JWT: a valid Bundle comes back."""
    answer = client.post(EXTRACT, content=json.dumps(response(SUSPECTED_DVT)), headers=FHIR_JSON, auth=None)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/fhir+json"
    bundle = Bundle.model_validate(answer.json())
    assert bundle.type == "transaction"
    assert len(bundle.entry) == len(SUSPECTED_DVT) + 2  # the response, the side, each answer


def test_the_app_clock_dates_a_response_without_authored(client: TestClient) -> None:
    """No `authored`: the Observations are dated by the app's injected clock."""
    body = response(CLAUDICATION)
    del body["authored"]
    entries = client.post(EXTRACT, json=body, auth=None).json()["entry"]
    assert {e["resource"].get("effectiveDateTime") for e in entries[1:]} == {NOW.isoformat()}


def test_an_inconsistent_response_is_a_400_naming_the_element(client: TestClient) -> None:
    """Wells items answered for a leg that is not swollen: 400, the element in `expression`."""
    body = response(dict(SUSPECTED_DVT, leg_oedema=False))
    issue = outcome(client.post(EXTRACT, json=body, auth=None), 400)["issue"][0]
    assert issue["code"] == "invalid"
    assert issue["expression"] == ["item[2].item[0]"]


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{", FHIR_JSON, 400),
        (b"[1, 2]", FHIR_JSON, 400),
        (b"{}", {"Content-Type": "text/plain"}, 415),
        (b'{"a": ' * 100 + b"1" + b"}" * 100, FHIR_JSON, 400),
        (b'{"resourceType": "QuestionnaireResponse", "x": "' + b"a" * 6_000_000 + b'"}', FHIR_JSON, 413),
    ],
    ids=["malformed JSON", "not an object", "not JSON", "too deep", "too large"],
)
def test_bad_bodies_are_outcomes(
    client: TestClient, content: bytes, headers: dict[str, str], status: int
) -> None:
    """Malformed, non-JSON, too deep or too large bodies get a 4xx OperationOutcome."""
    outcome(client.post(EXTRACT, content=content, headers=headers, auth=None), status)


def test_the_cli_prints_the_same_bundle_as_the_route(
    client: TestClient, tmp_path: Path, settings: Settings
) -> None:
    """`calf-cds extract FILE` prints what the route answers for the same response and time."""
    source = tmp_path / "response.json"
    source.write_text(json.dumps(response(CLAUDICATION)))
    out, err = io.StringIO(), io.StringIO()
    assert run_extract(str(source), settings=settings, clock=lambda: NOW, stdout=out, stderr=err) == 0
    assert json.loads(out.getvalue()) == client.post(EXTRACT, json=response(CLAUDICATION), auth=None).json()


def test_the_cli_reports_a_refused_response_on_stderr(settings: Settings) -> None:
    """A response to another Questionnaire: exit 1, the OperationOutcome on stderr, nothing on stdout."""
    body = json.dumps(response(CLAUDICATION, questionnaire="http://example.org/Questionnaire/other"))
    out, err = io.StringIO(), io.StringIO()
    code = run_extract(
        "-", settings=settings, clock=lambda: NOW, stdin=io.StringIO(body), stdout=out, stderr=err
    )
    assert (code, out.getvalue()) == (1, "")
    assert json.loads(err.getvalue())["issue"][0]["expression"] == ["questionnaire"]


def test_the_cli_dates_by_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--now` dates the findings of a response without `authored`; a missing file exits 2."""
    monkeypatch.setenv("CALF_CDS_DATA_DIR", str(tmp_path))
    body = response(CLAUDICATION)
    del body["authored"]
    source = tmp_path / "response.json"
    source.write_text(json.dumps(body))
    assert main(["extract", str(source), "--now", "2026-11-20T09:00:00Z"]) == 0
    bundle = json.loads(capsys.readouterr().out)
    assert bundle["entry"][1]["resource"]["effectiveDateTime"] == "2026-11-20T09:00:00+00:00"
    assert main(["extract", str(tmp_path / "missing.json")]) == 2
