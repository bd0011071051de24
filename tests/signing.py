"""An app test client that signs every request as a CDS Client would (a fresh JWT per call)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Generator

import httpx

with warnings.catch_warnings():
    # Starlette asks for `httpx2` in its test client; plain httpx still works and is what we ship.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from service.auth.dev_issuer import DevIssuer


class DevIssuerAuth(httpx.Auth):
    """Signs each request with a fresh development-issuer token whose `aud` is the URL called.

    A request that already carries an Authorization header is sent as it is; pass `auth=None`
    to send none at all.
    """

    def __init__(self, issuer: DevIssuer) -> None:
        self.issuer = issuer

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" not in request.headers:
            request.headers["Authorization"] = (
                f"Bearer {self.issuer.token(audience_of(request.url), now=time.time())}"
            )
        yield request


def audience_of(url: httpx.URL) -> str:
    """The `aud` a client puts in a token for `url`: scheme, host, port and path."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


def signed_client(app: object, issuer: DevIssuer) -> TestClient:
    """A TestClient (use it as a context manager) that signs every request as `issuer`."""
    test_client = TestClient(app)  # type: ignore[arg-type]
    test_client.auth = DevIssuerAuth(issuer)
    return test_client


def dev_client(app: object, settings: object) -> TestClient:
    """A signing TestClient for an app built on ``settings`` in development mode."""
    data_dir = settings.data_dir  # type: ignore[attr-defined]
    return signed_client(app, DevIssuer.load_or_create(data_dir))
