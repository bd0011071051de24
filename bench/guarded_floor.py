"""The ``--guarded`` floor of ``bench/floor_app.py``: the bare floor plus what CDS Hooks and this
project's rules oblige any service to do with a call before reading it, and nothing clinical (see
that module's docstring). Started by ``python -m bench.floor_app --guarded …``.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from fastapi import FastAPI, Request
from fastapi.responses import Response
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from bench.floor_app import EMPTY, GUARD_ENV
from service.hooks.guards import JsonLimits, LimitExceededError, check_json_limits


class RefusedError(Exception):
    """A call the guarded floor refuses: ``status`` is the HTTP status it answers (401 or 400)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class Guard:
    """The obligations of ``--guarded``: a verified, unreplayed client JWT and a body within limits."""

    def __init__(self, issuers_file: Path, audience: str, database: Path, limits: JsonLimits) -> None:
        self.keys: dict[tuple[str, str], Any] = {}
        for issuer in json.loads(issuers_file.read_text(encoding="utf-8"))["issuers"]:
            for jwk in issuer["jwks"]["keys"]:
                loader = ECAlgorithm if jwk["kty"] == "EC" else RSAAlgorithm
                self.keys[(issuer["iss"], jwk["kid"])] = loader.from_jwk(json.dumps(jwk))
        self.audience, self.limits = audience, limits
        database.parent.mkdir(parents=True, exist_ok=True)
        self.replay = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        self.replay.execute("PRAGMA journal_mode=WAL")
        self.replay.execute("PRAGMA synchronous=NORMAL")
        self.replay.execute(
            "CREATE TABLE IF NOT EXISTS jwt_replay (iss TEXT, jti TEXT, exp REAL, PRIMARY KEY (iss, jti))"
        )

    @staticmethod
    def _segment(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    def check_token(self, authorization: str | None, now: float) -> None:
        if not authorization or not authorization.startswith("Bearer "):
            raise RefusedError(401, "no bearer token")
        token = authorization[7:]
        signing_input, _, signature_segment = token.rpartition(".")
        header_segment, _, payload_segment = signing_input.partition(".")
        try:
            header = orjson.loads(self._segment(header_segment))
            claims = orjson.loads(self._segment(payload_segment))
            signature = self._segment(signature_segment)
        except ValueError:
            raise RefusedError(401, "unreadable token") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise RefusedError(401, "unreadable token")
        key = self.keys.get((claims.get("iss"), header.get("kid")))
        if key is None:
            raise RefusedError(401, "unknown issuer or key")
        try:
            if header.get("alg") == "ES384" and isinstance(key, ec.EllipticCurvePublicKey):
                if len(signature) != 96:
                    raise RefusedError(401, "bad signature")
                r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
                key.verify(encode_dss_signature(r, s), signing_input.encode(), ec.ECDSA(hashes.SHA384()))
            elif header.get("alg") == "RS384" and isinstance(key, RSAPublicKey):
                key.verify(signature, signing_input.encode(), PKCS1v15(), hashes.SHA384())
            else:
                raise RefusedError(401, "algorithm does not fit the key")
        except InvalidSignature:
            raise RefusedError(401, "bad signature") from None
        exp, iat, jti = claims.get("exp"), claims.get("iat"), claims.get("jti")
        if claims.get("aud") != self.audience or not isinstance(jti, str) or not jti:
            raise RefusedError(401, "wrong audience or no jti")
        if (
            not isinstance(exp, int | float)
            or not isinstance(iat, int | float)
            or exp <= now
            or iat > now + 60
        ):
            raise RefusedError(401, "expired or not yet valid")
        inserted = self.replay.execute(
            "INSERT INTO jwt_replay (iss, jti, exp) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (claims["iss"], jti, exp),
        ).rowcount
        if inserted != 1:
            raise RefusedError(401, "replayed jti")

    def check_body(self, body: bytes) -> None:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise RefusedError(400, "not JSON") from None
        if not isinstance(document, dict):
            raise RefusedError(400, "not an object")
        try:
            check_json_limits(document, self.limits, body_size=len(body))
        except LimitExceededError as error:
            raise RefusedError(400, str(error)) from None


def build() -> FastAPI:
    """The floor with the obligations of ``--guarded``, set by the JSON in ``CALF_CDS_BENCH_GUARD``."""
    settings = json.loads(os.environ[GUARD_ENV])
    guard = Guard(
        Path(settings["issuers"]),
        settings["audience"],
        Path(settings["data"]) / f"replay-{os.getpid()}.sqlite3",
        JsonLimits(max_items=settings["max_items"]),
    )
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/cds-services/{service_id}")
    async def floor(service_id: str, request: Request) -> Response:
        try:
            guard.check_token(request.headers.get("authorization"), time.time())
            guard.check_body(await request.body())
        except RefusedError as refusal:
            return Response(orjson.dumps({"error": str(refusal)}), status_code=refusal.status)
        return Response(EMPTY, media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    return app
