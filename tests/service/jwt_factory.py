"""Test keys, JWK Sets and JWTs, built by hand so tests can make bad tokens as easily as good ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER: Final = "https://ehr.example.org/"
AUDIENCE: Final = "https://cds.example.org/cds-services/calf-pain"
NOW: Final = 1_750_000_000.0
ABSENT: Final = object()  # a claim or header value to leave out


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


class FakeClock:
    """A clock the test moves by hand: seconds since the epoch."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class SigningKey:
    """A CDS Client's key pair, as the client would hold it."""

    kid: str
    alg: str
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @classmethod
    def es384(cls, kid: str = "es384-key") -> SigningKey:
        return cls(kid, "ES384", ec.generate_private_key(ec.SECP384R1()))

    @classmethod
    def rs384(cls, kid: str = "rs384-key") -> SigningKey:
        return cls(kid, "RS384", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def with_kid(self, kid: str) -> SigningKey:
        """The same key pair published under another kid."""
        return SigningKey(kid, self.alg, self.private_key)

    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], **header: object) -> str:
        """A JWS over `claims`; header defaults alg/typ/kid, overridden (or dropped: ABSENT) here."""
        full_header = _without_absent({"alg": self.alg, "typ": "JWT", "kid": self.kid, **header})
        signing_input = f"{b64url_json(full_header)}.{b64url_json(claims)}"
        algorithm = jwt.get_algorithm_by_name(self.alg)
        signature = algorithm.sign(signing_input.encode("ascii"), self.private_key)
        return f"{signing_input}.{b64url(signature)}"


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}


def claims(now: float = NOW, /, **overrides: object) -> dict[str, Any]:
    """Valid CDS Hooks claims issued at `now` for five minutes; override or drop (ABSENT) any."""
    base: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now),
        "exp": int(now) + 300,
        "jti": str(uuid.uuid4()),
    }
    return _without_absent({**base, **overrides})


def unsigned_token(claims: dict[str, Any], **header: object) -> str:
    """An unsecured JWS (alg none, empty signature)."""
    full_header = _without_absent({"alg": "none", "typ": "JWT", **header})
    return f"{b64url_json(full_header)}.{b64url_json(claims)}."


def hmac_token(claims: dict[str, Any], secret: bytes, **header: object) -> str:
    """An HS256 JWS with `secret` as the HMAC key (pyjwt refuses to make one with a PEM key)."""
    full_header = _without_absent({"alg": "HS256", "typ": "JWT", **header})
    signing_input = f"{b64url_json(full_header)}.{b64url_json(claims)}"
    digest = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(digest)}"


def _without_absent(values: dict[str, object]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not ABSENT}
