"""The guarded floor of the hook benchmark (``bench/floor_app.py --guarded``) really does the
obligations it stands for: a floor that let a bad token or an oversized body through would make
the obligations look cheaper than they are, and the benchmark's split of the costs wrong."""

from __future__ import annotations

from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from bench import tokens
from bench.guarded_floor import Guard, RefusedError
from service.hooks.guards import JsonLimits

AUDIENCE = "http://127.0.0.1:8080/cds-services/calf-pain"
NOW = 1_800_000_000  # a fixed clock: the guard is given the time, never reads it


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("issuer")
    tokens.prepare_issuer("ES384", folder, "http://127.0.0.1:8080")
    return folder


@pytest.fixture
def guard(issuer: Path, tmp_path: Path) -> Guard:
    return Guard(tokens.issuers_file(issuer), AUDIENCE, tmp_path / "replay.sqlite3", JsonLimits(max_items=5))


def _token(
    issuer: Path, *, jti: str = "one", aud: str = AUDIENCE, exp: int = NOW + 300, kid: str = ""
) -> str:
    key = serialization.load_pem_private_key((issuer / "es384.pem").read_bytes(), password=None)
    claims = {"iss": tokens.ISSUERS["ES384"], "aud": aud, "iat": NOW, "exp": exp, "jti": jti}
    headers = {"typ": "JWT", "kid": kid or tokens.KIDS["ES384"]}
    return jwt.encode(claims, key, algorithm="ES384", headers=headers)  # type: ignore[arg-type]


def _refusal(check: object, *args: object) -> int:
    with pytest.raises(RefusedError) as refused:
        check(*args)  # type: ignore[operator]
    return refused.value.status


def test_a_fresh_valid_token_passes_once_then_its_jti_is_refused(guard: Guard, issuer: Path) -> None:
    token = f"Bearer {_token(issuer)}"
    guard.check_token(token, NOW)
    assert _refusal(guard.check_token, token, NOW) == 401
    guard.check_token(f"Bearer {_token(issuer, jti='two')}", NOW)


@pytest.mark.parametrize(
    "case", ["tampered", "audience", "expired", "unknown kid", "no token", "garbage", "not objects"]
)
def test_a_bad_token_is_refused(guard: Guard, issuer: Path, case: str) -> None:
    good = _token(issuer)
    flipped = "A" if good[-20] != "A" else "B"  # one character in the middle of the signature
    token = {
        "tampered": good[:-20] + flipped + good[-19:],
        "audience": _token(issuer, aud="http://127.0.0.1:9999/cds-services/calf-pain"),
        "expired": _token(issuer, exp=NOW - 1),
        "unknown kid": _token(issuer, kid="another"),
        "no token": "",
        "garbage": "a.b.c",
        "not objects": "WzFd.WzFd.AAAA",  # header and claims are the JSON array [1]
    }[case]
    assert _refusal(guard.check_token, f"Bearer {token}" if token else None, NOW) == 401


def test_the_body_is_held_to_the_json_limits(guard: Guard) -> None:
    guard.check_body(orjson.dumps({"a": [1, 2, 3, 4, 5]}))
    assert _refusal(guard.check_body, orjson.dumps({"a": [1, 2, 3, 4, 5, 6]})) == 400
    deep: object = 0
    for _ in range(64):
        deep = [deep]
    assert _refusal(guard.check_body, orjson.dumps({"a": deep})) == 400
    assert _refusal(guard.check_body, b"[1]") == 400
    assert _refusal(guard.check_body, b"{not json") == 400
