"""End to end against a real FHIR server on loopback: sekmet-fhir (FHIR R4 on FastAPI + SQLite).

sekmet-fhir pins its own fhir.resources, so it lives in its own virtual environment,
``.cache/sekmet-venv``, which ``scripts/test.sh`` installs (``CALF_CDS_SEKMET`` may name another
``sekmet`` executable). Patients are loaded with ordinary FHIR PUTs, then called for through
prefetch, through fetching, through ``calf-cds try`` in process and against ``calf-cds serve``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.fhir_builders import (
    LOINC,
    NOW,
    SNOMED,
    UCUM,
    calf_pain,
    condition,
    finding,
    hook_request,
    observation,
    patient,
    quantity,
)
from tests.service.jwt_factory import ISSUER, SigningKey, claims, jwks
from tests.signing import dev_client

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SEKMET = Path(os.environ.get("CALF_CDS_SEKMET", ROOT / ".cache" / "sekmet-venv" / "bin" / "sekmet"))
CALF_CDS = Path(sys.executable).parent / "calf-cds"
TOKEN = "sekmet-loopback-token-4e1f"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {TOKEN}"}


def heart_rate() -> dict[str, Any]:
    """An Observation the rules do not read: filler that makes the Observation search page."""
    value = {"value": 72, "unit": "/min", "system": UCUM, "code": "/min"}
    return observation(LOINC, "8867-4", valueQuantity=value, days_ago=3)


# Each patient with the resources the server holds and the card topics the rules give.
PATIENTS: dict[str, tuple[list[dict[str, Any]], list[str]]] = {
    "dvt": (
        [
            calf_pain(),
            finding("calf-circumference-difference", quantity(3.4, "cm")),
            finding("entire-leg-swollen"),
            condition(SNOMED, "128053003", clinical="resolved", days_ago=700),
            *(heart_rate() for _ in range(25)),  # more than one page at sekmet's default _count of 20
        ],
        ["duplex-dvt"],
    ),
    "pad": (
        [
            calf_pain(),
            finding("exertional-leg-pain"),
            finding("relief-standing-still"),
            finding("reproducible-walking-distance"),
        ],
        ["abi"],
    ),
    "strain": (
        [calf_pain(), finding("acute-onset-during-sport-with-pop"), finding("muscle-belly-tenderness")],
        ["conservative"],
    ),
    "ischaemia": ([calf_pain(), finding("sudden-onset"), finding("cold-pale-limb")], ["urgent-referral"]),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def today_dated(resource: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """The builder's resource for ``patient_id``, its dates moved from the fixed NOW to today."""
    shift = datetime.now(UTC) - NOW
    moved = dict(resource, subject={"reference": f"Patient/{patient_id}"})
    for name in ("effectiveDateTime", "recordedDate"):
        if name in moved:
            moved[name] = (datetime.fromisoformat(moved[name]) + shift).isoformat()
    return moved


@dataclass
class FhirServer:
    """A running sekmet-fhir: its FHIR base URL, process and log."""

    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def put(self, resource: dict[str, Any]) -> None:
        url = f"{self.base}/{resource['resourceType']}/{resource['id']}"
        response = httpx.put(url, content=json.dumps(resource), headers=FHIR_JSON, timeout=10)
        assert response.status_code in (200, 201), f"PUT {url}: {response.status_code} {response.text[:500]}"


def start_sekmet(folder: Path, *, token: str | None = TOKEN) -> FhirServer:
    """Start sekmet-fhir on a free loopback port, data in ``folder``: requiring the bearer ``token``
    (an EHR), or open with ``token=None`` (a sandbox)."""
    if not SEKMET.is_file():
        pytest.fail(
            f"sekmet-fhir is not installed at {SEKMET}: run `bash scripts/test.sh`, which installs it "
            "into .cache/sekmet-venv (or set CALF_CDS_SEKMET to a sekmet executable)"
        )
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    config = {
        "base_url": base,
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(folder / "data"),
        "simulator": {"enabled": False},
        "server_auth": {"types": ["bearer"], "tokens": [token]} if token else {"types": ["none"]},
        "log_inbound": False,
    }
    settings_file = folder / "settings.yaml"
    settings_file.write_text(json.dumps(config))  # JSON is YAML
    log = folder / "sekmet.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
    command = [
        str(SEKMET),
        "serve",
        "--config",
        str(settings_file),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT)
    server = FhirServer(base, process, log)
    ready_headers = FHIR_JSON | ({"Authorization": f"Bearer {token}"} if token else {})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base}/metadata", headers=ready_headers, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"sekmet-fhir did not start: {log.read_text(errors='replace')[-3000:]}")


def load(server: FhirServer, patient_id: str) -> list[dict[str, Any]]:
    """PUT the patient and their resources; return the resources as the server holds them."""
    server.put(patient(patient_id))
    resources = [today_dated(r, patient_id) for r in PATIENTS[patient_id][0]]
    for resource in resources:
        server.put(resource)
    return resources


@pytest.fixture(scope="module")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    """One sekmet-fhir with every patient of PATIENTS loaded, and a stranger's Observation."""
    server = start_sekmet(tmp_path_factory.mktemp("sekmet"))
    try:
        for patient_id in PATIENTS:
            load(server, patient_id)
        server.put(patient("stranger"))
        server.put(today_dated(finding("cold-pale-limb"), "stranger"))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """calf-cds in process on today's date, with its default (real httpx) FHIR fetcher."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("calf-cds"), dev=True)
    with dev_client(create_app(settings), settings) as client:
        yield client


def fetching_call(base: str, patient_id: str, token: str = TOKEN) -> dict[str, Any]:
    body = hook_request([], patient_id=patient_id)
    del body["prefetch"]
    body["fhirServer"] = base
    body["fhirAuthorization"] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "calf-cds-e2e",
    }
    return body


def cards(response: httpx.Response) -> list[tuple[str, str, str]]:
    assert response.status_code == 200, response.text
    return [(c["source"]["topic"]["code"], c["indicator"], c["summary"]) for c in response.json()["cards"]]


def post(service: TestClient, body: dict[str, Any]) -> httpx.Response:
    return service.post("/cds-services/calf-pain", json=body)


@pytest.mark.parametrize("patient_id", list(PATIENTS))
def test_fetching_gives_the_same_cards_as_prefetch(
    fhir_server: FhirServer, service: TestClient, patient_id: str
) -> None:
    """The same patient gives the same cards whether the EHR prefetches the data or the service
    fetches it from the loopback FHIR server."""
    resources = [today_dated(r, patient_id) for r in PATIENTS[patient_id][0]]
    prefetched = cards(post(service, hook_request(resources, patient_id=patient_id)))
    fetched = cards(post(service, fetching_call(fhir_server.base, patient_id)))
    assert [topic for topic, _, _ in fetched] == PATIENTS[patient_id][1]
    assert fetched == prefetched


def test_first_page_prefetch_is_completed_from_the_server(
    fhir_server: FhirServer, service: TestClient
) -> None:
    """As the CDS Hooks Sandbox does, only the first page of Observations is prefetched (3 of 28);
    the service follows the server's `next` links and gives the full patient's cards."""
    first_page = httpx.get(
        f"{fhir_server.base}/Observation", params={"patient": "dvt", "_count": "3"}, headers=FHIR_JSON
    ).json()
    assert any(link["relation"] == "next" for link in first_page["link"])
    body = fetching_call(fhir_server.base, "dvt")
    conditions = httpx.get(
        f"{fhir_server.base}/Condition", params={"patient": "dvt"}, headers=FHIR_JSON
    ).json()
    body["prefetch"] = {"patient": patient("dvt"), "observations": first_page, "conditions": conditions}
    assert [topic for topic, _, _ in cards(post(service, body))] == ["duplex-dvt"]


def test_wrong_token_is_412(fhir_server: FhirServer, service: TestClient) -> None:
    """The FHIR server refuses the token: 412 with an OperationOutcome, the token not echoed."""
    response = post(service, fetching_call(fhir_server.base, "dvt", token="not-the-token"))
    assert response.status_code == 412
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "refused the token" in outcome["issue"][0]["diagnostics"]
    assert "not-the-token" not in response.text


def test_stopped_fhir_server_is_412(tmp_path: Path, service: TestClient) -> None:
    """With the FHIR server stopped, the call answers 412 with an OperationOutcome (how fast is
    for bench/, not a test)."""
    server = start_sekmet(tmp_path)
    try:
        load(server, "pad")
        assert [topic for topic, _, _ in cards(post(service, fetching_call(server.base, "pad")))] == ["abi"]
    finally:
        server.stop()
    response = post(service, fetching_call(server.base, "pad"))
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"


def run_cli(
    *argv: str, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"CALF_CDS_DATA_DIR": str(data_dir), "COLUMNS": "160"} | (env or {})
    return subprocess.run(
        [str(CALF_CDS), *argv], env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def test_try_prints_the_cards(fhir_server: FhirServer, tmp_path: Path) -> None:
    """`calf-cds try --dev` against the loopback FHIR server prints each patient's cards (README)."""
    for patient_id, (_, topics) in PATIENTS.items():
        result = run_cli(
            "try",
            "--dev",
            "--fhir-server",
            fhir_server.base,
            "--patient",
            patient_id,
            "--bearer",
            TOKEN,
            data_dir=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        card_count = f"{len(topics)} card" + ("" if len(topics) == 1 else "s")
        assert f"calf-pain: {card_count} for Patient/{patient_id}" in result.stdout
        for topic in topics:
            assert f"topic: {topic}" in result.stdout
    assert "CRITICAL" in result.stdout  # the last patient's red flag
    assert TOKEN not in result.stdout + result.stderr


def test_try_reports_a_refused_token(fhir_server: FhirServer, tmp_path: Path) -> None:
    """A refused token: exit 1 with the OperationOutcome's diagnostics."""
    result = run_cli(
        "try",
        "--dev",
        "--fhir-server",
        fhir_server.base,
        "--patient",
        "dvt",
        "--bearer",
        "wrong",
        data_dir=tmp_path,
    )
    assert result.returncode == 1
    assert "HTTP 412" in result.stderr
    assert "refused the token" in " ".join(result.stderr.split())


def test_try_refuses_plain_http_outside_development(fhir_server: FhirServer, tmp_path: Path) -> None:
    """Without `--dev`, the loopback server's plain http is refused (400) and the token not sent."""
    result = run_cli(
        "try", "--fhir-server", fhir_server.base, "--patient", "dvt", "--bearer", TOKEN, data_dir=tmp_path
    )
    assert result.returncode == 1
    assert "HTTP 400" in result.stderr
    assert "must be https outside development mode" in " ".join(result.stderr.split())


def test_try_reads_loopback_http_when_the_operator_allows_it(fhir_server: FhirServer, tmp_path: Path) -> None:
    """`CALF_CDS_FHIR_ALLOW_HTTP_LOOPBACK=true` accepts plain http to a loopback server (only)."""
    result = run_cli(
        "try",
        "--fhir-server",
        fhir_server.base,
        "--patient",
        "pad",
        "--bearer",
        TOKEN,
        data_dir=tmp_path,
        env={"CALF_CDS_FHIR_ALLOW_HTTP_LOOPBACK": "true"},
    )
    assert result.returncode == 0, result.stderr
    assert "topic: abi" in result.stdout


@pytest.mark.parametrize(("allow_http_loopback", "status"), [(False, 400), (True, 200)])
def test_production_service_reads_a_registered_loopback_server_only_when_allowed(
    fhir_server: FhirServer, tmp_path: Path, allow_http_loopback: bool, status: int
) -> None:
    """Outside development mode, an EHR that registers its loopback http FHIR server is read only
    with CALF_CDS_FHIR_ALLOW_HTTP_LOOPBACK; without it the call is a 400 and nothing is fetched."""
    key = SigningKey.es384()
    issuers = {"issuers": [{"iss": ISSUER, "jwks": jwks(key), "fhir_servers": [fhir_server.base]}]}
    (tmp_path / "issuers.json").write_text(json.dumps(issuers))
    settings = Settings(
        data_dir=tmp_path / "data",
        trusted_issuers_file=tmp_path / "issuers.json",
        public_base_url="https://cds.example.org",
        fhir_allow_http_loopback=allow_http_loopback,
    )
    token = key.sign(claims(time.time(), aud="https://cds.example.org/cds-services/calf-pain"))
    with TestClient(create_app(settings), base_url="https://cds.example.org") as client:
        response = client.post(
            "/cds-services/calf-pain",
            json=fetching_call(fhir_server.base, "pad"),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == status, response.text
    if status == 200:
        assert [card["source"]["topic"]["code"] for card in response.json()["cards"]] == ["abi"]


@pytest.fixture(scope="module")
def calf_cds_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`calf-cds serve --dev` on a free loopback port, and its data folder (with the dev issuer)."""
    port = free_port()
    data_dir = tmp_path_factory.mktemp("served")
    env = os.environ | {"CALF_CDS_DATA_DIR": str(data_dir)}
    log = tmp_path_factory.mktemp("served-log") / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(CALF_CDS), "serve", "--dev", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a guard against a server that never starts, on a busy machine
        while True:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("calf-cds serve did not start: " + log.read_text(errors="replace"))
                time.sleep(0.1)
        yield base, data_dir
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_try_against_a_running_service(fhir_server: FhirServer, calf_cds_server: tuple[str, Path]) -> None:
    """`calf-cds try --service URL` sends the call to a running calf-cds (signed by the shared
    development issuer), which fetches the data."""
    service, data_dir = calf_cds_server
    result = run_cli(
        "try",
        "--fhir-server",
        fhir_server.base,
        "--patient",
        "dvt",
        "--bearer",
        TOKEN,
        "--service",
        service,
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr
    assert "topic: duplex-dvt" in result.stdout
