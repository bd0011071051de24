"""The order hooks in the real client: the CDS Hooks Sandbox's order views, offline (issue 17).

A patient from tests/rules/order-cases is loaded into run.sh's throw-away FHIR server and opened in
the prebuilt, unmodified Sandbox (``../shared/cds-hooks-sandbox``) by
``../shared/tools/sandbox-e2e/run.sh``: headless Chromium that cannot resolve any host but loopback
(run.sh exits 3 if its net logs show anything beyond it). The service runs in this process on an
ephemeral port with its clock fixed at the cases' date, trusting the Sandbox's issuer with its
pinned public JWKS (as tests/service/test_cards_sandbox.py does).

run.sh only opens the Patient View; a ``chromium`` shim (tests/service/sandbox_orders_chromium.py)
works the order views like a clinician over the DevTools pipe: the "PAMA Imaging" tab, a study
picked in its "Search orders" box (the Sandbox then calls ``order-select`` with a draft
ServiceRequest ``example-request-id`` coded in CPT), our card, and a click on its suggestion (the
Sandbox then POSTs feedback ``accepted``). The service's audit trail must hold the order-select
call, its card and the accepted feedback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import service.app
from service.app import create_app
from service.config import Settings
from service.store.schema import feedback, hook_calls, hook_cards
from tests.service.test_cards_sandbox import (
    CHROMIUM,
    RUN_SH,
    SANDBOX_ISSUER,
    SANDBOX_JKU,
    SANDBOX_JWKS,
    ServiceThread,
    sandbox_jwks_client,
)

__all__: list[str] = []

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
ORDER_CASES = ROOT / "tests" / "rules" / "order-cases" / "orders.json"
ARTIFACTS = ROOT / "tests" / "artifacts" / "orders-sandbox"
CASES_NOW = datetime.fromisoformat("2026-11-20T09:00:00+00:00")  # every order case's "now"


def order_case(case_id: str) -> dict[str, Any]:
    cases: list[dict[str, Any]] = json.loads(ORDER_CASES.read_text("utf-8"))
    case = next(c for c in cases if c["id"] == case_id)
    assert datetime.fromisoformat(case["now"].replace("Z", "+00:00")) == CASES_NOW
    return case


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if CHROMIUM is None or not RUN_SH.exists():
        if os.environ.get("CALF_CDS_TEST_REQUIRE_BROWSER"):
            pytest.fail(
                "scripts/test.sh installed Chromium, but chromium or ../shared/tools/sandbox-e2e is missing"
            )
        pytest.skip("needs chromium and ../shared/tools/sandbox-e2e/run.sh")
    folder = tmp_path_factory.mktemp("orders-sandbox-service")
    issuers = folder / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [
        {"iss": SANDBOX_ISSUER, "jwks_file": str(SANDBOX_JWKS), "jku_allowlist": [SANDBOX_JKU]},
    ]}), "utf-8")  # fmt: skip
    data_dir = folder / "data"
    settings = Settings(data_dir=data_dir, trusted_issuers_file=issuers, fhir_fetch=False)
    patch = pytest.MonkeyPatch()
    patch.setattr(service.app, "new_jwks_http_client", sandbox_jwks_client)
    app = create_app(settings, clock=lambda: CASES_NOW)
    try:
        with ServiceThread(app) as base:
            yield base, data_dir
    finally:
        patch.undo()


def patient_files(case: dict[str, Any], name: str, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    patient = {**case["patient"], "name": [{"family": "Calf", "given": [name]}]}
    paths = []
    for resource in [patient, *case["resources"]]:
        path = folder / f"{resource['resourceType']}-{resource['id']}.json"
        path.write_text(json.dumps(resource), "utf-8")
        paths.append(path)
    return paths


def drive_sandbox(base: str, case: dict[str, Any], name: str, steps: list[dict[str, Any]], out: Path) -> Any:
    """run.sh on the case's patient, the shim doing ``steps``; the steps' outcomes (the browser stayed
    on loopback in both Chromium runs)."""
    shim = out / "shim"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "chromium").write_text(
        f'#!/usr/bin/env bash\nexec python3 "{Path(__file__).parent / "sandbox_orders_chromium.py"}" "$@"\n'
    )
    (shim / "chromium").chmod(0o755)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert CHROMIUM is not None
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "REAL_CHROMIUM": CHROMIUM,
        "ORDERS_STEPS": json.dumps(steps),
        "ORDERS_PROBE_OUT": str(out / "steps.json"),
        "ORDERS_SCREENSHOT": str(ARTIFACTS / f"{case['id']}.png"),
    }
    if (ROOT / ".cache" / "sekmet-venv" / "bin" / "sekmet").exists():
        env["SEKMET_VENV"] = str(ROOT / ".cache" / "sekmet-venv")  # scripts/test.sh made it
    files = patient_files(case, name, out / "patient-in")
    command = ["bash", str(RUN_SH), "--service-url", base, "--service-id", "calf-pain", "--out", str(out),
               "--patient-json", *map(str, files)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    for file in ("steps.json", "summary.json", "dom.html"):
        if (out / file).exists():
            shutil.copy(out / file, ARTIFACTS / f"{case['id']}-{file}")
    assert done.returncode != 3, "the browser reached beyond loopback:\n" + done.stdout[-4000:]
    outcomes = json.loads((out / "steps.json").read_text("utf-8")) if (out / "steps.json").exists() else []
    assert done.returncode == 0, (
        json.dumps(outcomes, indent=1)[-3000:] + done.stdout[-3000:] + done.stderr[-2000:]
    )
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    assert summary["network"]["netlogs_read"] == 2, summary["network"]  # the driven run's net log too
    assert summary["network"]["leak"] is False, summary["network"]
    return outcomes


def browser_posts(out: Path) -> list[str]:
    """The paths the browser POSTed to our service (Chromium's net log), each with its status."""
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    return [
        f"{url.split('/cds-services', 1)[1]} {status}"
        for method, url, status in summary["browser_requests"]["service"]
        if method == "POST"
    ]


def rows(data_dir: Path, table: sa.Table, where: Any, expected: int = 1) -> list[dict[str, Any]]:
    """The audit rows of ``table`` matching ``where`` once ``expected`` are written (the writer batches)."""
    engine = sa.create_engine(f"sqlite:///{data_dir / 'audit.sqlite3'}")
    try:
        deadline = time.monotonic() + 15  # a guard, not a timing assert
        while True:
            with engine.connect() as connection:
                found = [dict(row) for row in connection.execute(sa.select(table).where(where)).mappings()]
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.1)
    finally:
        engine.dispose()


def audited_cards(data_dir: Path, fhir_base: str, service_id: str) -> list[dict[str, Any]]:
    """The cards our service audited for calls of ``service_id`` from the Sandbox on ``fhir_base``."""
    calls = rows(data_dir, hook_calls, sa.and_(hook_calls.c.fhir_server == fhir_base,
                                               hook_calls.c.service_id == service_id))  # fmt: skip
    assert calls, f"no {service_id} call audited"
    assert all(call["status_code"] == 200 for call in calls), calls
    call_ids = [call["call_id"] for call in calls]
    return rows(data_dir, hook_cards, hook_cards.c.call_id.in_(call_ids), expected=0)


def test_pama_cta_without_abi_shows_abi_first_and_accepting_sends_feedback(
    service_url: tuple[str, Path], tmp_path: Path
) -> None:
    """Selecting a lower-extremity CTA (CPT 73706) with no ABI on file: our "ABI first" card in the
    PAMA view; accepting "Order a resting ABI instead" makes the Sandbox POST feedback "accepted",
    which the service stores against the order-select call's card and suggestion."""
    base, data_dir = service_url
    case = order_case("ord-pama-cta-73706-no-abi-abi-first")
    label = "Order a resting ABI instead of the imaging"
    steps = [
        {"op": "wait_text", "text": "Cta Calf"},
        {"op": "click", "text": "PAMA Imaging"},
        {"op": "pick", "placeholder": "Search orders", "type": "73706",
         "option": "Computed tomographic angiography, lower extremity"},
        {"op": "cards", "name": "select", "expect": "Resting ABI first"},
        {"op": "accept", "card": "Resting ABI first", "label": label},
    ]  # fmt: skip
    outcomes = drive_sandbox(base, case, "Cta", steps, tmp_path / "sandbox")
    assert [o["ok"] for o in outcomes] == [True] * len(steps), json.dumps(outcomes, indent=1)
    (card,) = [c for c in outcomes[3]["cards"] if "Resting ABI first" in c["text"]]
    assert card["text"].startswith("Right leg: Resting ABI first")
    assert label in card["buttons"]
    assert "Add a resting ABI (keep the imaging)" in card["buttons"]
    assert "calf-pain@1.2.0" in card["text"]
    posts = browser_posts(tmp_path / "sandbox")
    assert "/calf-pain-order-select HTTP/1.1 200 OK" in posts, posts
    assert "/calf-pain-order-select/feedback HTTP/1.1 200 OK" in posts, posts

    fhir_base = json.loads((tmp_path / "sandbox" / "summary.json").read_text("utf-8"))["fhir_base"]
    cards = audited_cards(data_dir, fhir_base, "calf-pain-order-select")
    (abi,) = [c for c in cards if c["topic"] == "abi"]
    assert abi["rule_id"] == "order-arterial-imaging-abi-first"
    (accepted,) = rows(data_dir, feedback, feedback.c.card_uuid == abi["card_uuid"])
    assert accepted["outcome"] == "accepted"
    assert accepted["service_id"] == "calf-pain-order-select"
    assert accepted["call_id"] == abi["call_id"]
    assert accepted["topic"] == "abi"
    assert accepted["rule_id"] == "order-arterial-imaging-abi-first"
    assert len(accepted["accepted_suggestions"]) == 1
    assert accepted["accepted_suggestions"][0] in abi["suggestions"]
    assert accepted["client"]["iss"] == SANDBOX_ISSUER


def test_rx_sign_of_an_analgesic_while_dvt_is_likely_warns(
    service_url: tuple[str, Path], tmp_path: Path
) -> None:
    """Signing ibuprofen in the Rx Sign view while DVT is likely (Wells 2) and not excluded: the
    Sandbox calls order-sign (only on "Sign Order") with a draft MedicationRequest coded in RxNorm,
    shows our warning, and accepting its ultrasound sends feedback for the order-sign service."""
    base, data_dir = service_url
    case = order_case("ord-ibuprofen-alone-dvt-likely-add-ultrasound")
    label = "Order proximal leg-vein ultrasound (hold rest-and-ice)"
    steps = [
        {"op": "wait_text", "text": "Ibu Calf"},
        {"op": "click", "text": "Rx Sign"},
        {"op": "type", "name": "medication-input", "text": "Ibuprofen"},
        {"op": "choose", "text": "Ibuprofen"},
        {"op": "click", "text": "Sign Order"},
        {"op": "cards", "name": "sign", "expect": "proximal leg-vein ultrasound within 4 hours"},
        {"op": "accept", "card": "proximal leg-vein ultrasound within 4 hours", "label": label},
    ]  # fmt: skip
    outcomes = drive_sandbox(base, case, "Ibu", steps, tmp_path / "sandbox")
    assert [o["ok"] for o in outcomes] == [True] * len(steps), json.dumps(outcomes, indent=1)
    assert outcomes[3]["chosen"].startswith("Ibuprofen")
    (card,) = outcomes[5]["cards"]
    assert card["text"].startswith("Right leg: Add a proximal leg-vein ultrasound within 4 hours")
    assert label in card["buttons"]
    posts = browser_posts(tmp_path / "sandbox")
    assert "/calf-pain-order-sign HTTP/1.1 200 OK" in posts, posts
    assert "/calf-pain-order-sign/feedback HTTP/1.1 200 OK" in posts, posts

    fhir_base = json.loads((tmp_path / "sandbox" / "summary.json").read_text("utf-8"))["fhir_base"]
    (warning,) = audited_cards(data_dir, fhir_base, "calf-pain-order-sign")
    assert warning["rule_id"] == "order-rest-ice-or-analgesic-dvt-open"
    assert warning["indicator"] == "warning"
    calls = rows(data_dir, hook_calls, hook_calls.c.call_id == warning["call_id"])
    assert calls[0]["hook"] == "order-sign"
    (accepted,) = rows(data_dir, feedback, feedback.c.card_uuid == warning["card_uuid"])
    assert accepted["outcome"] == "accepted"
    assert accepted["service_id"] == "calf-pain-order-sign"
    assert accepted["accepted_suggestions"] == warning["suggestions"][:1]


PAMA_STUDIES = {
    # case id: (CPT typed in "Search orders", the study offered, the card's words, topic, rule, indicator)
    "ord-pama-venogram-78457-ultrasound-instead": (
        "78457", "Venous thrombosis imaging, venogram; unilateral", "ultrasound", "duplex-dvt",
        "order-venography-ultrasound", "info",
    ),
    "ord-pama-lumbar-mri-72148-neurogenic-claudication-info": (
        "72148", "Magnetic resonance (eg, proton) imaging, spinal canal and contents, lumbar", "surgery or an injection",
        "lumbar-imaging", "order-lumbar-mri-intervention", "info",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case_id", sorted(PAMA_STUDIES))
def test_pama_study_gets_its_card(service_url: tuple[str, Path], tmp_path: Path, case_id: str) -> None:
    """A venogram for suspected DVT gets the ultrasound card; a lumbar MRI for neurogenic
    claudication the info card (intervention considered), each from order-select in the PAMA view."""
    base, data_dir = service_url
    cpt, study, words, topic, rule, indicator = PAMA_STUDIES[case_id]
    steps = [
        {"op": "wait_text", "text": "Pama Calf"},
        {"op": "click", "text": "PAMA Imaging"},
        {"op": "pick", "placeholder": "Search orders", "type": cpt, "option": study},
        {"op": "cards", "name": "select", "expect": words},
    ]  # fmt: skip
    outcomes = drive_sandbox(base, order_case(case_id), "Pama", steps, tmp_path / "sandbox")
    assert [o["ok"] for o in outcomes] == [True] * len(steps), json.dumps(outcomes, indent=1)
    assert [c["text"].startswith("Right leg: ") for c in outcomes[3]["cards"]] == [True]

    fhir_base = json.loads((tmp_path / "sandbox" / "summary.json").read_text("utf-8"))["fhir_base"]
    (card,) = audited_cards(data_dir, fhir_base, "calf-pain-order-select")
    assert (card["topic"], card["rule_id"], card["indicator"]) == (topic, rule, indicator)
