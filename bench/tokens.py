"""Client JWTs for the benchmarks: one per call, signed before the measured window starts.

The service wants a fresh JWT on every call (it refuses a `jti` it has seen), signed by an issuer
it trusts, with `aud` the exact URL called. Signing one takes ~0.3 ms, so tokens are made up front,
on every core, and the load generator only takes the next one from a list while it measures.

Both issuers are trusted the production way: an entry in a trusted-issuer file with the public
key inline (``CALF_CDS_TRUSTED_ISSUERS_FILE``), and ``CALF_CDS_PUBLIC_BASE_URL`` naming the URL
the audience is built on. No development mode: the service runs as it would in production.

    ES384   a P-384 EC issuer, as the CDS Hooks Sandbox signs
    RS384   an RSA issuer, the way EHR vendors sign (with `sub` and `nbf`)

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
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ALGORITHMS = ("ES384", "RS384")
ISSUERS = {"ES384": "https://sandbox.bench.calf-cds.test/", "RS384": "https://ehr.bench.calf-cds.test/"}
KIDS = {"ES384": "bench-es384", "RS384": "bench-rs384"}


def _key_file(algorithm: str, folder: Path) -> Path:
    return folder / f"{algorithm.lower()}.pem"


def issuers_file(folder: Path) -> Path:
    """The trusted-issuer file :func:`prepare_issuer` writes in ``folder``."""
    return folder / "trusted-issuers.json"


def prepare_issuer(algorithm: str, folder: Path, public_base_url: str) -> dict[str, str]:
    """Make the signing key in ``folder``; return the settings under which the service trusts it."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if algorithm == "ES384":
        key = ec.generate_private_key(ec.SECP384R1())
        public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    folder.mkdir(parents=True, exist_ok=True)
    _key_file(algorithm, folder).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public |= {"kid": KIDS[algorithm], "use": "sig", "alg": algorithm}
    issuers = {"issuers": [{"iss": ISSUERS[algorithm], "jwks": {"keys": [public]}}]}
    path = issuers_file(folder)
    path.write_text(json.dumps(issuers), encoding="utf-8")
    return {"CALF_CDS_TRUSTED_ISSUERS_FILE": str(path), "CALF_CDS_PUBLIC_BASE_URL": public_base_url}


def _sign(job: tuple[str, str, str, int, int]) -> list[str]:
    algorithm, key_file, audience, lifetime, count = job
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    tokens = []
    for _ in range(count):
        now = int(time.time())
        claims = {
            "iss": ISSUERS[algorithm],
            "sub": "bench-client",
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        if algorithm == "RS384":
            claims["nbf"] = now
        headers = {"typ": "JWT", "kid": KIDS[algorithm]}
        tokens.append(jwt.encode(claims, key, algorithm=algorithm, headers=headers))  # type: ignore[arg-type]
    return tokens


def mint(algorithm: str, folder: Path, audience: str, count: int, lifetime: int) -> list[str]:
    """``count`` tokens for ``audience``, signed in parallel on every core."""
    if count <= 0:
        return []
    key_file = str(_key_file(algorithm, folder))
    chunk = 2000
    jobs = [
        (algorithm, key_file, audience, lifetime, min(chunk, count - start))
        for start in range(0, count, chunk)
    ]
    if len(jobs) == 1:
        return _sign(jobs[0])
    with ProcessPoolExecutor() as pool:
        return [token for tokens in pool.map(_sign, jobs) for token in tokens]
