"""A mutation fuzzer: every member of a valid request, replaced by every kind of JSON value.

schemathesis (``test_fuzz.py``) generates requests from the OpenAPI document, which describes a
hook request's body only loosely; Hypothesis there replaces members at random. This fuzzer is
systematic instead: it takes a valid hook request (prefetched Patient, Observations and
Conditions) and a valid feedback request, lists every JSON location in them (members of objects
at every depth, array items), and replaces each, in turn, with values of every JSON type: null,
booleans, numbers (integer, fraction, huge), strings (empty, with a NUL, longer than any column
and than the string limit), arrays and objects (empty, nested a few levels, nested past the depth
limit), the original wrapped in a list or an object; it also deletes each member. The mutations are
enumerated in full, shuffled with a fixed seed and cut to a fixed budget per request kind, so a
run is bounded and always the same. Whatever is sent: cards that pass the response checker, or a
4xx OperationOutcome; never a 5xx.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from cds_hooks.card_contract import card_problems
from service.app import create_app
from service.auth.dev_issuer import DevIssuer
from service.config import Settings
from tests.fhir_builders import NOW, SNOMED, calf_pain, condition, finding, hook_request, quantity
from tests.signing import DevIssuerAuth

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's test client asks for `httpx2` (see tests/signing.py)
    from starlette.testclient import TestClient

SEED = 18
BUDGET = 700  # mutations per request kind (of ~1,700 hook and ~380 feedback mutations)
Location = tuple[str | int, ...]
_DELETE = object()


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


REPLACEMENTS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    1e308,
    "",
    "x",
    "a\x00b",
    "y" * 5_000,  # longer than any column
    "z" * 100_001,  # longer than the default string limit
    [],
    [None],
    {},
    {"resourceType": "Bundle"},
    nested(4),
    nested(70),  # deeper than the default depth limit
]


def valid_hook_request() -> dict[str, Any]:
    resources = [
        calf_pain(),
        finding("calf-circumference-difference", quantity(3.4, "cm")),
        condition(SNOMED, "128053003", clinical="resolved"),
    ]
    body = hook_request(resources)
    body["fhirServer"] = "https://ehr.example.org/fhir"
    return body


def valid_feedback() -> dict[str, Any]:
    return {"feedback": [{"card": "card-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-20T09:05:00Z",
                          "overrideReason": {"reason": {"system": "http://example.org/r", "code": "c",
                                                        "display": "d"}, "userComment": "seen"}},
                         {"card": "card-2", "outcome": "accepted", "acceptedSuggestions": [{"id": "s1"}],
                          "outcomeTimestamp": "2026-11-20T09:06:00Z"}]}  # fmt: skip


def locations(value: Any, here: Location = ()) -> Iterator[Location]:
    """Every member and item below ``value``, depth first."""
    children: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    for key, child in children:
        yield (*here, key)
        yield from locations(child, (*here, key))


def mutated(document: dict[str, Any], where: Location, replacement: Any) -> dict[str, Any]:
    copied = copy.deepcopy(document)
    parent: Any = copied
    for key in where[:-1]:
        parent = parent[key]
    original = parent[where[-1]]
    if replacement is _DELETE:
        if isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent.pop(where[-1])
    elif replacement == "wrap-list":
        parent[where[-1]] = [original]
    elif replacement == "wrap-object":
        parent[where[-1]] = {"value": original}
    else:
        parent[where[-1]] = replacement
    return copied


def mutations(document: dict[str, Any]) -> list[tuple[Location, Any]]:
    every = [
        (where, replacement)
        for where in locations(document)
        for replacement in [*REPLACEMENTS, "wrap-list", "wrap-object", _DELETE]
    ]
    random.Random(SEED).shuffle(every)  # noqa: S311 -- a fixed order of cases, not a secret
    return every[:BUDGET]


def label(where: Location, replacement: Any) -> str:
    shown = "delete" if replacement is _DELETE else repr(replacement)[:24]
    return "/" + "/".join(map(str, where)) + " = " + shown


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("mutation-fuzz") / "data"
    app = create_app(Settings(data_dir=data_dir, dev=True, fhir_fetch=False), clock=lambda: NOW)
    # A 5xx is counted like any other answer (not raised), so that one run reports them all.
    test_client = TestClient(app, raise_server_exceptions=False)
    test_client.auth = DevIssuerAuth(DevIssuer.load_or_create(data_dir))
    with test_client:
        yield test_client


def answers(client: TestClient, path: str, documents: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Post each document; describe every answer that is a 5xx or not a well-formed 2xx/4xx."""
    problems = []
    for name, document in documents:
        response = client.post(path, json=document)
        if response.status_code >= 500:
            problems.append(f"{name}: HTTP {response.status_code}")
        elif response.status_code >= 400:
            if response.json().get("resourceType") != "OperationOutcome":
                problems.append(f"{name}: {response.status_code} without an OperationOutcome")
        elif path.endswith("/calf-pain"):
            problems += [f"{name}: {p}" for card in response.json()["cards"] for p in card_problems(card)]
    return problems


def test_the_valid_requests_are_answered(fuzz_client: TestClient) -> None:
    """The starting points are valid: cards for the hook, 200 for feedback (so mutations mean something)."""
    assert fuzz_client.post("/cds-services/calf-pain", json=valid_hook_request()).json()["cards"]
    assert fuzz_client.post("/cds-services/calf-pain/feedback", json=valid_feedback()).status_code == 200


def test_every_mutated_hook_request_gets_cards_or_a_4xx(fuzz_client: TestClient) -> None:
    """700 mutations of a prefetched patient-view request (fixed seed): no 5xx."""
    document = valid_hook_request()
    cases = [(label(w, r), mutated(document, w, r)) for w, r in mutations(document)]
    assert len(cases) == BUDGET
    assert answers(fuzz_client, "/cds-services/calf-pain", cases) == []


def test_every_mutated_feedback_request_gets_a_200_or_a_4xx(fuzz_client: TestClient) -> None:
    """Every mutation of a two-entry feedback request (fixed seed, within the budget): no 5xx."""
    document = valid_feedback()
    cases = [(label(w, r), mutated(document, w, r)) for w, r in mutations(document)]
    assert answers(fuzz_client, "/cds-services/calf-pain/feedback", cases) == []


@pytest.mark.parametrize("bundle_type", [["searchset"], {"x": 1}, 1, None, True])
def test_a_bundle_type_of_the_wrong_json_type_is_a_400(fuzz_client: TestClient, bundle_type: Any) -> None:
    """The shape that was a 500 (a list or object as Bundle.type): 400 at /prefetch/…/type."""
    body = valid_hook_request()
    body["prefetch"]["observations"]["type"] = bundle_type
    response = fuzz_client.post("/cds-services/calf-pain", json=body)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["/prefetch/observations/type"]
