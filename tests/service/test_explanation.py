"""A card's explanation page: reached from the card's signed link, refused when expired or forged."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, create_engine
from starlette.testclient import TestClient

from service.app import create_app
from service.auth.dev_issuer import DevIssuer
from service.config import Settings
from service.hooks.explanation import SECRET_FILE, LinkError, LinkSigner, load_secret
from service.store.schema import card_explanations
from service.store.sink import StoredExplanation
from service.store.writers import ExplanationStore
from tests.fhir_builders import NOW, calf_pain, finding, hook_request, quantity
from tests.signing import signed_client

DVT = [
    calf_pain(),
    finding("calf-circumference-difference", quantity(3.4, "cm")),
    finding("entire-leg-swollen"),
]


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> Any:
        return self.now


@pytest.fixture
def moving_clock() -> Clock:
    return Clock()


@pytest.fixture
def app_client(settings: Settings, dev_issuer: DevIssuer, moving_clock: Clock) -> Iterator[TestClient]:
    with signed_client(create_app(settings, clock=moving_clock), dev_issuer) as test_client:
        yield test_client


def explanation_link(client: TestClient) -> str:
    response = client.post("/cds-services/calf-pain", json=hook_request(DVT))
    (card,) = response.json()["cards"]
    links = [link["url"] for link in card["links"] if "/explanations/" in link["url"]]
    assert len(links) == 1
    assert card["links"][0]["type"] == "absolute"
    return str(links[0])


def page(url: str, client: TestClient, **headers: str) -> Any:
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}", headers=headers, auth=None)


def test_card_link_opens_its_explanation(app_client: TestClient) -> None:
    """The link works without a client JWT and shows criteria, the Wells table, evidence and the pack."""
    response = page(explanation_link(app_client), app_client)
    assert response.status_code == 200
    body = response.text
    assert "Wells DVT score: 2" in body
    assert "Entire leg swollen" in body
    assert "not recorded" in body
    assert "NICE NG158" in body
    assert "sha256&#58;" in body
    assert "<td>Calf circumference difference</td><td>3.4 cm</td>" in body


def test_page_is_not_cached_and_runs_no_script(app_client: TestClient) -> None:
    """no-store, a CSP without script or inline style, no referrer; the HTML has no script at all."""
    response = page(explanation_link(app_client), app_client)
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in response.text
    assert "style=" not in response.text


def test_link_carries_no_patient_data(app_client: TestClient) -> None:
    """Only the card uuid, the expiry and the signature are in the URL."""
    url = explanation_link(app_client)
    parts = urlsplit(url)
    assert set(parse_qs(parts.query)) == {"expires", "sig"}
    assert "p1" not in parts.path


def test_expired_link_is_refused(app_client: TestClient, moving_clock: Clock) -> None:
    """After its lifetime (15 minutes by default) the link answers 410 with a page saying so."""
    url = explanation_link(app_client)
    moving_clock.now = NOW + timedelta(minutes=15, seconds=1)
    response = page(url, app_client)
    assert response.status_code == 410
    assert "expired" in response.text
    assert response.headers["cache-control"] == "no-store"


def test_tampered_signature_is_refused(app_client: TestClient) -> None:
    """A changed signature is a 403."""
    url = explanation_link(app_client)
    response = page(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"), app_client)
    assert response.status_code == 403


def test_extended_expiry_is_refused(app_client: TestClient) -> None:
    """Moving the expiry later breaks the signature: 403."""
    url = explanation_link(app_client)
    expires = parse_qs(urlsplit(url).query)["expires"][0]
    response = page(url.replace(f"expires={expires}", f"expires={int(expires) + 3600}"), app_client)
    assert response.status_code == 403


def test_signature_of_one_card_does_not_open_another(app_client: TestClient) -> None:
    """The MAC covers the card uuid: another card's uuid with this signature is a 403."""
    first, second = explanation_link(app_client), explanation_link(app_client)
    first_uuid = urlsplit(first).path.rsplit("/", 1)[1]
    second_uuid = urlsplit(second).path.rsplit("/", 1)[1]
    assert page(first.replace(first_uuid, second_uuid), app_client).status_code == 403


def test_link_without_signature_is_refused(app_client: TestClient) -> None:
    """No query at all: 403, never the page."""
    url = explanation_link(app_client)
    assert app_client.get(urlsplit(url).path, auth=None).status_code == 403


def test_unknown_card_with_a_valid_signature_is_a_404(app_client: TestClient, settings: Settings) -> None:
    """A genuine link to a card the service never made (or no longer keeps) finds nothing."""
    signer = LinkSigner(load_secret(None, settings.data_dir))
    url = signer.url("http://testserver", "not-a-card", signer.expiry(NOW))
    response = page(url, app_client)
    assert response.status_code == 404
    assert "Nothing to show" in response.text


def test_refusal_is_an_operation_outcome_for_a_json_client(app_client: TestClient) -> None:
    """A client that asks for JSON gets a FHIR OperationOutcome."""
    url = explanation_link(app_client)
    response = page(url[:-3] + "AAA", app_client, accept="application/fhir+json")
    assert response.status_code == 403
    assert response.json()["resourceType"] == "OperationOutcome"


def test_another_worker_serves_the_page_from_the_database(
    app_client: TestClient, settings: Settings, dev_issuer: DevIssuer, moving_clock: Clock
) -> None:
    """A second app on the same database and data folder (another worker) opens the link too."""
    url = explanation_link(app_client)
    with signed_client(create_app(settings, clock=moving_clock), dev_issuer) as other:
        response = page(url, other)
    assert response.status_code == 200
    assert "Wells DVT score: 2" in response.text


def test_stylesheet_is_served(app_client: TestClient) -> None:
    """The page's only stylesheet comes from the service (the CSP allows 'self' styles only)."""
    response = app_client.get("/explanations/style.css", auth=None)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")


def test_default_secret_is_a_private_file_shared_by_workers(tmp_path: Path) -> None:
    """The data folder's key is made once, readable by its owner only, and reused."""
    first = load_secret(None, tmp_path)
    assert load_secret(None, tmp_path) == first
    mode = stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode)
    assert mode == 0o600
    assert len(first) >= 32


def test_workers_starting_together_on_a_fresh_folder_share_one_key(tmp_path: Path) -> None:
    """The key file appears whole: workers racing to make it all read the same full-length key."""
    folders = [tmp_path / f"data-{n}" for n in range(20)]
    contenders = 8
    barrier = threading.Barrier(contenders)

    def start_up(folder: Path) -> bytes:
        barrier.wait()
        return load_secret(None, folder)

    for folder in folders:
        with ThreadPoolExecutor(max_workers=contenders) as pool:
            keys = set(pool.map(start_up, [folder] * contenders))
        assert keys == {(folder / SECRET_FILE).read_bytes().strip()}
        assert len(keys.pop()) == 64
        assert [path.name for path in folder.iterdir()] == [SECRET_FILE]  # no temporary file left


def test_configured_secret_must_be_long(tmp_path: Path) -> None:
    """A short explanation_secret is refused when the settings load."""
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, explanation_secret="short")


def test_signer_refuses_a_non_numeric_expiry() -> None:
    """Garbage in the query is an invalid link, not an error."""
    signer = LinkSigner(b"k" * 32)
    with pytest.raises(LinkError) as caught:
        signer.check("card", "soon", "sig", NOW)
    assert caught.value.reason == "invalid"


def test_a_database_that_is_down_leaves_the_memory_copy(tmp_path: Path) -> None:
    """When the write fails, the worker that made the card still serves its explanation."""
    engine = create_engine(f"sqlite:///{tmp_path / 'missing' / 'audit.sqlite3'}")
    store = ExplanationStore(engine, capacity=10)
    entry = StoredExplanation("card-1", NOW + timedelta(minutes=15), {"card": {"uuid": "card-1"}})
    store.remember([entry])
    assert store.save([entry], now=NOW) is False
    assert store.find("card-1", now=NOW) == entry
    assert store.find("card-1", now=NOW + timedelta(minutes=16)) is None


def _explanation(card_uuid: str) -> StoredExplanation:
    return StoredExplanation(card_uuid, NOW + timedelta(minutes=15), {"card": {"uuid": card_uuid}})


def _engine_with_table(tmp_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    card_explanations.create(engine)
    return engine


def test_submitted_explanations_are_found_before_they_reach_the_database(tmp_path: Path) -> None:
    """Write-behind: what a call submitted is found at once, even beyond the memory's capacity."""
    engine = _engine_with_table(tmp_path)
    store = ExplanationStore(engine, capacity=1, linger_seconds=60)  # the writer waits: nothing written yet
    entries = [_explanation(f"card-{n}") for n in range(3)]
    try:
        store.submit(entries, now=NOW)

        assert [store.find(entry.card_uuid, now=NOW) for entry in entries] == entries
        assert "explanation-writer" in {thread.name for thread in threading.enumerate()}
    finally:
        store.close()  # cuts the linger short and writes the batch
        other_worker = ExplanationStore(engine, miss_wait_seconds=0)
        assert [other_worker.find(entry.card_uuid, now=NOW) for entry in entries] == entries
        engine.dispose()


def test_another_worker_waits_a_moment_for_an_explanation_being_written(tmp_path: Path) -> None:
    """A click on another worker right after the call finds the page once the first worker's writer wrote it."""
    engine = _engine_with_table(tmp_path)
    maker = ExplanationStore(engine, linger_seconds=0.2)
    other_worker = ExplanationStore(engine, miss_wait_seconds=30)
    entry = _explanation("card-1")
    try:
        maker.submit([entry], now=NOW)

        assert other_worker.find("card-1", now=NOW) == entry
        assert maker.flush()
    finally:
        maker.close()
        engine.dispose()


def test_a_refused_row_costs_only_its_own_call(tmp_path: Path) -> None:
    """Calls written in one batch: a row the database refuses does not keep the other calls' rows out."""
    engine = _engine_with_table(tmp_path)
    ExplanationStore(engine).save([_explanation("card-taken")], now=NOW)
    store = ExplanationStore(engine, linger_seconds=60)
    try:
        store.submit([_explanation("card-taken")], now=NOW)  # a duplicate key: refused
        store.submit([_explanation("card-1"), _explanation("card-2")], now=NOW)
    finally:
        store.close()  # cuts the linger short: both calls in one batch
    other_worker = ExplanationStore(engine, miss_wait_seconds=0)
    try:
        assert other_worker.find("card-1", now=NOW) == _explanation("card-1")
        assert other_worker.find("card-2", now=NOW) == _explanation("card-2")
    finally:
        engine.dispose()


def test_a_failed_write_behind_leaves_the_memory_copy(tmp_path: Path) -> None:
    """With no table to write to, the writer logs and goes on; the worker still serves the page."""
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    store = ExplanationStore(engine, linger_seconds=0, miss_wait_seconds=0)
    try:
        store.submit([_explanation("card-1")], now=NOW)

        assert store.flush()
        assert store.find("card-1", now=NOW) == _explanation("card-1")
        assert store.find("card-2", now=NOW) is None
    finally:
        store.close()
        engine.dispose()


def test_memory_keeps_only_the_most_recent(tmp_path: Path) -> None:
    """The in-process layer is bounded: the oldest explanations fall out first."""
    store = ExplanationStore(None, capacity=2)
    entries = [StoredExplanation(f"card-{n}", NOW + timedelta(minutes=15), {}) for n in range(3)]
    store.remember(entries)
    assert store.find("card-0", now=NOW) is None
    assert store.find("card-2", now=NOW) == entries[2]


def test_card_lacking_findings_links_to_the_assessment(app_client: TestClient) -> None:
    """A DVT card with Wells items not recorded opens the assessment form on them (a smart link)."""
    response = app_client.post("/cds-services/calf-pain", json=hook_request(DVT))
    (card,) = response.json()["cards"]
    smart = [link for link in card["links"] if link["type"] == "smart"]
    assert len(smart) == 1
    assert smart[0]["url"] == "http://testserver/app/launch.html"
    missing = json.loads(smart[0]["appContext"])["missing"]
    assert "calf_tenderness" in missing
    assert "calf_circumference_difference" not in missing  # recorded: not asked again


def test_red_flag_card_carries_no_assessment_link(app_client: TestClient) -> None:
    """A red flag asks for action now, not for a form."""
    red_flag = [calf_pain(), finding("sudden-onset"), finding("cold-pale-limb")]
    cards = app_client.post("/cds-services/calf-pain", json=hook_request(red_flag)).json()["cards"]
    critical = [card for card in cards if card["indicator"] == "critical"]
    assert critical
    assert all(link["type"] != "smart" for card in critical for link in card.get("links", []))
