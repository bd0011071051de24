"""The FHIR server guard through the whole service (not development mode), FHIR servers on respx.

Two trusted EHRs: ``https://ehr.example.org/`` registers its FHIR server (``fhir_servers``), and
``https://open-ehr.example.org/`` registers none. Names resolve through a fake DNS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.hooks.fhir_fetcher import FhirFetcher, fetch_policy
from tests.fake_dns import PUBLIC_NAMES, FakeDns
from tests.fhir_builders import NOW, hook_request
from tests.service.jwt_factory import ISSUER, SigningKey, claims, jwks
from tests.service.test_app import assert_outcome, audit_rows
from tests.service.test_fetching import DVT_SIGNS, PAIN, TOKEN, fetching_request, serve_patient

CDS = "https://cds.example.org"
OPEN_ISSUER = "https://open-ehr.example.org/"
REGISTERED = "https://ehr.example.org/fhir"
NAMES = {
    **PUBLIC_NAMES,
    "metadata.evil.test": ["169.254.169.254"],
    "internal.example.org": ["10.20.30.40"],
    "ehr.example.org.evil.test": ["203.0.113.66"],
}
Call = Callable[..., httpx.Response]


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.es384()


def production_settings(tmp_path: Path, key: SigningKey, **options: Any) -> Settings:
    issuers = {
        "issuers": [
            {"iss": ISSUER, "jwks": jwks(key), "fhir_servers": [REGISTERED]},
            {"iss": OPEN_ISSUER, "jwks": jwks(key)},
        ]
    }
    path = tmp_path / "trusted-issuers.json"
    path.write_text(json.dumps(issuers))
    return Settings(data_dir=tmp_path / "data", trusted_issuers_file=path, public_base_url=CDS, **options)


@pytest.fixture
def fhir() -> respx.MockRouter:
    """Every FHIR server, as one respx router: any request to it is recorded."""
    return respx.MockRouter(assert_all_called=False, assert_all_mocked=True)


@pytest.fixture
def settings(tmp_path: Path, key: SigningKey) -> Settings:
    return production_settings(tmp_path, key)


def client_for(settings: Settings, fhir: respx.MockRouter) -> TestClient:
    fetcher = FhirFetcher(fetch_policy(settings), transport=httpx.MockTransport(fhir.async_handler))
    app = create_app(settings, clock=lambda: NOW, fetcher=fetcher, resolver=FakeDns(NAMES))
    return TestClient(app, base_url=CDS)


@pytest.fixture
def call(settings: Settings, fhir: respx.MockRouter, key: SigningKey) -> Iterator[Call]:
    """POST a hook call signed by ``iss`` (the registering EHR unless told otherwise)."""
    with client_for(settings, fhir) as client:

        def post(body: dict[str, Any], iss: str = ISSUER) -> httpx.Response:
            token = key.sign(claims(time.time(), iss=iss, aud=f"{CDS}/cds-services/calf-pain"))
            return client.post(
                "/cds-services/calf-pain", json=body, headers={"Authorization": f"Bearer {token}"}
            )

        yield post


def at(fhir_server: str) -> dict[str, Any]:
    return fetching_request() | {"fhirServer": fhir_server}


def assert_refused(response: httpx.Response, fhir: respx.MockRouter) -> str:
    """400 at /fhirServer, nothing fetched, the token sent nowhere; the diagnostics returned."""
    outcome = assert_outcome(response, 400)
    assert outcome["issue"][0]["expression"] == ["/fhirServer"]
    assert not fhir.calls
    assert TOKEN not in response.text
    diagnostics: str = outcome["issue"][0]["diagnostics"]
    return diagnostics


def test_registered_https_server_is_read(call: Call, fhir: respx.MockRouter) -> None:
    """The registering EHR's own https FHIR server is read, with its token, and gives cards."""
    serve_patient(fhir, [PAIN, *DVT_SIGNS], [])
    response = call(at(REGISTERED))
    assert response.status_code == 200, response.text
    assert [card["source"]["topic"]["code"] for card in response.json()["cards"]] == ["duplex-dvt"]
    assert len(fhir.calls) == 3
    assert all(request.headers["Authorization"] == f"Bearer {TOKEN}" for request, _ in fhir.calls)


def test_http_is_refused_outside_development_and_audited(
    call: Call, fhir: respx.MockRouter, settings: Settings
) -> None:
    """Plain http outside development mode is a 400 before anything is fetched; the audit record
    names the rule."""
    diagnostics = assert_refused(call(at("http://ehr.example.org/fhir"), iss=OPEN_ISSUER), fhir)
    assert "must be https" in diagnostics
    (row,) = audit_rows(settings, 1)
    assert row["status_code"] == 400
    assert "fhirServer refused by the 'scheme' rule; nothing was fetched" in row["notes"]
    assert row["error"].startswith("FhirServerRefusedError")


@pytest.mark.parametrize(
    "fhir_server",
    [
        "https://ehr.example.org.evil.test/fhir",
        "https://ehr.example.org:8443/fhir",
        "https://ehr.example.org/fhir2",
        "https://other-ehr.example.org/fhir",
    ],
)
def test_a_server_the_issuer_did_not_register_is_refused(
    call: Call, fhir: respx.MockRouter, fhir_server: str
) -> None:
    """A look-alike host, another port or another path prefix is not the registered server."""
    fhir.route().mock(return_value=httpx.Response(200, json={}))
    assert "not under any of the FHIR servers registered" in assert_refused(call(at(fhir_server)), fhir)


@pytest.mark.parametrize(
    ("fhir_server", "words"),
    [
        ("https://metadata.evil.test/latest", "link-local"),
        ("https://169.254.169.254/fhir", "link-local"),
        ("https://internal.example.org/fhir", "private-range"),
        ("https://127.0.0.1:8443/fhir", "loopback"),
    ],
)
def test_internal_targets_are_refused_for_a_client_without_a_list(
    call: Call, fhir: respx.MockRouter, fhir_server: str, words: str
) -> None:
    """Without fhir_servers, a server that is (or whose name resolves to) an internal address is refused."""
    fhir.route().mock(return_value=httpx.Response(200, json={}))
    assert words in assert_refused(call(at(fhir_server), iss=OPEN_ISSUER), fhir)


def test_private_targets_are_read_when_the_operator_allows_them(
    tmp_path: Path, key: SigningKey, fhir: respx.MockRouter
) -> None:
    """With CALF_CDS_FHIR_ALLOW_PRIVATE, a server in a private range is read."""
    settings = production_settings(tmp_path, key, fhir_allow_private=True)
    serve_patient(fhir, [PAIN], [], base="https://internal.example.org/fhir")
    with client_for(settings, fhir) as client:
        token = key.sign(claims(time.time(), iss=OPEN_ISSUER, aud=f"{CDS}/cds-services/calf-pain"))
        response = client.post(
            "/cds-services/calf-pain",
            json=at("https://internal.example.org/fhir"),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    assert len(fhir.calls) == 3


def test_complete_prefetch_is_answered_whatever_the_fhir_server(call: Call, fhir: respx.MockRouter) -> None:
    """A call whose prefetch is complete contacts no FHIR server and sends its token nowhere, so
    its fhirServer is not judged: it is answered."""
    body = hook_request([PAIN, *DVT_SIGNS]) | {"fhirServer": "http://169.254.169.254/fhir"}
    response = call(body, iss=OPEN_ISSUER)
    assert response.status_code == 200, response.text
    assert not fhir.calls


def test_development_mode_reads_plain_http(tmp_path: Path, fhir: respx.MockRouter) -> None:
    """In development mode (`calf-cds serve --dev`) a plain-http FHIR server is read."""
    from tests.signing import dev_client

    settings = Settings(data_dir=tmp_path / "data", dev=True)
    serve_patient(fhir, [PAIN], [], base="http://ehr.example.org/fhir")
    fetcher = FhirFetcher(fetch_policy(settings), transport=httpx.MockTransport(fhir.async_handler))
    app = create_app(settings, clock=lambda: NOW, fetcher=fetcher, resolver=FakeDns(NAMES))
    with dev_client(app, settings) as client:
        response = client.post("/cds-services/calf-pain", json=at("http://ehr.example.org/fhir"))
    assert response.status_code == 200, response.text
    assert len(fhir.calls) == 3
