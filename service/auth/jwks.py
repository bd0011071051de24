"""Trusted CDS Clients and their public keys: JWK Sets, and where they come from.

CDS Hooks 2.0 ("Trusting CDS Clients") has a CDS Client publish its public keys as a JWK Set
(RFC 7517), out of band or at a URL named by the token's `jku` header. This module owns that:

- `TrustedIssuer`: one CDS Client we trust (`iss`); where its keys are (exactly one of an inline
  JWK Set, a JWK Set file or a JWK Set URL); which `jku` URLs its tokens may name; which tenants it
  may speak for.
- `load_trusted_issuers(path)`: reads the trusted-issuer file (format in its docstring).
- `parse_jwks`: the usable signing keys of a JWK Set (`VerificationKey`, by `kid`); a JWK Set
  that cannot be used is an `InvalidJwksError` (`service.auth.errors`).

How long the keys are kept, and when a source is read again, is the `KeyStore`'s
(:mod:`service.auth.caches`); which key may check which `alg` is the verifier's
(:func:`service.auth.verifier.key_fits`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.auth.errors import InvalidJwksError
from service.outbound.addresses import check_fhir_server_prefixes

__all__ = [
    "PublicKey",
    "TrustedIssuer",
    "VerificationKey",
    "load_trusted_issuers",
    "new_jwks_http_client",
    "parse_jwks",
]

logger = logging.getLogger(__name__)

PublicKey = EllipticCurvePublicKey | RSAPublicKey

_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key from a JWK Set, with the `alg` its JWK pins (if any)."""

    kid: str
    public_key: PublicKey
    jwk_alg: str | None


def parse_jwks(document: object, *, strict: bool) -> dict[str, VerificationKey]:
    """The usable signing keys of a JWK Set, by `kid`.

    `strict` (configuration we were given): any unusable key is an error. Not strict (a set
    fetched from a client): keys without a `kid`, of an unknown type or carrying private material
    are skipped. Keys whose `use` is not `sig` are always skipped. A `kid` that occurs twice is
    ambiguous and never used.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise InvalidJwksError('a JWK Set must be a JSON object {"keys": [...]}')
    keys: dict[str, VerificationKey] = {}
    ambiguous: set[str] = set()
    for index, jwk in enumerate(document["keys"]):
        try:
            key = _parse_jwk(jwk)
        except InvalidJwksError as exc:
            if strict:
                raise InvalidJwksError(f"keys[{index}]: {exc}") from None
            logger.warning("skipping unusable JWK keys[%d]: %s", index, exc)
            continue
        if key is None:
            continue
        if key.kid in keys or key.kid in ambiguous:
            if strict:
                raise InvalidJwksError(f"keys[{index}]: kid {key.kid!r} occurs more than once")
            ambiguous.add(key.kid)
            keys.pop(key.kid, None)
            continue
        keys[key.kid] = key
    return keys


def _parse_jwk(jwk: object) -> VerificationKey | None:
    if not isinstance(jwk, Mapping):
        raise InvalidJwksError("not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidJwksError("no kid (CDS Hooks tokens must name their key)")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidJwksError(f"kid {kid!r} carries private key material; publish only public keys")
    if jwk.get("use", "sig") != "sig":
        return None  # an encryption key: not ours to use
    jwk_alg = jwk.get("alg")
    if jwk_alg is not None and not isinstance(jwk_alg, str):
        raise InvalidJwksError(f"kid {kid!r}: alg must be a string")
    try:
        match jwk.get("kty"):
            case "EC":
                public_key: object = ECAlgorithm.from_jwk(dict(jwk))
            case "RSA":
                public_key = RSAAlgorithm.from_jwk(dict(jwk))
            case other:
                raise InvalidJwksError(f"kid {kid!r}: unsupported kty {other!r} (EC and RSA only)")
    except (PyJWTError, TypeError, ValueError) as exc:  # pyjwt lets some bad members through raw
        raise InvalidJwksError(f"kid {kid!r}: {exc}") from None
    if not isinstance(public_key, EllipticCurvePublicKey | RSAPublicKey):
        raise InvalidJwksError(f"kid {kid!r}: not a public key")
    return VerificationKey(kid=kid, public_key=public_key, jwk_alg=jwk_alg)


def _check_fetch_url(url: str) -> str:
    parts = urlsplit(url)
    loopback_http = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    if not (parts.scheme == "https" or loopback_http) or not parts.hostname:
        raise ValueError(f"{url!r}: a JWK Set URL must be https (http only on loopback)")
    if parts.username is not None or parts.fragment:
        raise ValueError(f"{url!r}: a JWK Set URL may not carry credentials or a fragment")
    return url


class TrustedIssuer(BaseModel):
    """One CDS Client we trust, and where its public keys are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iss: str = Field(min_length=1, max_length=512)
    jwks: dict[str, Any] | None = None
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jku_allowlist: tuple[str, ...] = ()
    tenants: tuple[str, ...] | None = None
    fhir_servers: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        sources = [s for s in (self.jwks, self.jwks_file, self.jwks_url) if s is not None]
        if len(sources) != 1:
            raise ValueError(f"issuer {self.iss!r}: give exactly one of jwks, jwks_file, jwks_url")
        if self.jwks is not None and not parse_jwks(self.jwks, strict=True):
            raise ValueError(f"issuer {self.iss!r}: the inline JWK Set has no signing keys")
        if self.jwks_url is not None:
            _check_fetch_url(self.jwks_url)
        for url in self.jku_allowlist:
            _check_fetch_url(url)
        if self.tenants is not None and not self.tenants:
            raise ValueError(f"issuer {self.iss!r}: tenants must be null (any) or a non-empty list")
        if self.fhir_servers is not None:
            check_fhir_server_prefixes(self.iss, self.fhir_servers)
        return self


class _TrustedIssuersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuers: list[TrustedIssuer]


def load_trusted_issuers(path: Path) -> list[TrustedIssuer]:
    """Read the trusted-issuer file: a JSON object, one entry per CDS Client we accept tokens from::

        {"issuers": [
          {"iss": "https://sandbox.cds-hooks.org",
           "jwks_url": "https://sandbox.cds-hooks.org/.well-known/jwks.json",
           "jku_allowlist": ["https://sandbox.cds-hooks.org/.well-known/jwks.json"]},
          {"iss": "https://ehr.example.org/",
           "jwks_file": "keys/ehr.jwks.json",
           "tenants": ["2ddd6c3a-8e9a-44c6-a305-52111ad302a2"]},
          {"iss": "https://other-ehr.example.org/",
           "jwks": {"keys": [{"kty": "RSA", "kid": "k1", "n": "...", "e": "AQAB"}]}}
        ]}

    Per issuer:
    - `iss`: compared exactly with the token's `iss`.
    - exactly one of `jwks` (an inline JWK Set), `jwks_file` (a path; relative paths are relative
      to this file's folder) or `jwks_url` (https; plain http only on loopback).
    - `jku_allowlist` (optional): the exact URLs a token's `jku` header may name. A token naming any
      other `jku` is refused; one naming a listed URL is verified with the keys fetched from it.
    - `tenants` (optional): when given, the token's `tenant` claim must be one of them.
    - `fhir_servers` (optional): the FHIR base URLs this client's `fhirServer` must lie under
      (`service.hooks.fhir_server_guard`); https, plain http only on loopback.

    Unknown fields and duplicate issuers are errors (`pydantic.ValidationError`, `ValueError`).
    """
    parsed = _TrustedIssuersFile.model_validate_json(path.read_bytes())
    issuers: list[TrustedIssuer] = []
    for issuer in parsed.issuers:
        if issuer.jwks_file is not None and not issuer.jwks_file.is_absolute():
            issuer = issuer.model_copy(update={"jwks_file": path.parent / issuer.jwks_file})
        issuers.append(issuer)
    names = [issuer.iss for issuer in issuers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}: issuer(s) listed more than once: {duplicates}")
    return issuers


def new_jwks_http_client() -> httpx.AsyncClient:
    """An HTTP client fit for fetching JWK Sets: TLS verified, 2 s timeout, no redirects."""
    return httpx.AsyncClient(verify=True, timeout=2.0, follow_redirects=False)
