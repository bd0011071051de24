"""Client authentication through the HTTP app: real signed tokens, every rejection a bare 401.

The app trusts three issuers from a trusted-issuer file: an EHR with ES384 and RS384 keys inline,
the CDS Hooks Sandbox by JWKS URL (served by respx) with its `jku` allowlisted, and an EHR whose
keys are in a file and whose tokens must carry an allowed tenant. `public_base_url` is set, so
`aud` must be `https://cds.example.org` + the path called.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from service.auth.dev_issuer import DevIssuer
from service.auth.errors import AudienceError
from service.config import Settings
from service.http.errors import challenge
from service.store.schema import hook_calls, replay_store_url
from tests.fhir_builders import NOW, calf_pain, finding, hook_request, quantity
from tests.service.jwt_factory import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    claims,
    hmac_token,
    jwks,
    unsigned_token,
)

BASE = "https://cds.example.org"
DISCOVERY = BASE + "/cds-services"
SANDBOX = "https://sandbox.cds-hooks.org"
SANDBOX_JWKS = SANDBOX + "/.well-known/jwks.json"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
TENANT_ISSUER = "https://tenant-ehr.example.org/"
TENANT = "2ddd6c3a-8e9a-44c6-a305-52111ad302a2"
DVT = [
    calf_pain(),
    finding("calf-circumference-difference", quantity(3.4, "cm")),
    finding("entire-leg-swollen"),
]


@pytest.fixture(scope="module")
def es_key() -> SigningKey:
    return SigningKey.es384()


@pytest.fixture(scope="module")
def rs_key() -> SigningKey:
    return SigningKey.rs384()


@pytest.fixture(scope="module")
def sandbox_key() -> SigningKey:
    return SigningKey.es384(SANDBOX_KID)


@pytest.fixture(scope="module")
def tenant_key() -> SigningKey:
    return SigningKey.es384("tenant-key")


@pytest.fixture
def auth_settings(tmp_path: Path, es_key: SigningKey, rs_key: SigningKey, tenant_key: SigningKey) -> Settings:
    (tmp_path / "tenant-ehr.jwks.json").write_text(json.dumps(jwks(tenant_key)))
    issuers = {
        "issuers": [
            {"iss": ISSUER, "jwks": jwks(es_key, rs_key)},
            {"iss": SANDBOX, "jwks_url": SANDBOX_JWKS, "jku_allowlist": [SANDBOX_JWKS]},
            {"iss": TENANT_ISSUER, "jwks_file": "tenant-ehr.jwks.json", "tenants": [TENANT]},
        ]
    }
    path = tmp_path / "trusted-issuers.json"
    path.write_text(json.dumps(issuers))
    return Settings(data_dir=tmp_path / "data", trusted_issuers_file=path, public_base_url=BASE)


@pytest.fixture
def api(
    auth_settings: Settings, sandbox_key: SigningKey, respx_mock: respx.MockRouter
) -> Iterator[TestClient]:
    """The app, reached at the public base URL; the Sandbox's JWKS served by respx."""
    respx_mock.get(SANDBOX_JWKS).mock(return_value=httpx.Response(200, json=jwks(sandbox_key)))
    with TestClient(create_app(auth_settings, clock=lambda: NOW), base_url=BASE) as test_client:
        yield test_client


def now_claims(**overrides: object) -> dict[str, Any]:
    """Valid claims for the hook endpoint, issued now (the verifier reads the real clock)."""
    return claims(time.time(), **overrides)


def call(api: TestClient, token: str | None, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return api.post("/cds-services/calf-pain", json=body or hook_request(DVT), headers=headers)


# What each refusal tells the client (RFC 6750 error_description): the category, nothing more.
CATEGORIES = {
    "malformed": "malformed token",
    "alg-not-allowed": "algorithm not allowed",
    "unknown-issuer": "untrusted issuer",
    "jku-not-allowed": "jku not on the issuer's allowlist",
    "unknown-kid": "unknown key (kid)",
    "bad-signature": "bad signature",
    "audience": "audience mismatch",
    "expired": "expired",
    "not-yet-valid": "not yet valid",
    "tenant": "tenant not allowed",
    "replayed": "replayed (jti already used)",
}


def assert_refused(
    response: httpx.Response, caplog: pytest.LogCaptureFixture | None = None, reason: str = ""
) -> None:
    """401 with RFC 6750's challenge: bare `Bearer` without a token, else `invalid_token` and the
    category; the OperationOutcome says the same; the log says why."""
    assert response.status_code == 401
    if caplog is not None:
        assert f": {reason} (iss=" in caplog.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "login"
    if reason == "missing-token":
        assert response.headers["www-authenticate"] == "Bearer"
    elif reason:
        category = CATEGORIES[reason]
        assert response.headers["www-authenticate"] == (
            f'Bearer error="invalid_token", error_description="{category}"'
        )
        assert outcome["issue"][0]["diagnostics"] == f"invalid client JWT: {category}"


def audit_rows(settings: Settings, expected: int) -> list[dict[str, Any]]:
    engine = sa.create_engine(settings.resolved_database_url())
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as connection:
            rows = [dict(r) for r in connection.execute(sa.select(hook_calls)).mappings()]
        if len(rows) >= expected or time.monotonic() > deadline:
            engine.dispose()
            return rows


# --- accepted --------------------------------------------------------------------------------


def test_es384_token_gets_cards(api: TestClient, es_key: SigningKey) -> None:
    """A valid ES384 token from a configured issuer: the call is answered with cards."""
    response = call(api, es_key.sign(now_claims()))
    assert response.status_code == 200
    assert [c["source"]["topic"]["code"] for c in response.json()["cards"]] == ["duplex-dvt"]


def test_rs384_ehr_token_with_sub_and_nbf_gets_cards(api: TestClient, rs_key: SigningKey) -> None:
    """An EHR vendor's shape (RS384, sub, nbf) passes when its issuer is configured."""
    token = rs_key.sign(now_claims(sub="ehr-client-42", nbf=int(time.time())))
    assert call(api, token).status_code == 200


def test_sandbox_shaped_token_gets_cards(api: TestClient, sandbox_key: SigningKey) -> None:
    """The CDS Hooks Sandbox's shape: ES384, its kid, a jku to its JWKS, iat rounded up to 0.5 s ahead."""
    now = time.time()
    issued = math.floor(now + 0.5)  # Math.round(Date.now() / 1000)
    token = sandbox_key.sign(
        {"iss": SANDBOX, "aud": AUDIENCE, "exp": issued + 300, "iat": issued, "jti": str(uuid.uuid4())},
        jku=SANDBOX_JWKS,
    )
    assert call(api, token).status_code == 200


def test_tenant_on_the_allowlist_gets_cards(api: TestClient, tenant_key: SigningKey) -> None:
    """An issuer restricted to tenants accepts a token for one of them (keys from a JWKS file)."""
    token = tenant_key.sign(now_claims(iss=TENANT_ISSUER, tenant=TENANT))
    assert call(api, token).status_code == 200


def test_discovery_needs_a_token_for_its_own_url(api: TestClient, es_key: SigningKey) -> None:
    """GET /cds-services is answered for a token whose aud is the discovery URL."""
    response = api.get(
        "/cds-services", headers={"Authorization": f"Bearer {es_key.sign(now_claims(aud=DISCOVERY))}"}
    )
    assert response.status_code == 200
    assert_refused(api.get("/cds-services"))


def test_browser_preflight_needs_no_token_and_a_refusal_is_readable(api: TestClient) -> None:
    """The Sandbox is a browser: its CORS preflight is answered, and a 401 carries CORS headers."""
    preflight = api.options(
        "/cds-services/calf-pain",
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    refused = api.post(
        "/cds-services/calf-pain", json={}, headers={"Origin": "https://sandbox.cds-hooks.org"}
    )
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "*"


def test_health_endpoints_need_no_token(api: TestClient) -> None:
    """Probes are not authenticated."""
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200


def test_audit_records_the_client_but_never_the_token(
    api: TestClient, auth_settings: Settings, tenant_key: SigningKey
) -> None:
    """iss, tenant and jti are in the audit row; the token is nowhere in it."""
    token_claims = now_claims(iss=TENANT_ISSUER, tenant=TENANT, sub="ehr-client-7")
    token = tenant_key.sign(token_claims)
    assert call(api, token).status_code == 200
    (row,) = audit_rows(auth_settings, 1)
    assert row["client"]["iss"] == TENANT_ISSUER
    assert row["client"]["tenant"] == TENANT
    assert row["client"]["jti"] == token_claims["jti"]
    assert row["client"]["sub"] == "ehr-client-7"
    assert token.split(".")[2] not in json.dumps(row, default=str)


# --- refused ---------------------------------------------------------------------------------


def test_no_token_is_refused(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    assert_refused(call(api, None), caplog, "missing-token")


def test_other_authorization_scheme_is_refused(
    api: TestClient, es_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """A Basic (or any non-Bearer) Authorization header is no token."""
    response = api.post(
        "/cds-services/calf-pain", json=hook_request(DVT), headers={"Authorization": "Basic dXNlcjpwYXNz"}
    )
    assert_refused(response, caplog, "missing-token")


def test_garbage_token_is_refused(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    assert_refused(call(api, "not.a.jwt"), caplog, "malformed")


def test_expired_token_is_refused(
    api: TestClient, es_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    assert_refused(
        call(api, es_key.sign(now_claims(iat=int(now) - 400, exp=int(now) - 100))), caplog, "expired"
    )


def test_token_not_yet_valid_is_refused(
    api: TestClient, rs_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """An `nbf` a minute ahead: the 401 says "not yet valid"."""
    token = rs_key.sign(now_claims(sub="ehr-client-42", nbf=int(time.time()) + 60))
    assert_refused(call(api, token), caplog, "not-yet-valid")


def test_refusal_never_echoes_the_token_or_its_claims(api: TestClient, es_key: SigningKey) -> None:
    """The challenge and the body name the category only: nothing from the token."""
    token = es_key.sign(now_claims(aud="https://attacker.example.org/x"))
    response = call(api, token)
    assert_refused(response, None, "audience")
    told = response.headers["www-authenticate"] + response.text
    for secret in (token, token.split(".")[1], "attacker", "es384-key", BASE):
        assert secret not in told


def test_wrong_audience_is_refused(
    api: TestClient, es_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """A token for another endpoint (here: discovery) is refused on the hook endpoint."""
    assert_refused(call(api, es_key.sign(now_claims(aud=DISCOVERY))), caplog, "audience")


def test_token_for_the_internal_url_is_refused_behind_a_public_base(
    api: TestClient, es_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """With public_base_url set, aud is the public URL, not the one the request arrived at."""
    token = es_key.sign(now_claims(aud="http://testserver/cds-services/calf-pain"))
    assert_refused(call(api, token), caplog, "audience")


def test_replayed_jti_is_refused(
    api: TestClient, es_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """The same token twice: the second call is a replay."""
    token = es_key.sign(now_claims())
    assert call(api, token).status_code == 200
    assert_refused(call(api, token), caplog, "replayed")


def test_unknown_kid_is_refused(
    api: TestClient, es_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    assert_refused(call(api, es_key.with_kid("not-published").sign(now_claims())), caplog, "unknown-kid")


def test_alg_none_is_refused(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    assert_refused(call(api, unsigned_token(now_claims(), kid="es384-key")), caplog, "alg-not-allowed")


def test_hs256_with_the_public_key_as_secret_is_refused(
    api: TestClient, es_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """The key-confusion attack: HMAC over the token with the issuer's public key as the secret."""
    assert_refused(
        call(api, hmac_token(now_claims(), es_key.public_pem(), kid="es384-key")), caplog, "alg-not-allowed"
    )


def test_signature_by_another_key_is_refused(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """Right kid, wrong private key."""
    assert_refused(call(api, SigningKey.es384("es384-key").sign(now_claims())), caplog, "bad-signature")


def test_untrusted_jku_is_refused(
    api: TestClient, sandbox_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """A jku that is not on the issuer's allowlist is never fetched."""
    token = sandbox_key.sign(now_claims(iss=SANDBOX), jku="https://evil.example.org/jwks.json")
    assert_refused(call(api, token), caplog, "jku-not-allowed")


def test_wrong_tenant_is_refused(
    api: TestClient, tenant_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    token = tenant_key.sign(now_claims(iss=TENANT_ISSUER, tenant="another-tenant"))
    assert_refused(call(api, token), caplog, "tenant")


def test_missing_tenant_is_refused_when_tenants_are_required(
    api: TestClient, tenant_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    assert_refused(call(api, tenant_key.sign(now_claims(iss=TENANT_ISSUER))), caplog, "tenant")


def test_unknown_issuer_is_refused(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    stranger = SigningKey.es384()
    assert_refused(
        call(api, stranger.sign(now_claims(iss="https://stranger.example.org/"))), caplog, "unknown-issuer"
    )


def test_refusals_log_the_reason_but_never_the_token(
    api: TestClient, es_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line says why (for operators); the token itself is not in any record."""
    token = es_key.sign(now_claims(aud=DISCOVERY))
    with caplog.at_level(logging.INFO):
        assert_refused(call(api, token))
    assert "audience" in caplog.text
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


def test_the_jti_goes_to_the_replay_file_beside_the_sqlite_audit_file(
    api: TestClient, auth_settings: Settings, es_key: SigningKey
) -> None:
    """The replay check writes to a file of its own, so the audit writers never hold its lock."""
    assert call(api, es_key.sign(now_claims(jti="jti-in-its-own-file"))).status_code == 200
    for url, expected in (
        (replay_store_url(auth_settings.resolved_database_url()), ["jti-in-its-own-file"]),
        (auth_settings.resolved_database_url(), []),
    ):
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT jti FROM jwt_replay")).scalars().all() == expected
        engine.dispose()


def test_replay_store_outage_still_answers_and_still_refuses_replays(
    api: TestClient, auth_settings: Settings, es_key: SigningKey
) -> None:
    """While the shared replay store is down, calls are answered and this process still refuses a replay."""
    engine = sa.create_engine(replay_store_url(auth_settings.resolved_database_url()))
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE jwt_replay"))
    engine.dispose()
    token = es_key.sign(now_claims())
    assert call(api, token).status_code == 200
    assert call(api, token).status_code == 401


# --- audience without a public base URL --------------------------------------------------------


def test_without_public_base_the_request_url_is_the_audience(
    auth_settings: Settings, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """No public_base_url: aud must equal the URL the request was sent to (scheme, host, port, path)."""
    settings = auth_settings.model_copy(update={"public_base_url": None})
    with TestClient(create_app(settings, clock=lambda: NOW), base_url="http://cds.local:8080") as local:
        good = es_key.sign(now_claims(aud="http://cds.local:8080/cds-services/calf-pain"))
        assert call(local, good).status_code == 200
        assert_refused(call(local, es_key.sign(now_claims())))


# --- configuration ---------------------------------------------------------------------------


def test_app_without_trusted_issuers_does_not_start(tmp_path: Path) -> None:
    """Not dev, no issuer file: start-up fails rather than serving an endpoint nobody can call."""
    from service.auth.errors import AuthConfigError

    app = create_app(Settings(data_dir=tmp_path / "data"))
    with pytest.raises(AuthConfigError, match="CALF_CDS_TRUSTED_ISSUERS_FILE"), TestClient(app):
        pass  # pragma: no cover


def test_bad_trusted_issuer_file_does_not_start(tmp_path: Path) -> None:
    """A trusted-issuer file that does not parse stops the start with the file named."""
    from service.auth.errors import AuthConfigError

    path = tmp_path / "issuers.json"
    path.write_text('{"issuers": [{"iss": "https://x.example.org/"}]}')
    app = create_app(Settings(data_dir=tmp_path / "data", trusted_issuers_file=path))
    with pytest.raises(AuthConfigError, match=str(path)), TestClient(app):
        pass  # pragma: no cover


def test_dev_mode_names_the_expected_audience(client: TestClient, dev_issuer: DevIssuer) -> None:
    """In development mode an audience mismatch also says which `aud` the service expected."""
    token = dev_issuer.token("http://testserver/cds-services", now=time.time())
    response = client.post(
        "/cds-services/calf-pain", json=hook_request(DVT), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        'Bearer error="invalid_token", '
        'error_description="audience mismatch; expected aud http://testserver/cds-services/calf-pain"'
    )


def test_dev_mode_expected_audience_is_escaped() -> None:
    """The expected `aud` comes from the Host header: a quote or backslash cannot end the challenge."""
    header = challenge(AudienceError("aud mismatch"), expected_audience='http://evil"x\\y/cds-services')
    assert header == (
        'Bearer error="invalid_token", '
        'error_description="audience mismatch; expected aud http://evil%22x%5Cy/cds-services"'
    )
