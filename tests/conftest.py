"""Shared fixtures: settings in a temporary data folder, a fixed clock, an app client that signs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from service.app import create_app
from service.config import Settings
from service.dev_issuer import DevIssuer
from tests.fhir_builders import NOW
from tests.signing import TestClient, signed_client


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults in a fresh data folder, trusting the development issuer."""
    return Settings(data_dir=tmp_path / "data", dev=True)


@pytest.fixture
def dev_issuer(settings: Settings) -> DevIssuer:
    """The development issuer the `settings` service trusts."""
    return DevIssuer.load_or_create(settings.data_dir)


@pytest.fixture
def clock() -> datetime:
    return NOW


@pytest.fixture
def client(settings: Settings, dev_issuer: DevIssuer) -> Iterator[TestClient]:
    """The app in process, with the clock fixed at NOW; every request signed by the dev issuer."""
    with signed_client(create_app(settings, clock=lambda: NOW), dev_issuer) as test_client:
        yield test_client
