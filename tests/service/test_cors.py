"""CORS for browser-based CDS clients such as the CDS Hooks Sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.fhir_builders import NOW, hook_request

SANDBOX = "https://sandbox.cds-hooks.org"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.fixture
def sandbox_only(settings: Settings) -> Iterator[TestClient]:
    """The service with one allowed browser origin."""
    limited = settings.model_copy(update={"cors_origins": (SANDBOX,)})
    with TestClient(create_app(limited, clock=lambda: NOW)) as client:
        yield client


@pytest.mark.parametrize("path", ["/cds-services", "/cds-services/calf-pain"])
def test_preflight_with_authorization_header_is_allowed(client: TestClient, path: str) -> None:
    """A browser may send `Authorization` (the client JWT) and JSON to our endpoints."""
    response = client.options(path, headers={"Origin": SANDBOX, **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", SANDBOX)
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]


def test_configured_origin_gets_cards_with_cors_headers(sandbox_only: TestClient) -> None:
    """A hook call from an allowed origin is answered with that origin allowed."""
    preflight = sandbox_only.options("/cds-services/calf-pain", headers={"Origin": SANDBOX, **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == SANDBOX
    response = sandbox_only.post(
        "/cds-services/calf-pain",
        json=hook_request([]),
        headers={"Origin": SANDBOX, "Authorization": "Bearer not-checked-here"},
    )
    assert response.status_code in (200, 401)  # client auth, where enabled, is another concern
    assert response.headers["access-control-allow-origin"] == SANDBOX


def test_other_origins_are_refused(sandbox_only: TestClient) -> None:
    """A preflight from an origin that is not configured gets no CORS permission."""
    response = sandbox_only.options(
        "/cds-services/calf-pain", headers={"Origin": "https://evil.example.com", **PREFLIGHT}
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
