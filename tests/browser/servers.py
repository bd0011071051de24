"""Servers for the browser tests, all on loopback and free ports: sekmet-fhir (open, or with a
bearer token), `calf-cds serve --dev`, and the node driver that runs headless Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.test_fhir_e2e import free_port

ROOT = Path(__file__).resolve().parents[2]
CALF_CDS = Path(sys.executable).parent / "calf-cds"
DRIVER = Path(__file__).parent / "assessment.mjs"
ARTIFACTS = ROOT / "tests" / "artifacts" / "assessment"


@contextmanager
def calf_cds(folder: Path) -> Iterator[str]:
    """`calf-cds serve --dev` on a free loopback port; yields its base URL."""
    port = free_port()
    env = os.environ | {"CALF_CDS_DATA_DIR": str(folder / "data")}
    log = folder / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen([str(CALF_CDS), "serve", "--dev", "--port", str(port)], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("calf-cds serve did not start: " + log.read_text(errors="replace"))
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)


def drive(plan: dict[str, Any], *, timeout: float = 180) -> dict[str, Any]:
    """Run the node driver on ``plan``; its JSON report (steps, requests, console, errors)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"ARTIFACTS": str(ARTIFACTS)}
    done = subprocess.run(["node", str(DRIVER), json.dumps(plan)], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"the browser driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report
