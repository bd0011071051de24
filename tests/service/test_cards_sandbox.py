"""The cards in the real client: the CDS Hooks Sandbox, offline, one patient per card topic.

For each topic a patient from tests/rules/cases is loaded into a throw-away FHIR server and opened
in the Sandbox by ``../shared/tools/sandbox-e2e/run.sh`` (headless Chromium that cannot resolve
any host but loopback). The service runs in this process on an ephemeral port with its clock
fixed at the cases' date, trusting the Sandbox's issuer with its pinned public JWKS.

run.sh finds ``chromium`` on its PATH; this test puts a shim first there
(tests/service/sandbox_chromium.py) that keeps run.sh's offline flags, makes the window 1280×800,
and drives the DOM run over the DevTools pipe: once the first card is shown it measures that card's
summary (with the side), its suggestion button and its explanation link — all must be inside the
first 800 pixels without scrolling — and saves the live page's 1280×800 screenshot in
``tests/artifacts/cards-sandbox/<topic>.png`` (with run.sh's report beside it). The explanation
link the Sandbox received must open the card's page.

**The jku.** The Sandbox puts ``jku: https://sandbox.cds-hooks.org/.well-known/jwks.json`` in every
JWT. On main, calf-cds refuses a ``jku`` that is not allowlisted and *fetches* one that is (branch
``ci`` changes that to "pinned keys win"); offline, a fetch fails and every call is a 401. So this
test allowlists the jku and gives the app's JWKS HTTP client a transport that answers exactly
that URL with the Sandbox's published public JWKS (the same file the issuer pins) and refuses
everything else: no request leaves the process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import service.app
from cds_hooks.models import Card
from service.app import create_app
from service.config import Settings
from tests.service.card_cases import TOPIC_CASES, cards_for, case_now, topic_case

# The pack the service in this test answers with: its default, whatever the golden tests pin.
SERVED_PACK = str(Settings.model_fields["active_pack"].default)

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
RUN_SH = SHARED / "tools" / "sandbox-e2e" / "run.sh"
SANDBOX_JWKS = SHARED / "cds-hooks-sandbox" / ".well-known" / "jwks.json"
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
ARTIFACTS = ROOT / "tests" / "artifacts" / "cards-sandbox"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VIEWPORT = (1280, 800)
OFFLINE = [
    "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
    "--no-proxy-server", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-default-apps", "--disable-extensions", "--disable-breakpad",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-first-run",
    "--no-default-browser-check", "--metrics-recording-only", "--no-pings",
    "--disable-field-trial-config", "--password-store=basic",
]  # fmt: skip
pytestmark = [pytest.mark.e2e, pytest.mark.browser]


class ServiceThread:
    """The app under uvicorn on 127.0.0.1 and an ephemeral port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def sandbox_jwks_client() -> httpx.AsyncClient:
    """The app's JWKS client: it answers nothing, so a call passes only if the pinned keys verify it.

    Pinned keys win over an allowlisted ``jku`` (the Sandbox's key URL is on the internet); were the
    service to fetch it, the fetch would fail here and the Sandbox would show no card.
    """
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(404)))


def patient_files(topic: str, folder: Path) -> list[Path]:
    case = topic_case(topic)
    patient = {**case["patient"], "name": [{"family": "Calf", "given": [topic.replace("-", " ").title()]}]}
    paths = []
    for resource in [patient, *case["resources"]]:
        path = folder / f"{resource['resourceType']}-{resource['id']}.json"
        path.write_text(json.dumps(resource), "utf-8")
        paths.append(path)
    return paths


def chromium_shim(folder: Path) -> Path:
    """A folder whose ``chromium`` runs tests/service/sandbox_chromium.py (for run.sh's PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "chromium"
    shim.write_text(
        f'#!/usr/bin/env bash\nexec python3 "{Path(__file__).parent / "sandbox_chromium.py"}" "$@"\n'
    )
    shim.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def sandbox_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if CHROMIUM is None or not RUN_SH.exists():
        if os.environ.get("CALF_CDS_TEST_REQUIRE_BROWSER"):
            pytest.fail(
                "scripts/test.sh installed Chromium, but chromium or ../shared/tools/sandbox-e2e is missing"
            )
        pytest.skip("needs chromium and ../shared/tools/sandbox-e2e/run.sh")
    folder = tmp_path_factory.mktemp("sandbox-service")
    issuers = folder / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [
        {"iss": SANDBOX_ISSUER, "jwks_file": str(SANDBOX_JWKS), "jku_allowlist": [SANDBOX_JKU]},
    ]}), "utf-8")  # fmt: skip
    settings = Settings(data_dir=folder / "data", trusted_issuers_file=issuers, fhir_fetch=False)
    now = case_now(topic_case("abi"))
    assert all(case_now(topic_case(topic)) == now for topic in TOPIC_CASES)
    patch = pytest.MonkeyPatch()
    patch.setattr(service.app, "new_jwks_http_client", sandbox_jwks_client)
    app = create_app(settings, clock=lambda: now)
    try:
        with ServiceThread(app) as base:
            yield base
    finally:
        patch.undo()


def run_sandbox(base: str, topic: str, out: Path, card: Card) -> dict[str, Any]:
    """run.sh on the topic's patient; the shim saves the screenshot and the first card's layout."""
    folder = out / "patient-in"
    folder.mkdir(parents=True, exist_ok=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert CHROMIUM is not None
    env = {
        **os.environ,
        "PATH": f"{chromium_shim(out / 'shim')}{os.pathsep}{os.environ['PATH']}",
        "REAL_CHROMIUM": CHROMIUM,
        "CARDS_SUMMARY": card.summary,
        "CARDS_BUTTON": card.suggestions[0].label if card.suggestions else "",
        "CARDS_LINK": card.links[0].label,
        "CARDS_PROBE_OUT": str(out / "layout.json"),
        "CARDS_SCREENSHOT": str(ARTIFACTS / f"{topic}.png"),
    }
    if (ROOT / ".cache" / "sekmet-venv" / "bin" / "sekmet").exists():
        env["SEKMET_VENV"] = str(ROOT / ".cache" / "sekmet-venv")  # scripts/test.sh made it
    command = ["bash", str(RUN_SH), "--service-url", base, "--service-id", "calf-pain", "--out", str(out),
               "--patient-json", *map(str, patient_files(topic, folder))]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    for name in ("summary.json", "dom.html", "exchange-response.json", "layout.json", "sandbox.png"):
        if (out / name).exists():
            shutil.copy(out / name, ARTIFACTS / f"{topic}-{name}")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    report: dict[str, Any] = json.loads((out / "summary.json").read_text("utf-8"))
    report["layout"] = json.loads((out / "layout.json").read_text("utf-8"))
    report["response"] = json.loads((out / "exchange-response.json").read_text("utf-8"))
    return report


def explanation_urls(response: Any) -> list[str]:
    cards = response.get("cards", []) if isinstance(response, dict) else []
    return [
        link["url"] for card in cards for link in card.get("links", []) if "/explanations/" in link["url"]
    ]


@pytest.mark.parametrize("topic", sorted(TOPIC_CASES))
def test_card_in_the_sandbox(sandbox_service: str, topic: str, tmp_path: Path) -> None:
    """The topic's card is first; its summary, side, button and link are in view at 1280×800."""
    expected = next(
        c
        for c in cards_for(topic_case(topic), SERVED_PACK)
        if c.source.topic and c.source.topic.code == topic
    )
    report = run_sandbox(sandbox_service, topic, tmp_path / "sandbox", expected)
    assert report["cards"], "no card rendered"
    assert report["cards"][0]["summary"] == expected.summary
    side = expected.summary.split(":", 1)[0]
    assert side in ("Left leg", "Right leg", "Both legs", "Side not recorded")
    layout = report["layout"]
    assert layout["viewport"] == [1280, 800], layout
    assert layout["scrollY"] == 0
    assert layout["firstCardIsThisOne"], layout
    assert layout["summary"]["inView"], layout
    assert layout["summary"]["text"].startswith(side + ":")
    assert layout["link"]["inView"], layout
    if expected.suggestions:
        assert layout["button"]["inView"], layout
    urls = explanation_urls(report["response"])
    assert urls, report["response"]
    with urllib.request.urlopen(urls[0], timeout=10) as page:  # the link the Sandbox was given
        assert page.status == 200
        assert "Why this card" in page.read().decode()
    assert CHROMIUM is not None
    shot = ARTIFACTS / f"{topic}-explanation.png"
    subprocess.run([CHROMIUM, *OFFLINE, f"--user-data-dir={tmp_path / 'page-profile'}", "--window-size=1280,800",
                    f"--screenshot={shot}", urls[0]], capture_output=True, timeout=120, check=True)  # fmt: skip
    assert shot.stat().st_size > 10_000
