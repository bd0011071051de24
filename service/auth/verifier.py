"""Verify the JWT a CDS Client sends as `Authorization: Bearer <jwt>`.

CDS Hooks 2.0 "Trusting CDS Clients": the token is a JWS signed with the client's private key. Its
header carries `alg`, `kid` and `typ` ("JWT"), all REQUIRED, and an OPTIONAL `jku`; its payload
carries `iss`, `aud` (the URL of the endpoint being called), `exp`, `iat` and `jti`, all REQUIRED,
and an OPTIONAL `tenant`. `none` and symmetric (HMAC) algorithms SHALL NOT be used; ES384 and RS384
are RECOMMENDED.

`JwtVerifier.verify` checks, in this order, and stops at the first failure: header shape -> `alg`
on the allowlist -> `typ` JWT -> `kid` present -> `iss` trusted (read unverified, only to choose
the issuer) -> `jku` allowlisted -> key found -> key fits `alg` -> signature, required claims and
`aud` -> `exp`, `nbf`, `iat` and lifetime against the injected clock -> `tenant` -> `jti` not seen
before (stored last, so only fully valid tokens use up a `jti`).

`ClientAuthenticator` puts the verifier in front of an endpoint: the exact URL called is the
`aud` it expects, and no token at all is a `MissingTokenError`. What it proves is a
`ClientIdentity`; `client_record` is what the audit trail keeps of it (never the token).

Each failure is an `AuthenticationError` leaf (the tree is in :mod:`service.auth.errors`). Messages
never contain the token; values read from an unverified token are cut short.

The token is read once (`_CompactJws.parse`: its three base64url segments, strictly, and the
header's JSON; the claims' JSON when the issuer is needed) and its signature checked with
`cryptography` directly, on the public key object the `KeyStore` parsed once per JWK Set. The
rules are PyJWT's (2.x), which this module used before, and a test compares the two on valid and
mangled tokens: segments split at the last dot and the first; a segment is base64url without
padding (or with the exact padding), canonical; header and claims are JSON objects; a `kid` is a
string; ES* signatures are the raw r‖s of the curve's size, RS* PKCS #1 v1.5, PS* PSS with the
hash's length of salt; the required claims (`exp`, `iat`, `iss`, `aud`, `jti`) are checked after
the signature, then `aud`, `sub` (a string) and `jti` (a string).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from service.auth.caches import KeyStore, ReplayCache
from service.auth.errors import (
    AlgorithmNotAllowedError,
    AudienceError,
    BadSignatureError,
    ExpiredTokenError,
    IssuedInFutureError,
    LifetimeTooLongError,
    MalformedTokenError,
    MissingClaimError,
    MissingTokenError,
    NotYetValidError,
    ReplayedTokenError,
    TenantNotAllowedError,
    TokenTypeError,
    UnknownIssuerError,
)
from service.auth.jwks import PublicKey, TrustedIssuer, VerificationKey
from service.config import SUPPORTED_ALGORITHMS
from service.store.schema import MAX_JTI_LENGTH

__all__ = [
    "MAX_TOKEN_LENGTH",
    "ClientAuthenticator",
    "ClientIdentity",
    "JwtVerifier",
    "client_record",
    "key_fits",
]

MAX_TOKEN_LENGTH = 16 * 1024


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who called: the verified claims of an accepted token (safe to log; the token is not)."""

    iss: str
    sub: str | None
    tenant: str | None
    jti: str
    kid: str
    alg: str
    expires_at: datetime


def client_record(identity: ClientIdentity) -> dict[str, str]:
    """What the audit trail keeps of the caller: never the token."""
    record = {"iss": identity.iss, "jti": identity.jti, "kid": identity.kid}
    if identity.sub is not None:
        record["sub"] = identity.sub
    if identity.tenant is not None:
        record["tenant"] = identity.tenant
    return record


def _shown(value: object) -> str:
    """A value from an unverified token, safe to put in a log line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class JwtVerifier:
    """Verifies CDS Hooks client JWTs against a set of trusted issuers."""

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        *,
        key_store: KeyStore,
        replay_cache: ReplayCache,
        clock: Callable[[], float],
        leeway_seconds: float = 5.0,
        algorithms: Iterable[str] = ("ES384", "RS384"),
        max_lifetime_seconds: float | None = 3600.0,
    ) -> None:
        self._algorithms = tuple(algorithms)
        refused = sorted(set(self._algorithms) - SUPPORTED_ALGORITHMS)
        if refused or not self._algorithms:
            raise ValueError(
                f"algorithms {refused or '(none)'} refused: only asymmetric signatures "
                f"{sorted(SUPPORTED_ALGORITHMS)}; CDS Hooks forbids 'none' and HMAC (HS*)"
            )
        if not 0 <= leeway_seconds <= 300:
            raise ValueError("leeway_seconds must be between 0 and 300")
        if max_lifetime_seconds is not None and max_lifetime_seconds <= 0:
            raise ValueError("max_lifetime_seconds must be positive (or None for no limit)")
        self._issuers: dict[str, TrustedIssuer] = {}
        for issuer in issuers:
            if issuer.iss in self._issuers:
                raise ValueError(f"issuer {issuer.iss!r} is configured twice")
            self._issuers[issuer.iss] = issuer
        self._key_store = key_store
        self._replay_cache = replay_cache
        self._clock = clock
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds

    async def verify(self, token: str, *, audience: str) -> ClientIdentity:
        """The identity a valid token proves; raises an `AuthenticationError` leaf otherwise.

        `audience` is the exact public URL of the endpoint being called (e.g.
        `https://cds.example.org/cds-services/calf-pain`); `aud` must equal it or be a list
        containing it.
        """
        jws = self._header(token)
        alg, kid, jku = jws.header["alg"], jws.header["kid"], jws.header.get("jku")
        issuer, key = await self._issuer_key(self._unverified_issuer(jws), alg, kid, jku)
        claims = self._decode(jws, key.public_key, issuer, audience, kid=kid)
        return await self._accept(claims, issuer, alg=alg, kid=kid)

    async def _issuer_key(
        self, iss: str, alg: str, kid: str, jku: str | None
    ) -> tuple[TrustedIssuer, VerificationKey]:
        """The trusted issuer ``iss`` and its key ``kid``, which must fit ``alg``."""
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise UnknownIssuerError(f"issuer {_shown(iss)} is not trusted", kid=kid)
        key = await self._key_store.get_key(issuer, kid, jku)
        if not key_fits(key, alg):
            raise AlgorithmNotAllowedError(f"alg {alg} does not fit the key", iss=iss, kid=kid)
        return issuer, key

    async def _accept(
        self, claims: dict[str, Any], issuer: TrustedIssuer, *, alg: str, kid: str
    ) -> ClientIdentity:
        """The identity that signature-checked ``claims`` prove: times, ``jti``, tenant, then the
        replay check (last, so that only fully valid tokens use up a ``jti``)."""
        iss = issuer.iss

        def numeric(name: str) -> float:
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise MalformedTokenError(f"claim {name!r} is not a number", iss=iss, kid=kid)
            return float(value)

        now, leeway = self._clock(), self._leeway
        exp, iat = numeric("exp"), numeric("iat")
        nbf = numeric("nbf") if claims.get("nbf") is not None else None
        if now >= exp + leeway:
            raise ExpiredTokenError(f"expired {now - exp:.0f} s ago", iss=iss, kid=kid)
        if nbf is not None and nbf > now + leeway:
            raise NotYetValidError(f"not valid for another {nbf - now:.0f} s", iss=iss, kid=kid)
        if iat > now + leeway:
            raise IssuedInFutureError(f"issued {iat - now:.1f} s in the future", iss=iss, kid=kid)
        if self._max_lifetime is not None and exp - iat > self._max_lifetime:
            raise LifetimeTooLongError(f"lifetime {exp - iat:.0f} s", iss=iss, kid=kid)
        jti, sub, tenant = claims["jti"], claims.get("sub"), claims.get("tenant")
        if not jti or len(jti) > MAX_JTI_LENGTH:
            raise MalformedTokenError("jti is empty or too long", iss=iss, kid=kid)
        if tenant is not None and not isinstance(tenant, str):
            raise MalformedTokenError("tenant is not a string", iss=iss, kid=kid)
        if issuer.tenants is not None and tenant not in issuer.tenants:
            raise TenantNotAllowedError(f"tenant {_shown(tenant)} is not allowed", iss=iss, kid=kid)
        if not await self._replay_cache.check_and_store(iss, jti, exp + leeway):
            raise ReplayedTokenError(f"jti {_shown(jti)} was already used", iss=iss, kid=kid)
        return ClientIdentity(
            iss=iss,
            sub=sub,
            tenant=tenant,
            jti=jti,
            kid=kid,
            alg=alg,
            expires_at=datetime.fromtimestamp(exp, tz=UTC),
        )

    def _header(self, token: str) -> _CompactJws:
        jws = _CompactJws.parse(token)
        self._check_header(jws.header)
        return jws

    def _check_header(self, header: dict[str, Any]) -> None:
        """The header CDS Hooks requires: an allowed ``alg``, ``typ`` JWT, a ``kid``, no extensions."""
        if "crit" in header or "b64" in header:
            raise MalformedTokenError("header uses crit/b64 extensions, which CDS Hooks does not use")
        alg, kid, jku = header.get("alg"), header.get("kid"), header.get("jku")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AlgorithmNotAllowedError(f"alg {_shown(alg)} is not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise TokenTypeError(f"typ {_shown(typ)} is not JWT")
        if not isinstance(kid, str) or not kid:
            raise MalformedTokenError("header has no kid")
        if jku is not None and not isinstance(jku, str):
            raise MalformedTokenError("jku is not a string", kid=kid)

    @staticmethod
    def _unverified_issuer(jws: _CompactJws) -> str:
        return JwtVerifier._issuer_in(jws.claims())

    @staticmethod
    def _issuer_in(claims: dict[str, Any]) -> str:
        """The ``iss`` claim, read before the signature is checked (only to choose the issuer)."""
        iss = claims.get("iss")
        if iss is None:
            raise MissingClaimError("iss")
        if not isinstance(iss, str):
            raise MalformedTokenError("iss is not a string")
        return iss

    def _decode(
        self, jws: _CompactJws, key: PublicKey, issuer: TrustedIssuer, audience: str, *, kid: str
    ) -> dict[str, Any]:
        """The claims, once the signature verifies and the required claims, `aud`, `sub` and `jti` hold."""
        iss = issuer.iss
        alg = jws.header["alg"]
        if alg not in self._algorithms:  # checked by _header: kept next to the signature all the same
            raise AlgorithmNotAllowedError(f"alg {_shown(alg)} is not allowed", iss=iss, kid=kid)
        if not _signature_verifies(alg, key, jws.signing_input, jws.signature):
            raise BadSignatureError("signature does not verify", iss=iss, kid=kid)
        claims = jws.claims()
        for name in _REQUIRED_CLAIMS:
            if claims.get(name) is None:
                raise MissingClaimError(name, iss=iss, kid=kid)
        if claims["iss"] != iss:  # the issuer was chosen by this very claim
            raise MalformedTokenError("InvalidIssuerError: Invalid issuer", iss=iss, kid=kid)
        aud = claims["aud"]
        if not aud:
            raise MissingClaimError("aud", iss=iss, kid=kid)
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AudienceError("aud does not name this endpoint", iss=iss, kid=kid)
        if audience not in audiences:
            raise AudienceError("aud does not name this endpoint", iss=iss, kid=kid)
        if "sub" in claims and not isinstance(claims["sub"], str):
            raise MalformedTokenError("InvalidSubjectError: Subject must be a string", iss=iss, kid=kid)
        if not isinstance(claims["jti"], str):
            raise MalformedTokenError("InvalidJTIError: JWT ID must be a string", iss=iss, kid=kid)
        return claims


_REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "jti")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")

# alg -> how to check its signature on a key vetted by `key_fits` (type, curve, RSA size). ECDSA, PSS and PKCS #1 objects hold no state: made once, shared by every call.
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
_ECDSA = {bits: ec.ECDSA(hash_algorithm) for bits, hash_algorithm in _HASHES.items()}
_PSS = {
    bits: padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size)
    for bits, hash_algorithm in _HASHES.items()
}
_PKCS1 = padding.PKCS1v15()


_EC_CURVE_FOR_ALG = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_MIN_RSA_BITS = 2048


def key_fits(key: VerificationKey, alg: str) -> bool:
    """Whether ``key`` may check an ``alg`` signature (key type, curve, size, the JWK's own alg)."""
    if key.jwk_alg is not None and key.jwk_alg != alg:
        return False
    public_key = key.public_key
    if alg in _EC_CURVE_FOR_ALG:
        return (
            isinstance(public_key, ec.EllipticCurvePublicKey)
            and public_key.curve.name == _EC_CURVE_FOR_ALG[alg]
        )
    if alg in _RSA_ALGS:
        return isinstance(public_key, RSAPublicKey) and public_key.key_size >= _MIN_RSA_BITS
    return False


def _signature_verifies(alg: str, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s JWS signature (RFC 7518 §3.3-3.5) of ``signing_input``."""
    family, bits = alg[:2], alg[2:]
    try:
        if family == "ES" and isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, _ECDSA[bits])
            return True
        if family in ("RS", "PS") and isinstance(key, RSAPublicKey):
            scheme = _PKCS1 if family == "RS" else _PSS[bits]
            key.verify(signature, signing_input, scheme, _HASHES[bits])
            return True
    except InvalidSignature:
        return False
    raise AlgorithmNotAllowedError(f"alg {_shown(alg)} does not fit the key")


def _segment(segment: str, name: str) -> bytes:
    """A base64url segment, decoded: no padding or the exact padding, nothing outside the alphabet,
    canonical (the last character's spare bits zero)."""
    stripped = segment.rstrip("=")
    padding_length = len(segment) - len(stripped)
    if (
        padding_length > 2
        or (padding_length and len(segment) % 4)
        or len(stripped) % 4 == 1
        or not _SEGMENT.fullmatch(stripped)
    ):
        raise MalformedTokenError(f"unreadable header: Invalid {name} padding")
    try:
        decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise MalformedTokenError(f"unreadable header: Invalid {name} padding") from None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode("ascii") != stripped:
        raise MalformedTokenError(f"unreadable header: Invalid {name} padding")
    return decoded


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedTokenError(f"{what} string: {_shown(str(exc))}") from None
    if not isinstance(value, dict):
        raise MalformedTokenError(f"{what} string: must be a json object")
    return value


@dataclass(slots=True)
class _CompactJws:
    """A JWS in compact serialization, read once: its header, signing input, signature and claims."""

    header: dict[str, Any]
    signing_input: bytes
    payload: bytes
    signature: bytes
    _claims: dict[str, Any] | None = None

    @classmethod
    def parse(cls, token: str) -> _CompactJws:
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
            raise MalformedTokenError("not a compact JWS of reasonable size")
        signing_input, dot, signature_segment = token.rpartition(".")
        header_segment, dot_too, payload_segment = signing_input.partition(".")
        if not dot or not dot_too:
            raise MalformedTokenError("unreadable header: Not enough segments")
        header_data = _segment(header_segment, "header")
        header = _json_object(header_data, "unreadable header: Invalid header")
        if header.get("b64", True) is False:
            if payload_segment:
                raise MalformedTokenError(
                    "unreadable header: Payload segment must be empty when 'b64' is false."
                )
            payload = b""
        else:
            payload = _segment(payload_segment, "payload")
        signature = _segment(signature_segment, "crypto")
        if "kid" in header and not isinstance(header["kid"], str):
            raise MalformedTokenError("unreadable header: Key ID header parameter must be a string")
        return cls(header, signing_input.encode("ascii"), payload, signature)

    def claims(self) -> dict[str, Any]:
        """The payload as a JSON object (decoded on first use, then kept)."""
        if self._claims is None:
            self._claims = _json_object(self.payload, "unreadable payload: Invalid payload")
        return self._claims


class ClientAuthenticator:
    """Checks the bearer JWT of a request against the trusted issuers."""

    def __init__(self, verifier: JwtVerifier, *, public_base_url: str | None, dev: bool = False) -> None:
        self.verifier = verifier
        self.public_base_url = public_base_url
        self.dev = dev  # development mode: a refusal may say more (the `aud` expected)

    def audience(self, path: str, *, origin: str) -> str:
        """The exact URL of the endpoint called (``origin`` is the request's own scheme://host:port),
        as the client must have put it in `aud`."""
        if self.public_base_url is not None:
            return self.public_base_url + path
        return origin + path

    async def authenticate(self, token: str | None, *, audience: str) -> ClientIdentity:
        """The verified caller; `MissingTokenError` without a token, else the verifier's verdict."""
        if not token:
            raise MissingTokenError("no bearer token")
        return await self.verifier.verify(token, audience=audience)
