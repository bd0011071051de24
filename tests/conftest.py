"""Shared fixtures: settings in a temporary data folder, a fixed clock, an app client that signs.

``--year-ahead`` (run by ``scripts/test.sh`` over the clinical, CLI and in-process app suites)
moves the wall clock of this process one year past both the fixtures' ``NOW`` and today, and
lets it tick: every test must give the same outcome as without it. Code that reads the real
clock below an entry point (instead of the injected ``clock``) then sees fixtures a year old, so
look-back windows, findings' recency, received times and retention come out differently and the
test fails. Only the wall clock moves (``time.time``, ``datetime.now``, ``date.today``);
monotonic clocks do not, so timeouts keep working. Tests that start servers in other processes
(marked ``e2e``) cannot share the moved clock and are not part of that run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from service.app import create_app
from service.auth.dev_issuer import DevIssuer
from service.config import Settings
from tests.fhir_builders import NOW
from tests.signing import TestClient, signed_client

YEAR_AHEAD = timedelta(days=365)
_TRAVELLER = pytest.StashKey[time_machine.travel]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--year-ahead",
        action="store_true",
        help="run with the wall clock one year past the fixtures' NOW and today (see tests/conftest.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--year-ahead"):
        real_now = datetime.now(UTC)
        traveller = time_machine.travel(max(real_now, NOW) + YEAR_AHEAD, tick=True)
        traveller.start()
        config.stash[_TRAVELLER] = traveller


def pytest_unconfigure(config: pytest.Config) -> None:
    traveller = config.stash.get(_TRAVELLER, None)
    if traveller is not None:
        traveller.stop()


def pytest_report_header(config: pytest.Config) -> str | None:
    if _TRAVELLER in config.stash:
        return f"--year-ahead: the wall clock reads {datetime.now(UTC).isoformat(timespec='seconds')}"
    return None


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
