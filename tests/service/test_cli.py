"""The command line: `calf-cds token`, and `calf-cds serve` refusing an unusable configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from service.auth.dev_issuer import DEV_ISSUER, DevIssuer
from service.cli import DEFAULT_DATA_DIR, main
from service.config import Settings
from tests.fhir_builders import NOW

AUD = "http://localhost:8080/cds-services/calf-pain"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean CALF_CDS_ environment with its own data folder."""
    for name in ("CALF_CDS_TRUSTED_ISSUERS_FILE", "CALF_CDS_DEV", "CALF_CDS_PUBLIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALF_CDS_DATA_DIR", str(tmp_path / "data"))
    DevIssuer.load_or_create(tmp_path / "data")  # what `calf-cds serve --dev` does at start
    return tmp_path / "data"


def test_token_prints_a_dev_issuer_token_for_the_audience(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The token verifies with the dev issuer's key and carries the aud, tenant and lifetime asked for."""
    assert main(["token", "--aud", AUD, "--tenant", "t1", "--lifetime", "60"], clock=lambda: NOW) == 0
    token = capsys.readouterr().out.strip()
    issuer = DevIssuer.load(data_dir)
    claims = jwt.decode(
        token,
        issuer.private_key.public_key(),
        algorithms=["ES384"],
        audience=AUD,
        options={"verify_exp": False},
    )
    header = jwt.get_unverified_header(token)
    assert (claims["iss"], claims["tenant"], claims["exp"] - claims["iat"]) == (DEV_ISSUER, "t1", 60)
    assert claims["iat"] == int(NOW.timestamp())  # main's clock, not the wall clock
    assert (header["alg"], header["typ"], header["kid"]) == ("ES384", "JWT", issuer.kid)


def test_token_never_creates_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a data folder without a development issuer: exit 1, say how to get one, create nothing."""
    monkeypatch.delenv("CALF_CDS_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["token", "--aud", AUD]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "calf-cds serve --dev" in captured.err
    assert "--data-dir" in captured.err
    assert list(tmp_path.iterdir()) == []


def test_token_finds_the_issuer_of_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--data-dir` names the serving folder from anywhere; the token is signed by its key."""
    served = tmp_path / "served"
    issuer = DevIssuer.load_or_create(served)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.delenv("CALF_CDS_DATA_DIR", raising=False)
    monkeypatch.chdir(elsewhere)
    assert main(["token", "--aud", AUD, "--data-dir", str(served)]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token)["kid"] == issuer.kid
    assert list(elsewhere.iterdir()) == []


def test_token_default_data_dir_is_the_settings_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`calf-cds token` looks where `calf-cds serve` keeps its data when nothing names a folder."""
    monkeypatch.delenv("CALF_CDS_DATA_DIR", raising=False)
    assert Settings().data_dir == DEFAULT_DATA_DIR


def test_each_token_has_its_own_jti(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["token", "--aud", AUD])
    main(["token", "--aud", AUD])
    first, second = capsys.readouterr().out.split()
    assert (
        jwt.decode(first, options={"verify_signature": False})["jti"]
        != jwt.decode(second, options={"verify_signature": False})["jti"]
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--aud", "localhost:8080/cds-services/calf-pain"],
        ["--aud", AUD, "--lifetime", "0"],
        ["--aud", AUD, "--lifetime", "86400"],
    ],
    ids=["aud-not-a-url", "lifetime-zero", "lifetime-a-day"],
)
def test_token_refuses_bad_arguments(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(["token", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "calf-cds token:" in captured.err


def test_serve_refuses_to_start_without_trusted_issuers(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No issuer file and no --dev: exit 2 before binding a port, naming both ways out."""
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "CALF_CDS_TRUSTED_ISSUERS_FILE" in err
    assert "--dev" in err


def test_serve_refuses_a_broken_issuer_file(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps({"issuers": [{"iss": "https://ehr.example.org/", "jwks": {"keys": []}}]}))
    monkeypatch.setenv("CALF_CDS_TRUSTED_ISSUERS_FILE", str(path))
    assert main(["serve"]) == 2
    assert str(path) in capsys.readouterr().err


def test_serve_refuses_a_missing_issuer_file(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALF_CDS_TRUSTED_ISSUERS_FILE", str(tmp_path / "absent.json"))
    assert main(["serve"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_help_and_token_load_no_server_code() -> None:
    """`calf-cds --help` and `calf-cds token` import neither the web stack, the database, the
    settings nor the FHIR client: they start in a fraction of a second (measured with
    `python -X importtime`, not here)."""
    heavy = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pydantic", "pydantic_settings",
             "httpx", "rich", "fhir", "jwt")  # fmt: skip
    code = (
        "import sys, service.cli, service.auth.dev_issuer; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
