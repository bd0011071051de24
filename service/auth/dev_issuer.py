"""The development issuer behind `calf-cds serve --dev` and `calf-cds token --aud URL`.

It plays the CDS Client for local work: an ES384 key pair kept in `<data_dir>/dev-issuer/`
(created once; the private key file is mode 0600 in a 0700 folder), the issuer
`urn:calf-cds:dev-issuer`, and a `kid` that is the key's RFC 7638 thumbprint. Its tokens have the
shape the CDS Hooks spec asks of a client: header `alg` ES384, `typ` JWT, `kid`; claims `iss`,
`sub`, `aud`, `exp`, `iat`, `jti` (a UUID4) and optionally `tenant`.

A `--dev` server trusts only this issuer (`DevIssuer.trusted_issuer()`, an inline JWK Set), so
nothing here is ever trusted by a production configuration.

Tokens are signed with `cryptography` directly (RFC 7515 compact JWS, RFC 7518 §3.4 ES384: the
raw 48-byte r and s), not through PyJWT, so that `calf-cds token` starts without loading PyJWT and
X.509; `service.auth.verifier` verifies them like any client's. For the same reason the key file
this issuer writes (PKCS #8, EC P-384) is read without `cryptography`'s serialization package
(~60 ms of imports, most of them its SSH key formats): the private scalar sits at a fixed place
in that DER; any other file goes through `serialization.load_pem_private_key`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from service.auth.jwk import jwk_thumbprint

if TYPE_CHECKING:  # service.auth.jwks (httpx, pydantic) is for the server; `calf-cds token` does without
    from service.auth.jwks import TrustedIssuer

__all__ = [
    "DEV_ALGORITHM",
    "DEV_ISSUER",
    "DEV_SUBJECT",
    "KEY_DIRECTORY",
    "MAX_LIFETIME_SECONDS",
    "PRIVATE_KEY_FILE",
    "DevIssuer",
    "DevIssuerMissingError",
]

logger = logging.getLogger(__name__)

DEV_ISSUER = "urn:calf-cds:dev-issuer"
DEV_SUBJECT = "calf-cds-dev"
DEV_ALGORITHM = "ES384"
KEY_DIRECTORY = "dev-issuer"
PRIVATE_KEY_FILE = "private-key.pem"
MAX_LIFETIME_SECONDS = 3600


class DevIssuerMissingError(FileNotFoundError):
    """The data folder has no development issuer (`calf-cds serve --dev` creates it)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        super().__init__(
            f"no development issuer in {data_dir.resolve()}/{KEY_DIRECTORY}/. Start "
            "`calf-cds serve --dev` first (it creates one in its data folder), and ask for tokens "
            "from the same folder, or name that data folder with --data-dir or CALF_CDS_DATA_DIR. "
            "A new key here would be one the running service does not trust."
        )


@dataclass(frozen=True)
class DevIssuer:
    """A local CDS Client identity that signs tokens for `calf-cds serve --dev`."""

    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    iss: str = DEV_ISSUER

    @classmethod
    def load(cls, data_dir: Path) -> DevIssuer:
        """The key pair in `data_dir/dev-issuer/`; `DevIssuerMissingError` if there is none (never creates one)."""
        path = data_dir / KEY_DIRECTORY / PRIVATE_KEY_FILE
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise DevIssuerMissingError(data_dir) from None
        _owner_only(path, 0o600)
        return cls._from_pem(pem, path)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> DevIssuer:
        """Load the key pair from `data_dir/dev-issuer/`, creating it on first use."""
        directory = data_dir / KEY_DIRECTORY
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _owner_only(directory, 0o700)
        path = directory / PRIVATE_KEY_FILE
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            pem = _create_private_key_file(path)
        else:
            _owner_only(path, 0o600)
        return cls._from_pem(pem, path)

    @classmethod
    def _from_pem(cls, pem: bytes, path: Path) -> DevIssuer:
        key: object = _own_p384_key(pem)
        if key is None:
            from cryptography.hazmat.primitives import serialization

            key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
            raise ValueError(f"{path} is not an EC P-384 private key; delete it to make a new one")
        return cls(private_key=key)

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK, with `kid`, `use` and `alg`."""
        numbers = self.private_key.public_key().public_numbers()
        jwk: dict[str, Any] = {
            "kty": "EC",
            "crv": "P-384",
            "x": _b64url(numbers.x.to_bytes(_P384_BYTES, "big")),
            "y": _b64url(numbers.y.to_bytes(_P384_BYTES, "big")),
        }
        return {**jwk, "kid": jwk_thumbprint(jwk), "use": "sig", "alg": DEV_ALGORITHM}

    @property
    def kid(self) -> str:
        """The RFC 7638 thumbprint of the public key."""
        return str(self.public_jwk["kid"])

    def trusted_issuer(self) -> TrustedIssuer:
        """This issuer as the server should trust it: the public key inline, no network."""
        from service.auth.jwks import TrustedIssuer

        return TrustedIssuer(iss=self.iss, jwks={"keys": [self.public_jwk]})

    def token(
        self,
        audience: str,
        *,
        lifetime_seconds: int = 300,
        tenant: str | None = None,
        now: float,
    ) -> str:
        """A signed token for `audience`, the exact URL of the endpoint it will be sent to, issued
        at `now` (seconds since the epoch, from the caller's clock)."""
        if not audience:
            raise ValueError("audience must be the URL of the CDS Service endpoint")
        if not 0 < lifetime_seconds <= MAX_LIFETIME_SECONDS:
            raise ValueError(f"lifetime_seconds must be 1..{MAX_LIFETIME_SECONDS}")
        issued_at = int(now)  # rounded down: never in the future
        claims: dict[str, Any] = {
            "iss": self.iss,
            "sub": DEV_SUBJECT,
            "aud": audience,
            "iat": issued_at,
            "exp": issued_at + lifetime_seconds,
            "jti": str(uuid.uuid4()),
        }
        if tenant is not None:
            claims["tenant"] = tenant
        header = {"alg": DEV_ALGORITHM, "typ": "JWT", "kid": self.kid}
        signing_input = f"{_b64url(_compact_json(header))}.{_b64url(_compact_json(claims))}"
        der = self.private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_P384_BYTES, "big") + s.to_bytes(_P384_BYTES, "big")
        return f"{signing_input}.{_b64url(signature)}"


_P384_BYTES = 48
# The PKCS #8 DER (RFC 5208, RFC 5915) of an EC P-384 private key as `cryptography` writes it: this
# prefix, the 48-byte private scalar, the public key's own prefix, then its 96-byte x and y.
_PKCS8_P384_PREFIX = bytes.fromhex("3081b6020100301006072a8648ce3d020106052b8104002204819e30819b0201010430")
_PKCS8_P384_PUBLIC = bytes.fromhex("a16403620004")
_PKCS8_P384_LENGTH = len(_PKCS8_P384_PREFIX) + _P384_BYTES + len(_PKCS8_P384_PUBLIC) + 2 * _P384_BYTES
_PEM_BEGIN = b"-----BEGIN PRIVATE KEY-----"
_PEM_END = b"-----END PRIVATE KEY-----"


def _own_p384_key(pem: bytes) -> ec.EllipticCurvePrivateKey | None:
    """The key of a PEM file in exactly the layout this issuer writes, else None (parse it in full).

    The public key stored in the file must be the one the private scalar derives.
    """
    lines = pem.strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != _PEM_BEGIN or lines[-1].strip() != _PEM_END:
        return None
    try:
        der = base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except ValueError:
        return None
    start = len(_PKCS8_P384_PREFIX)
    public_at = start + _P384_BYTES + len(_PKCS8_P384_PUBLIC)
    if (
        len(der) != _PKCS8_P384_LENGTH
        or not der.startswith(_PKCS8_P384_PREFIX)
        or der[start + _P384_BYTES : public_at] != _PKCS8_P384_PUBLIC
    ):
        return None
    try:
        key = ec.derive_private_key(int.from_bytes(der[start : start + _P384_BYTES], "big"), ec.SECP384R1())
    except ValueError:
        return None
    numbers = key.public_key().public_numbers()
    derived = numbers.x.to_bytes(_P384_BYTES, "big") + numbers.y.to_bytes(_P384_BYTES, "big")
    return key if der[public_at:] == derived else None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _owner_only(path: Path, mode: int) -> None:
    """Take group and other permissions away from `path` (we may have made it under another umask)."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        logger.warning("%s was open to others (mode %o); setting %o", path, current, mode)
        path.chmod(mode)


def _create_private_key_file(path: Path) -> bytes:
    """Write a new private key to `path` (0600) atomically; if two processes race, keep the first."""
    from cryptography.hazmat.primitives import serialization

    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # whatever the umask
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # never replaces an existing key
        except FileExistsError:
            return path.read_bytes()
    finally:
        temporary.unlink(missing_ok=True)
    return pem
