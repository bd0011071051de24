"""The JWT verifier reads a token once and checks its signature with `cryptography` directly: same verdicts as PyJWT.

Before, `JwtVerifier` parsed each token three times with PyJWT (header, unverified claims, then
signature and claims). `PyJwtVerifier` below is that implementation, kept verbatim as the oracle:
for valid tokens and for tokens mangled in every part (header members, claims, signature, the
base64url segments themselves), both must accept with the same identity or refuse with the same
`AuthenticationError` leaf (and the same missing claim).
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.auth.caches import KeyStore, MemoryReplayCache
from service.auth.errors import (
    AlgorithmNotAllowedError,
    AudienceError,
    AuthenticationError,
    BadSignatureError,
    MalformedTokenError,
    MissingClaimError,
)
from service.auth.jwks import PublicKey, TrustedIssuer
from service.auth.verifier import MAX_TOKEN_LENGTH, ClientIdentity, JwtVerifier
from service.config import SUPPORTED_ALGORITHMS
from service.store.schema import MAX_JTI_LENGTH
from tests.service.jwt_factory import (
    ABSENT,
    AUDIENCE,
    ISSUER,
    NOW,
    FakeClock,
    SigningKey,
    b64url,
    b64url_json,
    jwks,
)

TENANT = "tenant-a"


class PyJwtVerifier(JwtVerifier):
    """The verifier as it was (main before the speed work): PyJWT, three parses of each token, for
    the header, the unverified issuer and the signed claims."""

    async def verify(self, token: str, *, audience: str) -> ClientIdentity:
        """The identity a valid token proves; raises an `AuthenticationError` leaf otherwise.

        `audience` is the exact public URL of the endpoint being called (e.g.
        `https://cds.example.org/cds-services/calf-pain`); `aud` must equal it or be a list
        containing it.
        """
        header = self._pyjwt_header(token)
        alg, kid, jku = header["alg"], header["kid"], header.get("jku")
        issuer, key = await self._issuer_key(self._pyjwt_unverified_issuer(token), alg, kid, jku)
        claims = self._pyjwt_decode(token, key.public_key, issuer, audience, kid=kid)
        # Reading and signature are PyJWT's; what the claims prove is checked as the verifier does
        # (that part did not change with the speed work).
        return await self._accept(claims, issuer, alg=alg, kid=kid)

    def _pyjwt_header(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
            raise MalformedTokenError("not a compact JWS of reasonable size")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise MalformedTokenError(f"unreadable header: {exc}") from None
        self._check_header(header)
        return header

    @staticmethod
    def _pyjwt_unverified_issuer(token: str) -> str:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise MalformedTokenError(f"unreadable payload: {exc}") from None
        return JwtVerifier._issuer_in(claims)

    def _pyjwt_decode(
        self, token: str, key: PublicKey, issuer: TrustedIssuer, audience: str, *, kid: str
    ) -> dict[str, Any]:
        iss = issuer.iss
        try:
            return jwt.decode(
                token,
                key,
                algorithms=list(self._algorithms),
                audience=audience,
                issuer=iss,
                options={
                    "verify_signature": True,
                    "require": ["exp", "iat", "iss", "aud", "jti"],
                    "verify_aud": True,
                    "strict_aud": False,
                    "verify_iss": True,
                    "verify_sub": True,
                    "verify_jti": True,
                    # `verify` checks times against the injected clock, not pyjwt's wall clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise BadSignatureError("signature does not verify", iss=iss, kid=kid) from None
        except jwt.MissingRequiredClaimError as exc:
            raise MissingClaimError(exc.claim, iss=iss, kid=kid) from None
        except jwt.InvalidAudienceError:
            raise AudienceError("aud does not name this endpoint", iss=iss, kid=kid) from None
        except (jwt.InvalidAlgorithmError, jwt.InvalidKeyError) as exc:
            raise AlgorithmNotAllowedError(str(exc), iss=iss, kid=kid) from None
        except jwt.PyJWTError as exc:
            raise MalformedTokenError(f"{type(exc).__name__}: {exc}", iss=iss, kid=kid) from None


KEYS = [
    SigningKey("es256", "ES256", ec.generate_private_key(ec.SECP256R1())),
    SigningKey.es384("es384"),
    SigningKey("es512", "ES512", ec.generate_private_key(ec.SECP521R1())),
    SigningKey.rs384("rs384"),
    SigningKey("ps256", "PS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
]
IMPOSTOR = SigningKey.es384("es384")  # another key pair published nowhere, under a trusted kid
OTHER_ISSUER = "https://other-ehr.example.org/"


def _verifiers() -> tuple[JwtVerifier, JwtVerifier]:
    issuers = [
        TrustedIssuer(iss=ISSUER, jwks=jwks(*KEYS)),
        TrustedIssuer(iss=OTHER_ISSUER, jwks=jwks(KEYS[1]), tenants=(TENANT,)),
    ]
    made = []
    for kind in (JwtVerifier, PyJwtVerifier):
        clock = FakeClock()
        made.append(
            kind(
                issuers,
                key_store=KeyStore(httpx.AsyncClient(), clock=clock),
                replay_cache=MemoryReplayCache(clock=clock),
                clock=clock,
                algorithms=sorted(SUPPORTED_ALGORITHMS),
            )
        )
    return made[0], made[1]


def _verdict(verifier: JwtVerifier, token: Any) -> tuple[Any, ...]:
    try:
        identity = anyio.run(lambda: verifier.verify(token, audience=AUDIENCE))
    except MissingClaimError as error:
        return ("MissingClaimError", error.claim)
    except AuthenticationError as error:
        return (type(error).__name__,)
    return ("accepted", identity)


def _both(token: Any) -> None:
    new, old = _verifiers()
    assert _verdict(new, token) == _verdict(old, token)


ANY_JSON = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
NUMBER = st.sampled_from([NOW, NOW + 60, NOW - 600, NOW + 3600 * 2, 0, -1, 10**30, 1e300]).map(
    lambda value: (
        int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 1e18 else value
    )
)
HEADER_VALUE = {
    "alg": st.sampled_from([*sorted(SUPPORTED_ALGORITHMS), "none", "HS256", "ES256K", "", "es384"])
    | ANY_JSON,
    "typ": st.sampled_from(["JWT", "jwt", "at+jwt", ""]) | ANY_JSON,
    "kid": st.sampled_from([key.kid for key in KEYS] + ["", "unknown"]) | ANY_JSON,
    "jku": st.sampled_from(["https://attacker.example/jwks.json"]) | ANY_JSON,
    "crit": st.sampled_from([["b64"], [], ["exp"]]) | ANY_JSON,
    "b64": st.booleans() | ANY_JSON,
}
CLAIM_VALUE = {
    "iss": st.sampled_from([ISSUER, OTHER_ISSUER, "https://unknown.example/"]) | ANY_JSON,
    "aud": st.sampled_from([AUDIENCE, [AUDIENCE], ["x", AUDIENCE], [], "", "https://else/", [AUDIENCE, 5]])
    | ANY_JSON,
    "exp": NUMBER | ANY_JSON,
    "iat": NUMBER | ANY_JSON,
    "nbf": NUMBER | ANY_JSON,
    "jti": st.sampled_from(["", "x" * (MAX_JTI_LENGTH + 1)]) | st.uuids().map(str) | ANY_JSON,
    "sub": st.sampled_from(["client"]) | ANY_JSON,
    "tenant": st.sampled_from([TENANT, "other-tenant"]) | ANY_JSON,
}


@st.composite
def tokens(draw: st.DrawFn) -> str:
    """A token signed by one of the trusted keys, then perhaps changed anywhere."""
    key = draw(st.sampled_from(KEYS))
    header: dict[str, Any] = {"alg": key.alg, "typ": "JWT", "kid": key.kid}
    payload: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "iat": int(NOW), "exp": int(NOW) + 300, "jti": str(uuid.uuid4()),
    }  # fmt: skip
    for members, values in ((header, HEADER_VALUE), (payload, CLAIM_VALUE)):
        for name in draw(st.lists(st.sampled_from(sorted(values)), max_size=2, unique=True)):
            value = draw(values[name] | st.just(ABSENT))
            if value is ABSENT:
                members.pop(name, None)
            else:
                members[name] = value
    signer = draw(st.sampled_from([key, key, key, IMPOSTOR if key.alg == "ES384" else key]))
    signing_input = f"{b64url_json(header)}.{b64url_json(payload)}"
    algorithm = jwt.get_algorithm_by_name(signer.alg)
    signature = b64url(algorithm.sign(signing_input.encode("ascii"), signer.private_key))
    segments = [*signing_input.split("."), signature]
    change = draw(st.sampled_from(["none"] * 6 + ["pad", "junk", "cut", "extra", "drop", "empty", "flip"]))
    index = draw(st.integers(0, 2))
    if change == "pad":
        segments[index] += draw(st.sampled_from(["=", "==", "===", "===="]))
    elif change == "junk":
        segments[index] += draw(st.sampled_from(["!", ".", "+", "/", " ", "é"]))
    elif change == "cut":
        segments[index] = segments[index][: draw(st.integers(0, max(0, len(segments[index]) - 1)))]
    elif change == "extra":
        segments.insert(index, draw(st.sampled_from(["", "e30", "x"])))
    elif change == "drop":
        del segments[index]
    elif change == "empty":
        segments[index] = ""
    elif change == "flip":  # the last character: non-canonical spare bits, or another byte
        segment = segments[index] or "A"
        segments[index] = segment[:-1] + draw(st.sampled_from("AQgw_-B"))
    return ".".join(segments)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=tokens())
def test_mangled_tokens_get_the_verdict_pyjwt_gave(token: str) -> None:
    """Valid or mangled anywhere, a token is accepted or refused exactly as with PyJWT."""
    _both(token)


@settings(max_examples=200, deadline=None)
@given(token=st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_\-=]*\.[A-Za-z0-9_\-=.]*\.[A-Za-z0-9_\-=]*"))
def test_garbage_gets_the_verdict_pyjwt_gave(token: str) -> None:
    """Random text, or three random base64url-ish segments: the same refusal as with PyJWT."""
    _both(token)


@pytest.mark.parametrize("key", KEYS, ids=[key.alg for key in KEYS])
def test_every_algorithm_accepts_a_valid_token(key: SigningKey) -> None:
    """ES256, ES384, ES512, RS384 and PS256 tokens from the trusted keys verify, as with PyJWT."""
    token = key.sign({"iss": ISSUER, "aud": AUDIENCE, "iat": int(NOW), "exp": int(NOW) + 300, "jti": "j-1"})
    new, old = _verifiers()

    verdict = _verdict(new, token)

    assert verdict[0] == "accepted"
    assert verdict == _verdict(old, token)
    assert _verdict(new, token) == ("ReplayedTokenError",)


def test_a_token_signed_by_another_key_under_a_trusted_kid_is_a_bad_signature() -> None:
    """An impostor's key under a trusted kid: BadSignatureError, as with PyJWT."""
    token = IMPOSTOR.sign(
        {"iss": ISSUER, "aud": AUDIENCE, "iat": int(NOW), "exp": int(NOW) + 300, "jti": "j"}
    )
    new, old = _verifiers()

    assert _verdict(new, token) == _verdict(old, token) == ("BadSignatureError",)
