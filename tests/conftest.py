"""Shared fixtures: settings in a temporary data folder, a fixed clock, an app client."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

with warnings.catch_warnings():
    # Starlette asks for `httpx2` in its test client; plain httpx still works and is what we ship.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.fhir_builders import NOW


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults in a fresh data folder."""
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def clock() -> datetime:
    return NOW


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app in process, with the clock fixed at NOW."""
    with TestClient(create_app(settings, clock=lambda: NOW)) as test_client:
        yield test_client
