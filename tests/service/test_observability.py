"""Metrics at /metrics, JSON log lines with a request id, and no PHI or tokens in either."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.auth.dev_issuer import DevIssuer
from service.ops import telemetry
from service.ops.telemetry import JsonFormatter, log_config, request_id_from
from tests.fhir_builders import calf_pain, finding, hook_request, quantity
from tests.signing import dev_client

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
DVT = [
    calf_pain(),
    finding("calf-circumference-difference", quantity(3.4, "cm")),
    finding("entire-leg-swollen"),
]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(client: TestClient, name: str, **labels: str) -> float:
    return samples(client.get("/metrics").text).get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the service logs, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("calf_cds")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    """/metrics is the Prometheus exposition format and names every calf_cds metric family."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "calf_cds_request_duration_seconds",
        "calf_cds_cards",
        "calf_cds_rule_errors",
        "calf_cds_fhir_fetch_duration_seconds",
        "calf_cds_fhir_fetch_failures",
        "calf_cds_auth_rejections",
        "calf_cds_audit_queue_depth",
        "calf_cds_audit_spool_depth",
        "calf_cds_audit_records",
        "calf_cds_rule_pack_info",
    } <= names


def test_a_hook_call_counts_its_latency_and_cards(client: TestClient) -> None:
    """The latency histogram is per service endpoint and status; cards per topic and indicator."""
    endpoint = {"endpoint": "/cds-services/calf-pain", "method": "POST", "status": "200"}
    calls = value(client, "calf_cds_request_duration_seconds_count", **endpoint)
    cards = value(
        client, "calf_cds_cards_total", service="calf-pain", topic="duplex-dvt", indicator="warning"
    )
    assert client.post("/cds-services/calf-pain", json=hook_request(DVT)).status_code == 200
    assert value(client, "calf_cds_request_duration_seconds_count", **endpoint) == calls + 1
    assert (
        value(client, "calf_cds_cards_total", service="calf-pain", topic="duplex-dvt", indicator="warning")
        == cards + 1
    )


def test_clients_cannot_invent_label_values(client: TestClient) -> None:
    """Unknown services and paths are counted under their route template, not their raw path."""
    client.post("/cds-services/made-up-123", json=hook_request(DVT))
    client.get("/no/such/path")
    labels = {dict(key[1]).get("endpoint") for key in samples(client.get("/metrics").text)}
    assert "/cds-services/{service_id}" in labels
    assert "unmatched" in labels
    assert not any("made-up" in str(label) or "such" in str(label) for label in labels)


def test_the_rule_pack_in_service_is_published(client: TestClient) -> None:
    """calf_cds_rule_pack_info names the active pack with its version and hash."""
    info = [
        dict(key[1])
        for key in samples(client.get("/metrics").text)
        if key[0] == "calf_cds_rule_pack_info" and dict(key[1])["role"] == "active"
    ]
    active = client.app.state.runtime.service.active  # type: ignore[attr-defined]
    assert [(i["pack"], i["version"], i["hash"]) for i in info] == [
        (active.id, active.version, active.content_hash)
    ]


def test_fetch_and_auth_counters_for_other_modules(client: TestClient) -> None:
    """The FHIR fetch and JWT verification report through observe_fetch and count_auth_rejection."""
    failures = value(client, "calf_cds_fhir_fetch_failures_total", reason="timeout")
    rejections = value(client, "calf_cds_auth_rejections_total", reason="expired")
    telemetry.observe_fetch(0.2, "ok")
    telemetry.observe_fetch(5.0, "timeout")
    telemetry.count_auth_rejection("expired")
    assert value(client, "calf_cds_fhir_fetch_failures_total", reason="timeout") == failures + 1
    assert value(client, "calf_cds_fhir_fetch_failures_total", reason="ok") == 0
    assert value(client, "calf_cds_auth_rejections_total", reason="expired") == rejections + 1


def test_rule_errors_are_counted_per_rule(client: TestClient) -> None:
    """A failing rule is counted by pack, version and rule id (never by free text)."""
    before = value(
        client, "calf_cds_rule_errors_total", pack="calf-pain", version="0.1.0", rule="abi-resting"
    )
    telemetry.observe_hook_call("calf-pain", [], ["abi-resting: TypeError"], ("calf-pain", "0.1.0"))
    after = value(client, "calf_cds_rule_errors_total", pack="calf-pain", version="0.1.0", rule="abi-resting")
    assert after == before + 1


def test_workers_add_up_through_the_multiprocess_folder(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, what two processes count is summed by a third that renders."""
    folder = tmp_path / "metrics"
    telemetry.prepare_multiprocess_dir(folder)
    os.environ.pop(telemetry.MULTIPROC_ENV)  # prepare sets it for this process; the children get it below
    env = os.environ | {telemetry.MULTIPROC_ENV: str(folder), "PYTHONPATH": str(ROOT)}
    count = "from service.ops import telemetry; telemetry.count_auth_rejection('replayed')"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    render = "import sys; from service.ops import telemetry; sys.stdout.write(telemetry.render().decode())"
    text = subprocess.run(
        [sys.executable, "-c", render], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    assert samples(text)[("calf_cds_auth_rejections_total", frozenset({("reason", "replayed")}))] == 2


def test_a_stale_multiprocess_folder_is_emptied(tmp_path: Path) -> None:
    """Values left by an earlier run are not added to this one's."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"old")
    (folder / "keep.txt").write_text("not ours")
    telemetry.prepare_multiprocess_dir(folder)
    os.environ.pop(telemetry.MULTIPROC_ENV)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


# -- logs and request ids ----------------------------------------------------------------


def test_request_id_is_taken_from_the_client_or_generated(client: TestClient) -> None:
    """X-Request-ID is echoed when it is a plain token, replaced when it is anything else."""
    assert (
        client.get("/healthz", headers={"X-Request-ID": "ehr-42.a:b"}).headers["x-request-id"] == "ehr-42.a:b"
    )
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    for hostile in ("x" * 129, 'quote"and space', "new\\nline"):
        assert client.get("/healthz", headers={"X-Request-ID": hostile}).headers["x-request-id"] != hostile
    assert request_id_from("caf\u00e9") != "caf\u00e9"


def test_one_json_log_line_per_call_without_phi_or_tokens(
    client: TestClient, dev_issuer: DevIssuer, log_lines: io.StringIO
) -> None:
    """The hook call logs one JSON line with its request id and call id; no patient id, no token."""
    body = hook_request(DVT, patient_id="patient-7c1f9e") | {
        "fhirServer": "https://ehr.example.org/fhir",
        "fhirAuthorization": {
            "access_token": "secret-token-123",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds",
        },
    }
    for resource in body["prefetch"]["observations"]["entry"]:
        resource["resource"]["subject"]["reference"] = "Patient/patient-7c1f9e"
    jwt = dev_issuer.token("http://testserver/cds-services/calf-pain", now=time.time())
    response = client.post(
        "/cds-services/calf-pain",
        json=body,
        headers={"X-Request-ID": "req-1", "Authorization": f"Bearer {jwt}"},
    )
    assert response.status_code == 200
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    (line,) = [entry for entry in lines if entry.get("request_id") == "req-1"]
    assert line["message"] == "request"
    assert (line["endpoint"], line["status"], line["cards"]) == ("/cds-services/calf-pain", 200, 1)
    assert len(line["call_id"]) == 36
    text = log_lines.getvalue()
    for secret in ("patient-7c1f9e", "secret-token-123", jwt):
        assert secret not in text


def test_exceptions_are_logged_without_their_message() -> None:
    """An exception's message may quote the input: the log keeps its type and where it happened."""

    def fail(patient: str) -> Any:
        raise KeyError(patient)

    try:
        fail("patient-7c1f9e")
    except KeyError:
        record = logging.LogRecord("calf_cds", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["exc_type"] == "KeyError"
    assert any("in fail" in frame for frame in line["stack"])
    assert "patient-7c1f9e" not in json.dumps(line)


def test_log_config_sends_uvicorn_through_the_json_formatter() -> None:
    """uvicorn's own messages are JSON lines too, and its access log is replaced by ours (the
    end-to-end shutdown test reads a real server's log)."""
    config = log_config("debug")
    assert config["loggers"]["uvicorn"]["handlers"] == ["stderr"]
    assert config["loggers"]["uvicorn.access"]["handlers"] == []
    assert config["loggers"]["calf_cds"]["level"] == "DEBUG"


def test_fhir_fetches_are_timed_by_outcome(tmp_path: Path) -> None:
    """The FHIR fetcher counts a fetch that worked as `ok` and one the server failed by reason."""
    import httpx
    import respx

    from service.app import create_app
    from service.config import Settings
    from service.hooks.fhir_fetcher import FhirFetcher, fetch_policy
    from tests.fake_dns import FakeDns
    from tests.service.test_fetching import fetching_request, fhir_json, serve_patient

    settings = Settings(data_dir=tmp_path / "data", fhir_max_retries=0, dev=True)
    router = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
    fetcher = FhirFetcher(fetch_policy(settings), transport=httpx.MockTransport(router.async_handler))
    with dev_client(create_app(settings, fetcher=fetcher, resolver=FakeDns()), settings) as client:
        ok = value(client, "calf_cds_fhir_fetch_duration_seconds_count", outcome="ok")
        failed = value(client, "calf_cds_fhir_fetch_failures_total", reason="unavailable")
        routes = serve_patient(router, [], [])
        assert client.post("/cds-services/calf-pain", json=fetching_request()).status_code == 200
        routes["conditions"].mock(return_value=fhir_json({}, status=503))
        assert client.post("/cds-services/calf-pain", json=fetching_request()).status_code == 412
        assert value(client, "calf_cds_fhir_fetch_duration_seconds_count", outcome="ok") == ok + 1
        assert value(client, "calf_cds_fhir_fetch_failures_total", reason="unavailable") == failed + 1


def test_auth_rejections_are_counted_by_reason(client: TestClient, log_lines: io.StringIO) -> None:
    """A refused JWT is a bare 401, counted in calf_cds_auth_rejections_total by its reason; the
    token never reaches the log."""
    before = value(client, "calf_cds_auth_rejections_total", reason="typ")
    forged = "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"  # its header has no "typ": "JWT"
    response = client.post(
        "/cds-services/calf-pain", json=hook_request(DVT), headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
    assert value(client, "calf_cds_auth_rejections_total", reason="typ") == before + 1
    assert forged not in log_lines.getvalue()
