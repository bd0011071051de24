"""The real CDS Hooks Sandbox against the real service, offline: its signed calls are accepted with
pinned keys, and its Patient View renders our card.

``calf-cds serve`` runs as in production (no ``--dev``) on an ephemeral loopback port, trusting the
Sandbox's issuer with its public JWK Set as a ``jwks_file`` and its ``jku`` on the allowlist (as
``../shared/tools/sandbox-e2e/README.md`` says). ``../shared/tools/sandbox-e2e/run.sh`` then opens
the prebuilt Sandbox (``../shared/cds-hooks-sandbox``) in headless Chromium on its built-in
calf-pain patient, with a local FHIR server; Chromium cannot resolve any host but loopback, and
run.sh exits 3 if its net logs show anything beyond loopback. The ``jku`` is on the internet, so a
service that fetched it would refuse every call. run.sh does not click, so the feedback a clinician
would send by dismissing the card is signed here with the Sandbox's own key, which the Sandbox
publishes in its bundle (trusted in this test only).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa

from service.store.schema import feedback, hook_calls
from tests.browser.confinement import REQUIRE_ENV, require_chromium
from tests.service.test_e2e import CALF_CDS, ROOT, clean_env, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SHARED = ROOT.parent / "shared"
RUN_SH = SHARED / "tools" / "sandbox-e2e" / "run.sh"
SANDBOX_BUILD = SHARED / "cds-hooks-sandbox"
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
SEKMET_VENV = ROOT / ".cache" / "sekmet-venv"
NON_ADHERENCE = "http://calf-cds.org/fhir/CodeSystem/override-reason"  # our own reasons (issue 13)


@dataclass(frozen=True)
class SandboxRun:
    base: str
    data_dir: Path
    log_path: Path
    out: Path
    returncode: int
    stdout: str

    def summary(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.out / "summary.json").read_text())
        return document


def _require_tools() -> None:
    require_chromium()
    if not RUN_SH.is_file() or not (SANDBOX_BUILD / "app.bundle.js").is_file():
        message = f"the CDS Hooks Sandbox and its driver are not beside the repository ({SHARED})"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def sandbox_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxRun]:
    """The service started as in production, trusting the Sandbox; run.sh run against it once."""
    _require_tools()
    folder = tmp_path_factory.mktemp("sandbox")
    issuers = folder / "trusted-issuers.json"
    issuers.write_text(json.dumps({"issuers": [{
        "iss": SANDBOX_ISS,
        "jwks_file": str(SANDBOX_BUILD / ".well-known" / "jwks.json"),
        "jku_allowlist": [SANDBOX_JKU],
    }]}))  # fmt: skip
    data_dir = folder / "data"
    env = clean_env(data_dir) | {
        "CALF_CDS_TRUSTED_ISSUERS_FILE": str(issuers),
        # The Sandbox's FHIR server (run.sh's) is plain http on loopback: where the service guards
        # its fhirServer targets, this is the one exception a test of a production-mode service needs.
        "CALF_CDS_FHIR_ALLOW_HTTP_LOOPBACK": "true",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CALF_CDS, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90  # a guard against a server that never starts
            while True:
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        pytest.fail("server did not start: " + log_path.read_text())
                    time.sleep(0.1)
            out = folder / "out"
            run_env = clean_env(data_dir)
            if (SEKMET_VENV / "bin" / "sekmet").is_file():  # scripts/test.sh's; else run.sh makes its own
                run_env["SEKMET_VENV"] = str(SEKMET_VENV)
            done = subprocess.run(
                ["bash", str(RUN_SH), "--service-url", base, "--service-id", "calf-pain", "--out", str(out)],
                env=run_env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            yield SandboxRun(base, data_dir, log_path, out, done.returncode, done.stdout + done.stderr)
        finally:
            process.terminate()
            process.wait(timeout=30)


def _rows(data_dir: Path, table: sa.Table, expected: int) -> list[dict[str, Any]]:
    """The audit rows of ``table`` once at least ``expected`` are written (the writer batches)."""
    engine = sa.create_engine(f"sqlite:///{data_dir / 'audit.sqlite3'}")
    try:
        deadline = time.monotonic() + 15
        while True:
            with engine.connect() as connection:
                rows = [dict(row) for row in connection.execute(sa.select(table)).mappings()]
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)
    finally:
        engine.dispose()


def _log_lines(run: SandboxRun) -> list[dict[str, Any]]:
    lines = []
    for line in run.log_path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_sandbox_renders_our_card_offline(sandbox_run: SandboxRun) -> None:
    """run.sh exits 0 (a card rendered; 3 would mean the browser left loopback) and the card is ours."""
    assert sandbox_run.returncode != 3, "the browser reached beyond loopback:\n" + sandbox_run.stdout[-4000:]
    assert sandbox_run.returncode == 0, sandbox_run.stdout[-4000:]
    summary = sandbox_run.summary()
    assert summary["network"]["leak"] is False
    assert summary["cards"], "no card rendered"
    assert all("calf-pain" in card["source"] for card in summary["cards"]), summary["cards"]


def test_sandbox_calls_are_accepted_with_pinned_keys(sandbox_run: SandboxRun) -> None:
    """Discovery and the hook, signed by the Sandbox with a jku, are accepted without fetching it."""
    assert sandbox_run.returncode == 0, sandbox_run.stdout[-4000:]
    requests = [line for line in _log_lines(sandbox_run) if line.get("message") == "request"]
    answered = {(line.get("method"), line.get("endpoint"), line.get("status")) for line in requests}
    assert ("GET", "/cds-services", 200) in answered
    assert ("POST", "/cds-services/calf-pain", 200) in answered
    refusals = [line["message"] for line in _log_lines(sandbox_run) if "refused" in line.get("message", "")]
    assert all(": missing-token " in message for message in refusals), refusals  # run.sh's unsigned pre-check
    assert "cannot load JWK Set" not in sandbox_run.log_path.read_text()  # the jku was never fetched
    calls = _rows(sandbox_run.data_dir, hook_calls, 1)
    assert calls
    for call in calls:
        assert (call["client"]["iss"], call["client"]["kid"]) == (SANDBOX_ISS, SANDBOX_KID)


def _sandbox_private_key() -> str:
    """The Sandbox's signing key, as its bundle publishes it (a PEM with escaped newlines)."""
    bundle = (SANDBOX_BUILD / "app.bundle.js").read_text("utf-8", errors="replace")
    found = re.search(r"-----BEGIN PRIVATE KEY-----(?:\\n|[A-Za-z0-9+/=])+?-----END PRIVATE KEY-----", bundle)
    assert found, "no private key in the Sandbox bundle"
    return found.group(0).replace("\\n", "\n")


def test_feedback_signed_by_the_sandbox_is_audited_with_our_display(sandbox_run: SandboxRun) -> None:
    """Dismissing the card as the Sandbox does (reason code and system only, its JWT with jku):
    accepted with pinned keys, and the audit keeps the display our card offered for that code."""
    assert sandbox_run.returncode == 0, sandbox_run.stdout[-4000:]
    response = json.loads((sandbox_run.out / "exchange-response.json").read_text())
    card = response["cards"][0]
    reason = card["overrideReasons"][0]
    url = f"{sandbox_run.base}/cds-services/calf-pain/feedback"
    now = int(time.time())
    token = jwt.encode(
        {"iss": SANDBOX_ISS, "aud": url, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
        _sandbox_private_key(),
        algorithm="ES384",
        headers={"typ": "JWT", "kid": SANDBOX_KID, "jku": SANDBOX_JKU},
    )
    body = {"feedback": [{
        "card": card["uuid"],
        "outcome": "overridden",
        "overrideReason": {"reason": {"code": reason["code"], "system": reason["system"]}},
        "outcomeTimestamp": "2026-11-20T09:06:00Z",
    }]}  # fmt: skip
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    (row,) = _rows(sandbox_run.data_dir, feedback, 1)
    assert row["card_uuid"] == card["uuid"]
    assert row["override_reason_system"] == NON_ADHERENCE
    assert row["override_reason_code"] == reason["code"]
    assert row["override_reason_display"] == reason["display"]
    assert row["call_id"] is not None  # linked to the Sandbox's audited call
