"""CDS Client authentication: JWT verification, trusted issuers, JWK Set caching, replay protection.

Every token here is really signed (ES384 and RS384 keys made per session) or really forged; time
comes from a `FakeClock`, HTTP from respx.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pydantic
import pytest
import respx
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from service.auth.caches import KeyStore, MemoryReplayCache, SqlReplayCache
from service.auth.errors import (
    AlgorithmNotAllowedError,
    AudienceError,
    AuthenticationError,
    BadSignatureError,
    ExpiredTokenError,
    IssuedInFutureError,
    JkuNotAllowedError,
    JwksUnavailableError,
    LifetimeTooLongError,
    MalformedTokenError,
    MissingClaimError,
    NotYetValidError,
    ReplayCacheUnavailableError,
    ReplayedTokenError,
    TenantNotAllowedError,
    TokenTypeError,
    UnknownIssuerError,
    UnknownKeyIdError,
)
from service.auth.jwks import TrustedIssuer, load_trusted_issuers
from service.auth.verifier import JwtVerifier, key_fits
from service.store.schema import auth_metadata
from tests.service.jwt_factory import (
    ABSENT,
    AUDIENCE,
    ISSUER,
    NOW,
    FakeClock,
    SigningKey,
    b64url_json,
    claims,
    hmac_token,
    jwks,
    unsigned_token,
)

pytestmark = pytest.mark.anyio

DATA = Path(__file__).parents[1] / "data" / "jwt"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
TENANT = "2ddd6c3a-8e9a-44c6-a305-52111ad302a2"

MakeVerifier = Callable[..., JwtVerifier]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def es_key() -> SigningKey:
    return SigningKey.es384()


@pytest.fixture(scope="session")
def rs_key() -> SigningKey:
    return SigningKey.rs384()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def make_verifier(clock: FakeClock, http_client: httpx.AsyncClient) -> MakeVerifier:
    """A verifier over the given issuers, with a fresh key store and replay cache on `clock`."""

    def make(*issuers: TrustedIssuer, **options: Any) -> JwtVerifier:
        options.setdefault("replay_cache", MemoryReplayCache(clock=clock))
        return JwtVerifier(issuers, key_store=KeyStore(http_client, clock=clock), clock=clock, **options)

    return make


@pytest.fixture
def verifier(make_verifier: MakeVerifier, es_key: SigningKey, rs_key: SigningKey) -> JwtVerifier:
    """Trusts ISSUER with both test keys inline."""
    return make_verifier(TrustedIssuer(iss=ISSUER, jwks=jwks(es_key, rs_key)))


# --- accepted tokens -------------------------------------------------------------------------


async def test_valid_es384_token_is_accepted(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """A Sandbox-shaped ES384 token (no sub) yields the client's identity."""
    token_claims = claims(tenant=TENANT)

    identity = await verifier.verify(es_key.sign(token_claims), audience=AUDIENCE)

    assert (identity.iss, identity.sub, identity.tenant) == (ISSUER, None, TENANT)
    assert (identity.jti, identity.kid, identity.alg) == (token_claims["jti"], "es384-key", "ES384")
    assert identity.expires_at.timestamp() == token_claims["exp"]
    assert identity.expires_at.tzinfo is not None


async def test_valid_rs384_token_with_sub_and_nbf_is_accepted(
    verifier: JwtVerifier, rs_key: SigningKey
) -> None:
    """An EHR vendor's shape: RS384, with sub and nbf."""
    token = rs_key.sign(claims(sub="ehr-client-42", nbf=int(NOW)))

    identity = await verifier.verify(token, audience=AUDIENCE)

    assert (identity.alg, identity.sub) == ("RS384", "ehr-client-42")


async def test_audience_list_containing_ours_is_accepted(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """aud may be an array of strings; it must contain the endpoint's URL."""
    token = es_key.sign(claims(aud=["https://other.example.org/cds-services", AUDIENCE]))

    identity = await verifier.verify(token, audience=AUDIENCE)

    assert identity.iss == ISSUER


async def test_iat_half_a_second_in_the_future_is_accepted(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """The Sandbox rounds iat to the nearest second, so it can be up to 0.5 s ahead of us."""
    token = es_key.sign(claims(iat=NOW + 0.5, exp=NOW + 300.5))

    identity = await verifier.verify(token, audience=AUDIENCE)

    assert identity.alg == "ES384"


async def test_exp_within_leeway_is_accepted(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """A token that expired 3 s ago passes with the default 5 s leeway for clock skew."""
    token = es_key.sign(claims(iat=NOW - 303, exp=NOW - 3))

    identity = await verifier.verify(token, audience=AUDIENCE)

    assert identity.expires_at.timestamp() == NOW - 3


# --- refused claims --------------------------------------------------------------------------


async def test_expired_token_is_refused(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """exp more than the leeway in the past is refused."""
    token = es_key.sign(claims(iat=NOW - 310, exp=NOW - 10))

    with pytest.raises(ExpiredTokenError) as raised:
        await verifier.verify(token, audience=AUDIENCE)

    assert raised.value.reason == "expired"


@pytest.mark.parametrize(
    "aud",
    [
        "https://cds.example.org/cds-services/other-service",
        "https://cds.example.org/cds-services/calf-pain/",
        "http://cds.example.org/cds-services/calf-pain",
        "https://cds.example.org/cds-services",
        ["https://cds.example.org/cds-services"],
    ],
)
async def test_wrong_audience_is_refused(verifier: JwtVerifier, es_key: SigningKey, aud: object) -> None:
    """aud must be exactly this endpoint's URL: no prefix, trailing slash or scheme change."""
    with pytest.raises(AudienceError):
        await verifier.verify(es_key.sign(claims(aud=aud)), audience=AUDIENCE)


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "aud", "iss"])
async def test_missing_required_claim_is_refused(
    verifier: JwtVerifier, es_key: SigningKey, claim: str
) -> None:
    """iss, aud, exp, iat and jti are REQUIRED by CDS Hooks."""
    token = es_key.sign(claims(**{claim: ABSENT}))

    with pytest.raises(MissingClaimError) as raised:
        await verifier.verify(token, audience=AUDIENCE)

    assert raised.value.claim == claim


async def test_iat_a_minute_in_the_future_is_refused(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """A token issued 60 s from now comes from a wrong clock (or a pre-minted token)."""
    token = es_key.sign(claims(iat=NOW + 60, exp=NOW + 360))

    with pytest.raises(IssuedInFutureError):
        await verifier.verify(token, audience=AUDIENCE)


async def test_nbf_in_the_future_is_refused(verifier: JwtVerifier, rs_key: SigningKey) -> None:
    """nbf is honoured when present."""
    token = rs_key.sign(claims(nbf=NOW + 60))

    with pytest.raises(NotYetValidError):
        await verifier.verify(token, audience=AUDIENCE)


async def test_lifetime_over_an_hour_is_refused(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """A token valid for longer than max_lifetime_seconds (1 h) is refused even if unexpired."""
    token = es_key.sign(claims(exp=NOW + 3601))

    with pytest.raises(LifetimeTooLongError):
        await verifier.verify(token, audience=AUDIENCE)


@pytest.mark.parametrize("exp", [float("inf"), True, "1750000300"], ids=["inf", "bool", "str"])
async def test_non_numeric_exp_is_refused(verifier: JwtVerifier, es_key: SigningKey, exp: object) -> None:
    """exp must be a finite number (JSON Infinity, booleans and strings are not)."""
    with pytest.raises(MalformedTokenError):
        await verifier.verify(es_key.sign(claims(exp=exp)), audience=AUDIENCE)


async def test_replayed_jti_is_refused(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """The same token twice: the first is accepted, the second refused as a replay."""
    token = es_key.sign(claims())
    await verifier.verify(token, audience=AUDIENCE)

    with pytest.raises(ReplayedTokenError):
        await verifier.verify(token, audience=AUDIENCE)


async def test_refused_token_does_not_use_up_its_jti(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """A token refused for its audience leaves its jti free for the genuine request."""
    token_claims = claims()
    with pytest.raises(AudienceError):
        await verifier.verify(es_key.sign({**token_claims, "aud": "https://x.example/"}), audience=AUDIENCE)

    identity = await verifier.verify(es_key.sign(token_claims), audience=AUDIENCE)

    assert identity.jti == token_claims["jti"]


@pytest.mark.parametrize("tenant", ["another-tenant", ABSENT], ids=["other", "missing"])
async def test_tenant_not_on_allowlist_is_refused(
    make_verifier: MakeVerifier, es_key: SigningKey, tenant: object
) -> None:
    """When an issuer lists tenants, the token's tenant must be one of them."""
    verifier = make_verifier(TrustedIssuer(iss=ISSUER, jwks=jwks(es_key), tenants=(TENANT,)))

    with pytest.raises(TenantNotAllowedError):
        await verifier.verify(es_key.sign(claims(tenant=tenant)), audience=AUDIENCE)


# --- refused headers, keys and signatures ------------------------------------------------------


async def test_unknown_issuer_is_refused(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """A well-signed token from an issuer we do not trust is refused."""
    token = es_key.sign(claims(iss="https://evil.example.org/"))

    with pytest.raises(UnknownIssuerError):
        await verifier.verify(token, audience=AUDIENCE)


async def test_unknown_kid_is_refused(verifier: JwtVerifier) -> None:
    """A key the issuer never published is refused before any signature check."""
    stranger = SigningKey.es384(kid="not-published")

    with pytest.raises(UnknownKeyIdError):
        await verifier.verify(stranger.sign(claims()), audience=AUDIENCE)


async def test_alg_none_is_refused(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """Unsecured JWTs SHALL NOT be used (CDS Hooks)."""
    token = unsigned_token(claims(), kid=es_key.kid)

    with pytest.raises(AlgorithmNotAllowedError):
        await verifier.verify(token, audience=AUDIENCE)


async def test_hs256_with_public_key_as_secret_is_refused(verifier: JwtVerifier, rs_key: SigningKey) -> None:
    """The key-confusion attack: HMAC over the token with the client's public key PEM."""
    token = hmac_token(claims(), rs_key.public_pem(), kid=rs_key.kid)

    with pytest.raises(AlgorithmNotAllowedError):
        await verifier.verify(token, audience=AUDIENCE)


@pytest.mark.parametrize("algorithms", [("ES384", "HS256"), ("none",), ()])
def test_verifier_refuses_symmetric_or_no_algorithms(es_key: SigningKey, algorithms: tuple[str, ...]) -> None:
    """HS* and none cannot even be configured."""
    with pytest.raises(ValueError, match="refused"):
        JwtVerifier(
            [TrustedIssuer(iss=ISSUER, jwks=jwks(es_key))],
            key_store=KeyStore(httpx.AsyncClient(), clock=time.time),
            replay_cache=MemoryReplayCache(clock=time.time),
            clock=FakeClock(),
            algorithms=algorithms,
        )


async def test_alg_not_matching_the_key_is_refused(
    verifier: JwtVerifier, es_key: SigningKey, rs_key: SigningKey
) -> None:
    """An RS384 header naming an EC key's kid is refused (no cross-type key use)."""
    token = rs_key.with_kid(es_key.kid).sign(claims())

    with pytest.raises(AlgorithmNotAllowedError):
        await verifier.verify(token, audience=AUDIENCE)


@pytest.mark.parametrize("typ", [ABSENT, "JOSE", "at+jwt"], ids=["missing", "JOSE", "at+jwt"])
async def test_typ_other_than_jwt_is_refused(verifier: JwtVerifier, es_key: SigningKey, typ: object) -> None:
    """typ is REQUIRED with the fixed value JWT."""
    with pytest.raises(TokenTypeError):
        await verifier.verify(es_key.sign(claims(), typ=typ), audience=AUDIENCE)


async def test_missing_kid_is_refused(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """kid is REQUIRED: we never try keys one by one."""
    with pytest.raises(MalformedTokenError):
        await verifier.verify(es_key.sign(claims(), kid=ABSENT), audience=AUDIENCE)


async def test_crit_header_is_refused(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """Critical header extensions (such as an unencoded payload) are not part of CDS Hooks."""
    with pytest.raises(MalformedTokenError):
        await verifier.verify(es_key.sign(claims(), crit=["exp"]), audience=AUDIENCE)


async def test_tampered_payload_is_refused(verifier: JwtVerifier, es_key: SigningKey) -> None:
    """A payload changed after signing (here: the tenant) fails the signature check."""
    header, _, signature = es_key.sign(claims(tenant=TENANT)).split(".")
    forged = f"{header}.{b64url_json(claims(tenant='someone-else'))}.{signature}"

    with pytest.raises(BadSignatureError):
        await verifier.verify(forged, audience=AUDIENCE)


@settings(max_examples=200, deadline=None)
@given(token=st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*"))
def test_garbage_only_ever_raises_authentication_errors(token: str) -> None:
    """Whatever a client sends as a token, verification fails with an AuthenticationError."""
    key = SigningKey.es384()
    verifier = JwtVerifier(
        [TrustedIssuer(iss=ISSUER, jwks=jwks(key))],
        key_store=KeyStore(httpx.AsyncClient(), clock=time.time),
        replay_cache=MemoryReplayCache(clock=time.time),
        clock=FakeClock(),
    )

    with pytest.raises(AuthenticationError):
        anyio.run(lambda: verifier.verify(token, audience=AUDIENCE))


# --- JWK Sets: jku, URLs, rotation ---------------------------------------------------------------


async def test_untrusted_jku_is_refused_without_fetching(
    verifier: JwtVerifier, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """A jku not on the issuer's allowlist is refused, and never fetched."""
    token = es_key.sign(claims(), jku="https://attacker.example/jwks.json")

    with pytest.raises(JkuNotAllowedError):
        await verifier.verify(token, audience=AUDIENCE)

    assert not respx_mock.calls


async def test_allowlisted_jku_is_fetched_and_accepted(
    make_verifier: MakeVerifier, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """A jku on the allowlist is fetched, and its keys verify the token."""
    jku = "https://ehr.example.org/jku/jwks.json"
    route = respx_mock.get(jku).mock(return_value=httpx.Response(200, json=jwks(es_key)))
    other_key = SigningKey.es384(kid="out-of-band")
    verifier = make_verifier(TrustedIssuer(iss=ISSUER, jwks=jwks(other_key), jku_allowlist=(jku,)))

    identity = await verifier.verify(es_key.sign(claims(), jku=jku), audience=AUDIENCE)

    assert identity.kid == es_key.kid
    assert route.call_count == 1


async def test_pinned_keys_win_over_an_allowlisted_jku(
    make_verifier: MakeVerifier, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """Inline keys that hold the token's kid verify it; the allowlisted jku is never fetched
    (an offline deployment accepts the CDS Hooks Sandbox, whose jku is on the internet)."""
    jku = "https://sandbox.example.org/.well-known/jwks.json"
    route = respx_mock.get(jku).mock(return_value=httpx.Response(503))
    verifier = make_verifier(TrustedIssuer(iss=ISSUER, jwks=jwks(es_key), jku_allowlist=(jku,)))

    identity = await verifier.verify(es_key.sign(claims(), jku=jku), audience=AUDIENCE)

    assert identity.kid == es_key.kid
    assert route.call_count == 0


async def test_pinned_key_file_wins_over_an_allowlisted_jku(
    tmp_path: Path, make_verifier: MakeVerifier, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """The same with a `jwks_file`: the file holds the kid, so the jku is not fetched."""
    jku = "https://sandbox.example.org/.well-known/jwks.json"
    route = respx_mock.get(jku).mock(return_value=httpx.Response(503))
    (tmp_path / "sandbox.jwks.json").write_text(json.dumps(jwks(es_key)))
    issuer = TrustedIssuer(iss=ISSUER, jwks_file=tmp_path / "sandbox.jwks.json", jku_allowlist=(jku,))
    verifier = make_verifier(issuer)

    identity = await verifier.verify(es_key.sign(claims(), jku=jku), audience=AUDIENCE)

    assert identity.kid == es_key.kid
    assert route.call_count == 0


async def test_pinned_keys_do_not_make_an_unlisted_jku_acceptable(
    make_verifier: MakeVerifier, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """Pinned keys holding the kid do not excuse a jku that is not allowlisted."""
    verifier = make_verifier(TrustedIssuer(iss=ISSUER, jwks=jwks(es_key)))
    token = es_key.sign(claims(), jku="https://attacker.example/jwks.json")

    with pytest.raises(JkuNotAllowedError):
        await verifier.verify(token, audience=AUDIENCE)
    assert not respx_mock.calls


async def test_rotated_key_is_picked_up_after_refresh(
    make_verifier: MakeVerifier, clock: FakeClock, respx_mock: respx.MockRouter
) -> None:
    """A new kid at the JWKS URL is found once the minimum refresh interval has passed."""
    old_key, new_key = SigningKey.es384(kid="2025-01"), SigningKey.es384(kid="2025-07")
    published = {"jwks": jwks(old_key)}
    route = respx_mock.get(JWKS_URL).mock(
        side_effect=lambda request: httpx.Response(200, json=published["jwks"])
    )
    verifier = make_verifier(TrustedIssuer(iss=ISSUER, jwks_url=JWKS_URL))
    await verifier.verify(old_key.sign(claims(clock.now)), audience=AUDIENCE)
    published["jwks"] = jwks(old_key, new_key)
    clock.advance(31)

    identity = await verifier.verify(new_key.sign(claims(clock.now)), audience=AUDIENCE)

    assert identity.kid == "2025-07"
    assert route.call_count == 2


async def test_flood_of_unknown_kids_fetches_at_most_once_per_interval(
    make_verifier: MakeVerifier, clock: FakeClock, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """Made-up kids, concurrent and sequential, cause one JWKS fetch per 30 s, not one each."""
    route = respx_mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=jwks(es_key)))
    verifier = make_verifier(TrustedIssuer(iss=ISSUER, jwks_url=JWKS_URL))
    await verifier.verify(es_key.sign(claims(clock.now)), audience=AUDIENCE)  # fetch 1
    clock.advance(31)
    refused: list[str] = []

    async def attempt(number: int) -> None:
        token = es_key.with_kid(f"made-up-{number}").sign(claims(clock.now))
        try:
            await verifier.verify(token, audience=AUDIENCE)
        except UnknownKeyIdError as exc:
            refused.append(exc.reason)

    async with anyio.create_task_group() as flood:
        for number in range(100):
            flood.start_soon(attempt, number)  # fetch 2, shared by all
    for number in range(100, 129):
        clock.advance(1)
        await attempt(number)

    assert len(refused) == 129
    assert route.call_count == 2


async def test_unusable_keys_in_a_fetched_jwks_are_skipped(
    make_verifier: MakeVerifier, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """Broken, private or encryption keys in a client's JWK Set do not spoil its good keys."""
    served = jwks(es_key)
    served["keys"][:0] = [
        {"kty": "RSA", "kid": "broken", "n": None, "e": "AQAB"},
        {**es_key.with_kid("private").public_jwk(), "d": "AAAA"},
        {**es_key.with_kid("for-encryption").public_jwk(), "use": "enc"},
        "not a key",
    ]
    respx_mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=served))
    verifier = make_verifier(TrustedIssuer(iss=ISSUER, jwks_url=JWKS_URL))

    identity = await verifier.verify(es_key.sign(claims()), audience=AUDIENCE)

    assert identity.kid == es_key.kid


async def test_unreachable_jwks_url_is_refused_as_unavailable(
    make_verifier: MakeVerifier, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """If the issuer's JWK Set cannot be fetched (and none is cached), tokens are refused."""
    respx_mock.get(JWKS_URL).mock(return_value=httpx.Response(503))
    verifier = make_verifier(TrustedIssuer(iss=ISSUER, jwks_url=JWKS_URL))

    with pytest.raises(JwksUnavailableError):
        await verifier.verify(es_key.sign(claims()), audience=AUDIENCE)


async def test_cached_keys_serve_while_the_jwks_url_is_down(
    make_verifier: MakeVerifier, clock: FakeClock, es_key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    """After the TTL, a failed reload keeps the previous keys (until max_stale_seconds)."""
    route = respx_mock.get(JWKS_URL)
    route.side_effect = [httpx.Response(200, json=jwks(es_key)), httpx.ConnectError("down")]
    verifier = make_verifier(TrustedIssuer(iss=ISSUER, jwks_url=JWKS_URL))
    await verifier.verify(es_key.sign(claims(clock.now)), audience=AUDIENCE)
    clock.advance(301)

    identity = await verifier.verify(es_key.sign(claims(clock.now)), audience=AUDIENCE)

    assert identity.kid == es_key.kid
    assert route.call_count == 2


# --- configuration and the spec's own example ------------------------------------------------------


async def test_spec_example_jwks_loads_as_trusted_issuer(http_client: httpx.AsyncClient) -> None:
    """The CDS Hooks spec's example JWK Set is accepted inline and yields its ES384 key."""
    spec_jwks = json.loads((DATA / "24-jwks-public.json").read_text())
    issuer = TrustedIssuer(iss="https://fhir-ehr.example.com/", jwks=spec_jwks)

    key = await KeyStore(http_client, clock=time.time).get_key(issuer, "example-kid")

    assert key_fits(key, "ES384")
    assert not key_fits(key, "RS384")


async def test_spec_example_token_verifies_through_its_jku(
    make_verifier: MakeVerifier, clock: FakeClock, respx_mock: respx.MockRouter
) -> None:
    """The spec's example token verifies with the spec's JWK Set served at its (allowlisted) jku."""
    jku = "https://fhir-ehr.example.com/jwk_uri"
    spec_jwks = json.loads((DATA / "24-jwks-public.json").read_text())
    respx_mock.get(jku).mock(return_value=httpx.Response(200, json=spec_jwks))
    verifier = make_verifier(
        TrustedIssuer(iss="https://fhir-ehr.example.com/", jwks_url=jku, jku_allowlist=(jku,)),
        max_lifetime_seconds=None,  # the example token is valid for three and a half years
    )
    clock.now = 1311280970 + 60

    identity = await verifier.verify(
        (DATA / "spec-example-token.jwt").read_text().strip(),
        audience="https://cds.example.org/cds-services/some-service",
    )

    assert (identity.kid, identity.tenant) == ("example-kid", TENANT)


async def test_trusted_issuers_file_is_loaded(
    tmp_path: Path, make_verifier: MakeVerifier, es_key: SigningKey
) -> None:
    """The JSON issuer file resolves jwks_file relative to itself; its keys verify tokens."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ehr.jwks.json").write_text(json.dumps(jwks(es_key)))
    config = {"issuers": [{"iss": ISSUER, "jwks_file": "keys/ehr.jwks.json", "tenants": [TENANT]}]}
    (tmp_path / "issuers.json").write_text(json.dumps(config))

    issuers = load_trusted_issuers(tmp_path / "issuers.json")
    identity = await make_verifier(*issuers).verify(es_key.sign(claims(tenant=TENANT)), audience=AUDIENCE)

    assert issuers[0].tenants == (TENANT,)
    assert identity.tenant == TENANT


@pytest.mark.parametrize(
    "entry",
    [
        {"iss": ISSUER},
        {"iss": ISSUER, "jwks_url": JWKS_URL, "jwks_file": "k.json"},
        {"iss": ISSUER, "jwks_url": "http://ehr.example.org/jwks.json"},
        {"iss": ISSUER, "jwks_url": JWKS_URL, "jku_allowlist": ["ftp://ehr.example.org/k"]},
        {"iss": ISSUER, "jwks_url": JWKS_URL, "tenants": []},
        {"iss": ISSUER, "jwks": {"keys": [{"kty": "EC", "kid": "no-coordinates"}]}},
        {"iss": ISSUER, "jwks_url": JWKS_URL, "jwk_url": JWKS_URL},
    ],
    ids=["no-keys", "two-sources", "http", "bad-jku", "empty-tenants", "bad-jwk", "typo"],
)
def test_bad_issuer_configuration_fails_at_load(entry: dict[str, object]) -> None:
    """A mistake in the trusted-issuer configuration is an error at startup, not at a request."""
    with pytest.raises(pydantic.ValidationError):
        TrustedIssuer.model_validate(entry)


def test_private_key_material_in_configuration_is_refused() -> None:
    """An inline JWK Set carrying a private key (d) is refused: configure public keys only."""
    private_jwk = {
        "kty": "EC", "crv": "P-384", "kid": "example-kid", "alg": "ES384",
        "x": "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk",
        "y": "XMcRuuoGW7CXjQdy-F5i3FeBE0x9hPLdeFdSoDd3ELmx404tLX0VRRcqzAsPhXcI",
        "d": "SeFXUXda8UomZ8GFUl7HH_Oi15rIbfMcsWj9ecIsDR8kLbqsEz2CGNgwy_IcILxy",
    }  # fmt: skip

    with pytest.raises(pydantic.ValidationError, match="private key material"):
        TrustedIssuer(iss=ISSUER, jwks={"keys": [private_jwk]})


# --- replay caches -------------------------------------------------------------------------------


async def test_sql_replay_cache_detects_replay_across_replicas(
    tmp_path: Path, make_verifier: MakeVerifier, es_key: SigningKey, clock: FakeClock
) -> None:
    """Two replicas (own engines, one database): a token used at one is refused at the other."""
    url = f"sqlite:///{tmp_path / 'calf-cds.db'}"
    engines = [sa.create_engine(url), sa.create_engine(url)]
    auth_metadata.create_all(engines[0])
    issuer = TrustedIssuer(iss=ISSUER, jwks=jwks(es_key))
    replica_a, replica_b = (
        make_verifier(issuer, replay_cache=SqlReplayCache(engine, clock=clock)) for engine in engines
    )
    token = es_key.sign(claims())
    try:
        await replica_a.verify(token, audience=AUDIENCE)

        with pytest.raises(ReplayedTokenError):
            await replica_b.verify(token, audience=AUDIENCE)
    finally:
        for engine in engines:
            engine.dispose()


async def test_sql_replay_cache_prunes_and_reuses_expired_entries(tmp_path: Path, clock: FakeClock) -> None:
    """Rows of expired tokens are deleted, so the table only holds live jtis."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'replay.db'}")
    auth_metadata.create_all(engine)
    cache = SqlReplayCache(engine, clock=clock, prune_interval_seconds=60)
    try:
        assert await cache.check_and_store(ISSUER, "jti-1", expires_at=NOW + 10)
        assert not await cache.check_and_store(ISSUER, "jti-1", expires_at=NOW + 10)
        clock.advance(61)
        cache.wait_pruned()  # pruning runs on a thread of its own, off the calls' path
        assert await cache.check_and_store(ISSUER, "jti-2", expires_at=clock.now + 10)
        cache.wait_pruned()
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT jti FROM jwt_replay")).scalars().all()
    finally:
        engine.dispose()

    assert rows == ["jti-2"]


async def test_sql_replay_store_failure_is_an_outage_not_a_refusal(tmp_path: Path, clock: FakeClock) -> None:
    """A broken replay store raises ReplayCacheUnavailableError (503), not an AuthenticationError."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-tables.db'}")
    cache = SqlReplayCache(engine, clock=clock)
    try:
        with pytest.raises(ReplayCacheUnavailableError):
            await cache.check_and_store(ISSUER, "jti-1", expires_at=NOW + 10)
    finally:
        engine.dispose()


async def test_memory_replay_cache_prunes_expired_entries(clock: FakeClock) -> None:
    """The in-process cache forgets jtis once their tokens have expired."""
    cache = MemoryReplayCache(clock=clock, prune_interval_seconds=60)
    assert await cache.check_and_store(ISSUER, "jti-1", expires_at=NOW + 10)
    assert not await cache.check_and_store(ISSUER, "jti-1", expires_at=NOW + 10)
    clock.advance(61)

    assert await cache.check_and_store(ISSUER, "jti-2", expires_at=clock.now + 10)
    assert len(cache) == 1
