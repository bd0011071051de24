"""`calf-cds try`: the call it builds, in process and against a service, and what it prints."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from rich.console import Console

from service.cli import build_parser, main
from service.cli_try import _card_panel, build_request, run_try
from service.config import Settings
from service.hooks.fhir_fetcher import FhirFetcher, fetch_policy
from tests.fake_dns import FakeDns
from tests.fhir_builders import NOW, bundle, calf_pain, finding, patient, quantity

FHIR = "https://fhir.example.org/r4"
SERVICE = "http://127.0.0.1:8080"
DVT = [calf_pain(days_ago=0), finding("calf-circumference-difference", quantity(3.4, "cm"), days_ago=0)]


class Terminal:
    """The two consoles `try` writes to: cards (stdout) and progress and errors (stderr)."""

    def __init__(self) -> None:
        self.out = Console(file=io.StringIO(), width=200)
        self.err = Console(file=io.StringIO(), width=200)

    @property
    def stdout(self) -> str:
        return self.out.file.getvalue()  # type: ignore[attr-defined,no-any-return]

    @property
    def stderr(self) -> str:
        return self.err.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def args(*argv: str) -> Any:
    return build_parser().parse_args(["try", *argv])


def fhir_json(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body), headers={"Content-Type": "application/fhir+json"})


@pytest.fixture
def fhir() -> respx.MockRouter:
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


def run_in_process(settings: Settings, fhir: respx.MockRouter, *argv: str) -> tuple[int, Terminal]:
    terminal = Terminal()
    fetcher = FhirFetcher(fetch_policy(settings), transport=httpx.MockTransport(fhir.async_handler))
    code = run_try(
        args("--fhir-server", FHIR, *argv),
        settings=settings,
        fetcher=fetcher,
        resolver=FakeDns(),
        console=terminal.out,
        progress=terminal.err,
        clock=lambda: NOW,
    )
    return code, terminal


def test_request_has_no_prefetch_and_grants_the_bearer() -> None:
    """The call asks the service to fetch: fhirServer, the token as fhirAuthorization, no prefetch."""
    body = build_request(FHIR + "/", "p1", bearer="abc", user_id="Practitioner/1")
    assert body["hook"] == "patient-view"
    assert body["fhirServer"] == FHIR
    assert body["context"] == {"userId": "Practitioner/1", "patientId": "p1"}
    assert body["fhirAuthorization"]["access_token"] == "abc"
    assert body["fhirAuthorization"]["token_type"] == "Bearer"
    assert "prefetch" not in body
    assert "fhirAuthorization" not in build_request(FHIR, "p1", bearer=None, user_id="Practitioner/1")


def test_in_process_prints_the_cards(settings: Settings, fhir: respx.MockRouter) -> None:
    """In process, the patient is read from the FHIR server and the cards printed: exit 0."""
    fhir.get(f"{FHIR}/Patient/p1").mock(return_value=fhir_json(patient("p1")))
    fhir.get(f"{FHIR}/Observation").mock(return_value=fhir_json(bundle(DVT)))
    fhir.get(f"{FHIR}/Condition").mock(return_value=fhir_json(bundle([])))
    fhir.route().mock(return_value=fhir_json(bundle([])))  # Procedure, medications, reports, Encounter
    code, terminal = run_in_process(settings, fhir, "--patient", "p1", "--bearer", "tok")
    assert code == 0, terminal.stderr
    assert "1 card for Patient/p1" in terminal.stdout
    assert "WARNING" in terminal.stdout
    assert "topic: duplex-dvt" in terminal.stdout
    assert "Suggestions" in terminal.stdout
    # the suggested draft order: ultrasound or D-dimer first, as the Wells variant decides
    assert re.search(r"Order (proximal leg-vein ultrasound|D-dimer)", terminal.stdout)
    assert "**" not in terminal.stdout  # the detail's Markdown is rendered, not shown raw
    assert all(request.headers["Authorization"] == "Bearer tok" for request, _ in fhir.calls)


def test_in_process_notes_an_unknown_patient(settings: Settings, fhir: respx.MockRouter) -> None:
    """A patient the server does not know gives no cards and a note saying so."""
    fhir.get(f"{FHIR}/Patient/nobody").mock(return_value=httpx.Response(404))
    fhir.route().mock(return_value=fhir_json(bundle([])))
    code, terminal = run_in_process(settings, fhir, "--patient", "nobody")
    assert code == 0
    assert "No cards" in terminal.stdout
    assert "Patient/nobody not found on fhirServer" in terminal.stderr


def test_in_process_failure_prints_the_diagnostics(settings: Settings, fhir: respx.MockRouter) -> None:
    """A refused token: exit 1 and the OperationOutcome's diagnostics, without the token."""
    fhir.route().mock(return_value=httpx.Response(401))
    code, terminal = run_in_process(settings, fhir, "--patient", "p1", "--bearer", "tok-secret")
    assert code == 1
    assert "HTTP 412" in terminal.stderr
    assert "refused the token" in terminal.stderr
    assert "tok-secret" not in terminal.stderr + terminal.stdout


def test_json_prints_the_raw_response(settings: Settings, fhir: respx.MockRouter) -> None:
    """`--json` prints the CDS Hooks response as JSON, nothing else on stdout."""
    fhir.get(f"{FHIR}/Patient/p1").mock(return_value=fhir_json(patient("p1")))
    fhir.route().mock(return_value=fhir_json(bundle(DVT)))
    code, terminal = run_in_process(settings, fhir, "--patient", "p1", "--json")
    assert code == 0
    cards = json.loads(terminal.stdout)["cards"]
    assert [card["source"]["topic"]["code"] for card in cards] == ["duplex-dvt"]


def test_in_process_refuses_plain_http_outside_development(tmp_path: Path, fhir: respx.MockRouter) -> None:
    """Without `--dev`, a plain-http FHIR server is refused (400) and nothing is fetched."""
    production = Settings(data_dir=tmp_path / "data")
    fhir.route().mock(return_value=fhir_json(bundle([])))
    code, terminal = run_in_process(
        production, fhir, "--fhir-server", "http://fhir.example.org/r4", "--patient", "p1"
    )
    assert code == 1
    assert "HTTP 400" in terminal.stderr
    assert "must be https outside development mode" in terminal.stderr
    assert not fhir.calls


def test_in_process_dev_reads_plain_http(tmp_path: Path, fhir: respx.MockRouter) -> None:
    """`--dev` reads a plain-http FHIR server, as `calf-cds serve --dev` would."""
    production = Settings(data_dir=tmp_path / "data")
    fhir.get("http://fhir.example.org/r4/Patient/p1").mock(return_value=fhir_json(patient("p1")))
    fhir.route().mock(return_value=fhir_json(bundle(DVT)))
    argv = ("--fhir-server", "http://fhir.example.org/r4", "--patient", "p1", "--dev")
    code, terminal = run_in_process(production, fhir, *argv)
    assert code == 0, terminal.stderr
    assert "topic: duplex-dvt" in terminal.stdout


def test_service_mode_posts_the_call_with_the_jwt() -> None:
    """With --service the call is POSTed to <service>/cds-services/calf-pain, JWT as bearer."""
    service = respx.MockRouter(assert_all_mocked=True)
    card = {
        "summary": "Order an ABI",
        "indicator": "info",
        "source": {"label": "rules", "topic": {"code": "abi"}},
    }
    route = service.post(f"{SERVICE}/cds-services/calf-pain").mock(
        return_value=httpx.Response(200, json={"cards": [card]})
    )
    terminal = Terminal()
    code = run_try(
        args("--fhir-server", FHIR, "--patient", "p1", "--service", SERVICE, "--jwt", "eyJ.jwt.sig"),
        transport=httpx.MockTransport(service.handler),
        console=terminal.out,
        progress=terminal.err,
        clock=lambda: NOW,
    )
    assert code == 0
    assert "topic: abi" in terminal.stdout
    request = route.calls[0].request
    assert request.headers["Authorization"] == "Bearer eyJ.jwt.sig"
    body = json.loads(request.content)
    assert body["fhirServer"] == FHIR
    assert "prefetch" not in body


def test_service_mode_without_a_dev_issuer_creates_no_key(tmp_path: Path) -> None:
    """No --jwt and no development issuer in the data folder: the call goes unsigned, with a
    note, and no key pair is made (the running service would not trust it)."""
    service = respx.MockRouter(assert_all_mocked=True)
    route = service.post(f"{SERVICE}/cds-services/calf-pain").mock(
        return_value=httpx.Response(200, json={"cards": []})
    )
    terminal = Terminal()
    code = run_try(
        args("--fhir-server", FHIR, "--patient", "p1", "--service", SERVICE),
        settings=Settings(data_dir=tmp_path / "data"),
        transport=httpx.MockTransport(service.handler),
        console=terminal.out,
        progress=terminal.err,
        clock=lambda: NOW,
    )
    assert code == 0
    assert "Authorization" not in route.calls[0].request.headers
    assert "no development issuer" in terminal.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            httpx.Response(
                412,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {"severity": "error", "code": "incomplete", "diagnostics": "FHIR server refused"}
                    ],
                },
            ),
            "FHIR server refused",
        ),
        (httpx.Response(401, json={"resourceType": "OperationOutcome", "issue": []}), "HTTP 401"),
        (httpx.Response(502, text="<html>bad gateway</html>"), "without a JSON object"),
    ],
    ids=["412", "401", "not-json"],
)
def test_service_mode_errors_exit_1(answer: httpx.Response, expected: str) -> None:
    """Any answer but 200 from the service: exit 1, with what the service said."""
    service = respx.MockRouter(assert_all_mocked=True)
    service.post(f"{SERVICE}/cds-services/calf-pain").mock(return_value=answer)
    terminal = Terminal()
    code = run_try(
        args("--fhir-server", FHIR, "--patient", "p1", "--service", SERVICE),
        transport=httpx.MockTransport(service.handler),
        console=terminal.out,
        progress=terminal.err,
        clock=lambda: NOW,
    )
    assert code == 1
    assert expected in terminal.stderr


def test_unreachable_service_exits_1() -> None:
    service = respx.MockRouter(assert_all_mocked=True)
    service.route().mock(side_effect=httpx.ConnectError("refused"))
    terminal = Terminal()
    code = run_try(
        args("--fhir-server", FHIR, "--patient", "p1", "--service", SERVICE),
        transport=httpx.MockTransport(service.handler),
        console=terminal.out,
        progress=terminal.err,
        clock=lambda: NOW,
    )
    assert code == 1
    assert "could not reach" in terminal.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["try", "--patient", "p1"],
        ["try", "--fhir-server", FHIR],
        ["try", "--fhir-server", "ftp://example.org", "--patient", "p1"],
        ["try", "--fhir-server", FHIR, "--patient", " "],
        ["try", "--fhir-server", FHIR, "--patient", "p1", "--jwt", "x"],
        ["try", "--fhir-server", FHIR, "--patient", "p1", "--service", "localhost:8080"],
        ["try", "--fhir-server", FHIR, "--patient", "p1", "--service", SERVICE, "--dev"],
    ],
    ids=[
        "no-server",
        "no-patient",
        "not-http",
        "blank-patient",
        "jwt-without-service",
        "service-not-url",
        "dev-with-service",
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: calf-cds try" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("indicator", "style"), [("critical", "bold red"), ("warning", "yellow"), ("info", "blue")]
)
def test_card_colour_follows_the_indicator(indicator: str, style: str) -> None:
    card = {"summary": "s", "indicator": indicator, "source": {"label": "l", "topic": {"code": "abi"}}}
    assert _card_panel(card).border_style == style
