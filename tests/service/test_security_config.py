"""Security settings: validated when read, so a bad value stops the service at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_defaults_are_secure(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.dev is False
    assert settings.trusted_issuers_file is None
    assert settings.jwt_algorithms == ("ES384", "RS384")


@pytest.mark.parametrize("algorithms", ["HS256", "ES384,none", "", "RS384,HS512"])
def test_hmac_none_and_empty_algorithm_lists_are_refused(
    algorithms: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALF_CDS_JWT_ALGORITHMS", algorithms)
    with pytest.raises(ValidationError):
        Settings()


def test_algorithms_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_CDS_JWT_ALGORITHMS", "ES384, RS384, PS384")
    assert Settings().jwt_algorithms == ("ES384", "RS384", "PS384")


@pytest.mark.parametrize(
    "url",
    [
        "cds.example.org",
        "ftp://cds.example.org",
        "https://cds.example.org/?x=1",
        "https://cds.example.org/#f",
    ],
)
def test_public_base_url_must_be_a_plain_absolute_url(url: str) -> None:
    with pytest.raises(ValidationError):
        Settings(public_base_url=url)


def test_public_base_url_loses_its_trailing_slash() -> None:
    assert (
        Settings(public_base_url="https://cds.example.org/calf/").public_base_url
        == "https://cds.example.org/calf"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jwt_leeway_seconds", 301),
        ("jwks_cache_seconds", 5),
        ("max_json_depth", 2),
        ("max_string_length", 10),
    ],
)
def test_limits_outside_their_range_are_refused(name: str, value: int) -> None:
    with pytest.raises(ValidationError):
        Settings(**{name: value})
