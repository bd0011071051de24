"""The assessment against a real FHIR server on loopback (sekmet-fhir): the Questionnaire and the
extracted Bundle round-trip, and the next hook call reads the findings back and decides.

Dates are today's (the server and the hook run on the wall clock), so the responses are authored now.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.questionnaire import Questionnaire
from starlette.testclient import TestClient

from fhir_mappings.extraction import extract
from fhir_mappings.facts import vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from service.app import create_app
from service.config import Settings
from tests.assessment_builders import ASSESSMENT, CALF_STRAIN, CLAUDICATION, SUSPECTED_DVT, response
from tests.fhir_builders import patient
from tests.service.test_fhir_e2e import FHIR_JSON, FhirServer, cards, fetching_call, start_sekmet
from tests.signing import dev_client

pytestmark = pytest.mark.e2e
CASES = {
    "dvt": (SUSPECTED_DVT, "duplex-dvt"),
    "pad": (CLAUDICATION, "abi"),
    "strain": (CALF_STRAIN, "conservative"),
}


@pytest.fixture(scope="module")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    """A sekmet-fhir holding one patient per case, with no findings yet."""
    server = start_sekmet(tmp_path_factory.mktemp("sekmet-assessment"))
    try:
        for patient_id in CASES:
            server.put(patient(patient_id, birth_date="1958-03-02"))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("calf-cds-assessment"), dev=True)
    with dev_client(create_app(settings), settings) as client:
        yield client


def search(server: FhirServer, kind: str, **params: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{server.base}/{kind}", params={**params, "_count": "200"}, headers=FHIR_JSON, timeout=10
    )
    assert answer.status_code == 200, answer.text
    found = [entry["resource"] for entry in answer.json().get("entry", [])]
    return [resource for resource in found if resource["resourceType"] == kind]


def test_the_questionnaire_round_trips(fhir_server: FhirServer) -> None:
    """The Questionnaire PUT to the FHIR server reads back with the same items, still valid."""
    questionnaire = ASSESSMENT.to_questionnaire()
    fhir_server.put(questionnaire)
    stored = httpx.get(
        f"{fhir_server.base}/Questionnaire/{questionnaire['id']}", headers=FHIR_JSON, timeout=10
    )
    assert stored.status_code == 200
    Questionnaire.model_validate(stored.json())
    assert stored.json()["item"] == questionnaire["item"]


@pytest.mark.parametrize("patient_id", list(CASES))
def test_extracted_findings_round_trip_and_decide_the_next_card(
    fhir_server: FhirServer, service: TestClient, patient_id: str
) -> None:
    """POST the $extract Bundle as a transaction; the server holds the Observations, the mapper
    reads them as the answers, and the next hook call gives the decided card."""
    answers, topic = CASES[patient_id]
    body = response(answers, side="right", patient_id=patient_id, authored=datetime.now(UTC).isoformat())
    bundle = service.post("/fhir/QuestionnaireResponse/$extract", json=body, auth=None).json()
    result = httpx.post(fhir_server.base, content=json.dumps(bundle), headers=FHIR_JSON, timeout=30)
    assert result.status_code == 200, result.text
    assert all(e["response"]["status"].startswith("201") for e in result.json()["entry"])

    stored = search(fhir_server, "Observation", patient=patient_id)
    assert len(stored) == len(bundle["entry"]) - 1
    location = result.json()["entry"][0]["response"]["location"]  # QuestionnaireResponse/<id>[/_history/n]
    response_reference = "/".join(location.removeprefix(fhir_server.base + "/").split("/")[:2])
    written_response = httpx.get(
        f"{fhir_server.base}/{response_reference}", headers=FHIR_JSON, timeout=10
    ).json()
    assert written_response.get("subject") == {"reference": f"Patient/{patient_id}"}
    for observation in stored:
        Observation.model_validate(observation)
        assert observation["derivedFrom"] == [
            {"reference": f"QuestionnaireResponse/{written_response['id']}"}
        ]

    facts = Mapper(vocabulary(), bundled_terminology()).map(
        patient_id=patient_id, patient=None, resources=stored, now=datetime.now(UTC)
    )
    expected = extract(body, ASSESSMENT, now=datetime.now(UTC))
    assert len(stored) == len(expected["entry"]) - 1
    for link_id, value in answers.items():
        question = ASSESSMENT.question(link_id)
        assert question is not None
        name = f"{link_id}_right" if question.per_leg else link_id
        assert facts[name].documented, link_id
        if isinstance(value, bool):
            assert facts[name].value is value, link_id

    topics = [
        card_topic
        for card_topic, _, _ in cards(
            service.post("/cds-services/calf-pain", json=fetching_call(fhir_server.base, patient_id))
        )
    ]
    assert topics == [topic]


def test_before_the_assessment_the_card_is_undecided(tmp_path: Path, service: TestClient) -> None:
    """Control: the same patient with only calf pain charted gets no decided card of the case's topic."""
    server = start_sekmet(tmp_path)
    try:
        server.put(patient("dvt", birth_date="1958-03-02"))
        bundle = service.post(
            "/fhir/QuestionnaireResponse/$extract",
            json=response({}, side="right", patient_id="dvt", authored=datetime.now(UTC).isoformat()),
            auth=None,
        ).json()
        assert (
            httpx.post(server.base, content=json.dumps(bundle), headers=FHIR_JSON, timeout=30).status_code
            == 200
        )
        topics = [
            t
            for t, _, _ in cards(
                service.post("/cds-services/calf-pain", json=fetching_call(server.base, "dvt"))
            )
        ]
        assert "duplex-dvt" not in topics
    finally:
        server.stop()
