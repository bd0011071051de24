"""Client JWTs for the load benchmark: one per call, signed before the measured window starts.

The service wants a fresh JWT on every call (it refuses a `jti` it has seen), signed by an issuer
it trusts, with `aud` the exact URL called. Signing one takes ~0.3 ms, so tokens are made up front,
on every core, and the load generator only takes the next one from a list while it measures.

    ES384   the development issuer of `calf-cds serve --dev` (what the CDS Hooks Sandbox signs with)
    RS384   an RSA issuer in a trusted-issuer file, the way EHR vendors sign (with `sub` and `nbf`)

The service verifies an ES384 signature in ~0.5 ms of CPU and an RS384 one in ~0.06 ms.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from service.auth.dev_issuer import DevIssuer

ALGORITHMS = ("ES384", "RS384")
RS384_ISSUER = "https://ehr.bench.calf-cds.test/"
RS384_KID = "bench-rs384"


def prepare_issuer(algorithm: str, folder: Path, data_dir: Path) -> dict[str, str]:
    """Make the signing key; return the settings under which the service trusts it."""
    if algorithm == "ES384":
        DevIssuer.load_or_create(data_dir)  # the key `serve --dev` will find there
        return {"CALF_CDS_DEV": "true"}
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "rs384.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    public |= {"kid": RS384_KID, "use": "sig", "alg": "RS384"}
    issuers = {"issuers": [{"iss": RS384_ISSUER, "jwks": {"keys": [public]}}]}
    path = folder / "trusted-issuers.json"
    path.write_text(json.dumps(issuers), encoding="utf-8")
    return {"CALF_CDS_TRUSTED_ISSUERS_FILE": str(path)}


def _sign(job: tuple[str, str, str, int, int]) -> list[str]:
    algorithm, key_place, audience, lifetime, count = job
    if algorithm == "ES384":
        issuer = DevIssuer.load_or_create(Path(key_place))
        return [issuer.token(audience, lifetime_seconds=lifetime, now=time.time()) for _ in range(count)]
    key = serialization.load_pem_private_key(Path(key_place).read_bytes(), password=None)
    tokens = []
    for _ in range(count):
        now = int(time.time())
        claims = {
            "iss": RS384_ISSUER,
            "sub": "bench-client",
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        tokens.append(
            jwt.encode(claims, key, algorithm="RS384", headers={"typ": "JWT", "kid": RS384_KID})  # type: ignore[arg-type]
        )
    return tokens


def mint(algorithm: str, folder: Path, data_dir: Path, audience: str, count: int, lifetime: int) -> list[str]:
    """``count`` tokens for ``audience``, signed in parallel on every core."""
    key_place = str(data_dir if algorithm == "ES384" else folder / "rs384.pem")
    chunk = 2000
    jobs = [
        (algorithm, key_place, audience, lifetime, min(chunk, count - start))
        for start in range(0, count, chunk)
    ]
    with ProcessPoolExecutor() as pool:
        return [token for tokens in pool.map(_sign, jobs) for token in tokens]
