"""The development issuer of `calf-cds serve --dev`: its key on disk, and the tokens it mints."""

from __future__ import annotations

import base64
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from service.auth.caches import KeyStore, MemoryReplayCache
from service.auth.dev_issuer import DEV_ISSUER, DevIssuer, _own_p384_key
from service.auth.jwk import jwk_thumbprint
from service.auth.verifier import JwtVerifier
from tests.service.jwt_factory import AUDIENCE, NOW, FakeClock

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "e": "AQAB",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
    "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaS"
    "qzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHa"
    "Q-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def test_key_is_created_once_and_reused(tmp_path: Path) -> None:
    """A second load finds the key the first one created, byte for byte."""
    first = DevIssuer.load_or_create(tmp_path)
    key_file = tmp_path / "dev-issuer" / "private-key.pem"
    pem = key_file.read_bytes()

    second = DevIssuer.load_or_create(tmp_path)

    assert second.kid == first.kid
    assert key_file.read_bytes() == pem
    assert sorted(path.name for path in key_file.parent.iterdir()) == ["private-key.pem"]


def test_key_file_read_without_serialization_is_the_same_key(tmp_path: Path) -> None:
    """The fast reading of the issuer's own key file gives the key cryptography's parser gives."""
    created = DevIssuer.load_or_create(tmp_path)
    pem = (tmp_path / "dev-issuer" / "private-key.pem").read_bytes()

    fast = _own_p384_key(pem)

    assert fast is not None
    assert fast.private_numbers() == created.private_key.private_numbers()
    assert DevIssuer.load(tmp_path).kid == created.kid


@pytest.mark.parametrize("layout", ["traditional", "pkcs8-other-public-key", "p256"])
def test_other_key_files_are_parsed_in_full(tmp_path: Path, layout: str) -> None:
    """A key file not in the issuer's own layout goes through the full parser: same key, same refusals."""
    key = ec.generate_private_key(ec.SECP384R1())
    pkcs8 = serialization.PrivateFormat.PKCS8
    if layout == "traditional":
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())  # fmt: skip
    elif layout == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
    else:  # the issuer's layout, with another key's public half: the fast path must not trust it
        other = ec.generate_private_key(ec.SECP384R1())
        der = bytearray(key.private_bytes(serialization.Encoding.DER, pkcs8, serialization.NoEncryption()))
        der[-96:] = other.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )[1:]
        pem = (
            b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(bytes(der)) + b"-----END PRIVATE KEY-----\n"
        )
    folder = tmp_path / "dev-issuer"
    folder.mkdir(mode=0o700)
    (folder / "private-key.pem").write_bytes(pem)
    (folder / "private-key.pem").chmod(0o600)

    assert _own_p384_key(pem) is None
    if layout == "p256":
        with pytest.raises(ValueError, match="not an EC P-384 private key"):
            DevIssuer.load(tmp_path)
    elif layout == "traditional":
        assert DevIssuer.load(tmp_path).private_key.private_numbers() == key.private_numbers()
    else:
        with pytest.raises(ValueError, match="Invalid key"):  # OpenSSL refuses halves that do not match
            DevIssuer.load(tmp_path)


def test_private_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The private key file is mode 0600, in a 0700 folder."""
    DevIssuer.load_or_create(tmp_path)
    folder = tmp_path / "dev-issuer"

    assert stat.S_IMODE((folder / "private-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_loose_permissions_on_an_existing_key_are_tightened(tmp_path: Path) -> None:
    """A key file (and folder) someone opened to others is put back to 0600 (0700) on load."""
    DevIssuer.load_or_create(tmp_path)
    key_file = tmp_path / "dev-issuer" / "private-key.pem"
    key_file.chmod(0o644)
    key_file.parent.chmod(0o755)

    DevIssuer.load_or_create(tmp_path)

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700


def test_jwk_thumbprint_matches_rfc_7638_example() -> None:
    """The kid function reproduces the RFC 7638 §3.1 worked example."""
    assert jwk_thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT


def test_kid_is_the_public_key_thumbprint(tmp_path: Path) -> None:
    """The dev issuer's kid is the RFC 7638 thumbprint of its public JWK."""
    issuer = DevIssuer.load_or_create(tmp_path)
    jwk = issuer.public_jwk

    assert issuer.kid == jwk_thumbprint(jwk)
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-384", "ES384", "sig")


@pytest.mark.anyio
async def test_minted_token_verifies_with_its_trusted_issuer(
    tmp_path: Path, http_client: httpx.AsyncClient
) -> None:
    """A token from .token() is accepted by a JwtVerifier trusting .trusted_issuer()."""
    issuer = DevIssuer.load_or_create(tmp_path)
    clock = FakeClock(NOW)
    verifier = JwtVerifier(
        [issuer.trusted_issuer()],
        key_store=KeyStore(http_client, clock=clock),
        replay_cache=MemoryReplayCache(clock=clock),
        clock=clock,
    )

    identity = await verifier.verify(issuer.token(AUDIENCE, tenant="dev", now=NOW), audience=AUDIENCE)

    assert (identity.iss, identity.kid, identity.alg) == (DEV_ISSUER, issuer.kid, "ES384")
    assert identity.tenant == "dev"
    assert identity.expires_at.timestamp() == NOW + 300


@pytest.mark.parametrize("lifetime", [0, 3601])
def test_token_lifetime_is_bounded(tmp_path: Path, lifetime: int) -> None:
    """Minted tokens live between 1 s and 1 h (the verifier's default maximum)."""
    issuer = DevIssuer.load_or_create(tmp_path)

    with pytest.raises(ValueError, match="lifetime_seconds"):
        issuer.token(AUDIENCE, lifetime_seconds=lifetime, now=NOW)


def test_public_jwk_is_what_pyjwt_makes_of_the_key(tmp_path: Path) -> None:
    """The JWK (and so the kid) built without PyJWT is the one PyJWT derives from the same key."""
    issuer = DevIssuer.load_or_create(tmp_path)
    expected = ECAlgorithm.to_jwk(issuer.private_key.public_key(), as_dict=True)
    assert {k: issuer.public_jwk[k] for k in ("kty", "crv", "x", "y")} == {
        k: expected[k] for k in ("kty", "crv", "x", "y")
    }


def test_token_verifies_with_pyjwt(tmp_path: Path) -> None:
    """The hand-built ES384 JWS is one PyJWT verifies, header and claims as signed."""
    issuer = DevIssuer.load_or_create(tmp_path)
    token = issuer.token(AUDIENCE, tenant="t", now=NOW)
    claims = jwt.decode(
        token,
        issuer.private_key.public_key(),
        algorithms=["ES384"],
        audience=AUDIENCE,
        options={"verify_exp": False},
    )
    assert (claims["iat"], claims["exp"], claims["tenant"]) == (int(NOW), int(NOW) + 300, "t")
    assert jwt.get_unverified_header(token) == {"alg": "ES384", "typ": "JWT", "kid": issuer.kid}
