"""One HTTP client per worker for FHIR fetches: pooled connections, the token per request, no
cookies carried between calls, and a total budget that is a deadline fixed when the fetch begins.

The FHIR server is real (``http.server`` on loopback), so connections and headers are what a
network would see. The CPU and wall-time figures are in ``bench/fhir_fetch.py``, not here.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from cds_hooks.errors import FhirUnavailableError
from cds_hooks.fhir_fetch import FetchPolicy
from cds_hooks.prefetch_plan import FetchPlan
from service.app import create_app
from service.config import Settings
from service.hooks.fhir_fetcher import FhirFetcher
from tests.fhir_builders import NOW, bundle, hook_request, patient
from tests.service.test_fetching import fetching_request
from tests.signing import dev_client


class Recorder(BaseHTTPRequestHandler):
    """Answers Patient/p1 and empty searches; records each request's connection and headers, and
    sets a cookie (which no later call may send back)."""

    protocol_version = "HTTP/1.1"  # keep-alive
    seen: ClassVar[list[tuple[int, str | None, str | None]]] = []

    def do_GET(self) -> None:
        self.seen.append((id(self.connection), self.headers.get("Authorization"), self.headers.get("Cookie")))
        body = patient("p1") if "/Patient/" in self.path else bundle([])
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Set-Cookie", "session=one-users-session; Path=/")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def fhir_server() -> Iterator[str]:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    server.shutdown()
    server.server_close()


def with_token(body: dict[str, Any], server: str, token: str) -> dict[str, Any]:
    body = dict(body, fhirServer=server)
    body["fhirAuthorization"] = dict(body["fhirAuthorization"], access_token=token)
    return body


def test_calls_share_pooled_connections_and_each_sends_its_own_token(
    settings: Settings, fhir_server: str
) -> None:
    """Two calls, two tokens: each request carries its call's token, no cookie is sent back, and the
    second call reuses the first one's connections instead of opening (and TLS-handshaking) anew."""
    with dev_client(create_app(settings, clock=lambda: NOW), settings) as client:
        fetcher = client.app.state.runtime.fetcher  # type: ignore[attr-defined]
        for token in ("token-of-call-one", "token-of-call-two"):
            response = client.post(
                "/cds-services/calf-pain", json=with_token(fetching_request(), fhir_server, token)
            )
            assert response.status_code == 200, response.text
        assert fetcher._http is not None
    assert fetcher._http is None  # closed at shutdown
    tokens = [authorization for _, authorization, _ in Recorder.seen]
    assert tokens == ["Bearer token-of-call-one"] * 3 + ["Bearer token-of-call-two"] * 3
    assert {cookie for _, _, cookie in Recorder.seen} == {None}
    first, second = {c for c, *_ in Recorder.seen[:3]}, {c for c, *_ in Recorder.seen[3:]}
    assert second <= first


def test_a_call_without_a_token_sends_none_after_one_with(settings: Settings, fhir_server: str) -> None:
    """The shared client holds no credential: a call without fhirAuthorization sends no Authorization."""
    with dev_client(create_app(settings, clock=lambda: NOW), settings) as client:
        client.post("/cds-services/calf-pain", json=with_token(fetching_request(), fhir_server, "secret-one"))
        body = fetching_request()
        del body["fhirAuthorization"]
        body["fhirServer"] = fhir_server
        assert client.post("/cds-services/calf-pain", json=body).status_code == 200
    assert [authorization for _, authorization, _ in Recorder.seen[3:]] == [None] * 3


class NeverAnswers(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_the_total_budget_ends_a_fetch_that_no_request_timeout_would() -> None:
    """Per-request timeout far beyond the budget, no retries: the budget ends it (412-worthy)."""
    fetcher = FhirFetcher(FetchPolicy(request_timeout=60, total_budget=0.2, max_retries=0), NeverAnswers())
    request = hook_request([]) | {"fhirServer": "https://ehr.example.org/fhir"}
    from cds_hooks.models import HookRequest

    async def fetch() -> None:
        await fetcher.open()
        try:
            await asyncio.wait_for(
                fetcher(HookRequest.model_validate(request), FetchPlan(queries={"patient": "Patient/p1"})), 30
            )
        finally:
            await fetcher.aclose()

    with pytest.raises(FhirUnavailableError):
        asyncio.run(fetch())


def test_an_unopened_fetcher_still_fetches_with_a_client_of_its_own(fhir_server: str) -> None:
    """`calf-cds try` and tests call a fetcher that was never opened: it works, one client per call."""
    from cds_hooks.models import HookRequest

    # A plain transport: the default PinnedTransport connects only where the FhirServerGuard approved.
    fetcher = FhirFetcher(FetchPolicy(), transport=httpx.AsyncHTTPTransport())
    request = HookRequest.model_validate(hook_request([]) | {"fhirServer": fhir_server})
    fetched = asyncio.run(fetcher(request, FetchPlan(queries={"patient": "Patient/p1"})))
    assert fetched.values["patient"]["id"] == "p1"
