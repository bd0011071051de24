"""cds_hooks.prefetch_plan: prefetch checked against the calf-pain templates, the fetch plan, unpacking."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from cds_hooks.errors import PrefetchMismatchError, PrefetchMissingError
from cds_hooks.models import HookRequest
from cds_hooks.prefetch_plan import Fetched, FetchPlan, KeyQuery, gather_patient_data
from service.hooks.discovery import OPTIONAL_KEYS, PREFETCH_TEMPLATES
from tests.fhir_builders import PREFETCH_KEYS, bundle, calf_pain, hook_request, patient

TODAY = datetime.date(2026, 11, 20)
BASE = "https://ehr.example.org/fhir"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeFetcher:
    """Records the plans it gets and answers with fixed values."""

    def __init__(self, values: dict[str, Any] | None = None, notes: tuple[str, ...] = ()) -> None:
        self.plans: list[FetchPlan] = []
        self.values = values or {}
        self.notes = notes

    async def __call__(self, request: HookRequest, plan: FetchPlan) -> Fetched:
        self.plans.append(plan)
        values = {key: self.values.get(key) for key in [*plan.queries, *plan.pages]}
        return Fetched(values=values, notes=self.notes)


async def gather(
    body: dict[str, Any], fetcher: FakeFetcher | None = None, **kwargs: Any
) -> tuple[Any, dict[str, str], list[str]]:
    request = HookRequest.model_validate(body)
    states: dict[str, str] = {}
    notes: list[str] = []
    kwargs = {"templates": PREFETCH_TEMPLATES, "optional": OPTIONAL_KEYS, **kwargs}
    data = await gather_patient_data(
        request,
        patient_id=request.context["patientId"],
        user_id=request.context["userId"],
        today=TODAY,
        fetcher=fetcher,
        states=states,
        notes=notes,
        **kwargs,
    )
    return data, states, notes


@pytest.mark.anyio
async def test_templates_are_rendered_with_context_user_and_today() -> None:
    """Queries come from render_template: context and user tokens, and `today() - N days`."""
    body = hook_request([]) | {"fhirServer": BASE, "prefetch": {}}
    templates = {
        "recent": "Observation?patient={{context.patientId}}&date=ge{{today() - 90 days}}",
        "author": "Practitioner/{{userPractitionerId}}",
    }
    fetcher = FakeFetcher()
    await gather(body, fetcher, templates=templates)
    (plan,) = fetcher.plans
    assert plan.queries == {
        "recent": "Observation?patient=p1&date=ge2026-08-22",
        "author": "Practitioner/example",
    }
    assert not plan.pages


@pytest.mark.anyio
async def test_present_values_are_not_fetched_and_unpacked() -> None:
    """A complete prefetch needs no fetcher; its resources and Patient are returned."""
    pain = calf_pain()
    data, states, notes = await gather(hook_request([pain]))
    assert states == {"patient": "present", **dict.fromkeys(PREFETCH_KEYS, "present")}
    assert data.patient == patient("p1")
    assert data.resources == [pain]
    assert notes == []


@pytest.mark.anyio
async def test_missing_without_fhir_server_names_the_keys() -> None:
    """Keys to fetch and no fhirServer: PrefetchMissingError lists them, states are recorded."""
    body = hook_request([])
    del body["prefetch"]["patient"], body["prefetch"]["conditions"]
    with pytest.raises(PrefetchMissingError) as caught:
        await gather(body, FakeFetcher())
    assert caught.value.keys == ("patient", "conditions")


@pytest.mark.anyio
async def test_fetched_values_replace_missing_and_outcome_keys() -> None:
    """Missing and OperationOutcome keys go to the fetcher; its answers are unpacked."""
    pain = calf_pain()
    body = hook_request([]) | {"fhirServer": BASE}
    body["prefetch"] = {"observations": {"resourceType": "OperationOutcome", "issue": []}} | dict.fromkeys(
        OPTIONAL_KEYS
    )
    fetcher = FakeFetcher({"patient": patient("p1"), "observations": bundle([pain])}, notes=("x: note",))
    data, states, notes = await gather(body, fetcher)
    assert set(fetcher.plans[0].queries) == {"patient", "observations", "conditions"}
    assert states == {
        "patient": "missing+fetched",
        "observations": "outcome+fetched",
        "conditions": "missing+fetched",
        **dict.fromkeys(OPTIONAL_KEYS, "null"),
    }
    assert data.patient == patient("p1")
    assert data.resources == [pain]
    assert notes == ["x: note"]


@pytest.mark.anyio
async def test_paged_bundle_goes_to_the_fetcher_as_a_page() -> None:
    """A searchset with a next link is handed over for paging, not re-queried."""
    first = bundle([calf_pain()]) | {"link": [{"relation": "next", "url": f"{BASE}/Observation?page=2"}]}
    body = hook_request([]) | {"fhirServer": BASE}
    body["prefetch"]["observations"] = first
    fetcher = FakeFetcher({"observations": bundle([])})
    _, states, _ = await gather(body, fetcher)
    (plan,) = fetcher.plans
    assert (dict(plan.queries), dict(plan.pages)) == ({}, {"observations": first})
    assert states["observations"] == "present+paged"


@pytest.mark.anyio
async def test_prefetched_patient_must_be_the_context_patient() -> None:
    """A Patient read for another id is a mismatch (400), not silently used."""
    with pytest.raises(PrefetchMismatchError, match="context patient") as caught:
        await gather(hook_request([], patient_resource=patient("p2")))
    assert caught.value.pointer == "/prefetch/patient/id"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Patient/p1", KeyQuery("k", "Patient/p1", "Patient", "p1")),
        ("Patient/a%20b", KeyQuery("k", "Patient/a%20b", "Patient", "a b")),
        ("Observation?patient=p1", KeyQuery("k", "Observation?patient=p1", "Observation", None)),
        ("Condition", KeyQuery("k", "Condition", "Condition", None)),
    ],
)
def test_key_query_tells_reads_from_searches(query: str, expected: KeyQuery) -> None:
    assert KeyQuery.parse("k", query) == expected


@pytest.mark.parametrize("query", ["Patient/p1/_history", "metadata", "Observation/$lastn?x=1"])
def test_key_query_refuses_other_shapes(query: str) -> None:
    with pytest.raises(PrefetchMismatchError):
        KeyQuery.parse("k", query)


@pytest.mark.anyio
async def test_ignored_resources_are_noted_one_by_one_up_to_a_limit() -> None:
    """Each ignored resource is named in the notes, up to 20 a key; the rest are counted."""
    body = hook_request([calf_pain()])
    body["prefetch"]["conditions"]["entry"] = [
        {"resource": {"resourceType": "MedicationRequest", "id": f"m{n}"}} for n in range(25)
    ]
    data, _, notes = await gather(body)
    assert len(data.resources) == 1
    assert notes[0] == "ignored MedicationRequest/m0 in conditions: unexpected resource type"
    assert len(notes) == 21
    assert notes[-1] == "ignored 5 more resources in conditions"


@pytest.mark.anyio
async def test_missing_optional_keys_without_fhir_server_are_read_as_no_data() -> None:
    """A client that sends only the 1.0 keys and no fhirServer still gets facts: the 1.1 keys
    (Procedure, medications, DiagnosticReport, Encounter) are read as no data, with a note each."""
    pain = calf_pain()
    body = hook_request([pain])
    for key in OPTIONAL_KEYS:
        del body["prefetch"][key]
    data, states, notes = await gather(body)
    assert data.resources == [pain]
    assert {states[key] for key in OPTIONAL_KEYS} == {"missing+not-read"}
    assert len([n for n in notes if "read as no data" in n]) == len(OPTIONAL_KEYS)
