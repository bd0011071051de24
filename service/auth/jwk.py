"""One JWK (RFC 7517): its RFC 7638 thumbprint.

Standard library only, so that `calf-cds token` (``service.auth.dev_issuer``) starts without the
server's JWK Set machinery (``service.auth.jwks``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from service.auth.errors import InvalidJwksError

__all__ = ["jwk_thumbprint"]


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK (base64url, no padding)."""
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    members = required.get(jwk.get("kty", ""))
    if members is None:
        raise InvalidJwksError(f"no RFC 7638 thumbprint for kty {jwk.get('kty')!r}")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
