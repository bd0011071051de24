"""Prefetch templates, prefetch states and Bundle unpacking (cds_hooks.prefetch)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds_hooks.errors import CdsHooksError, RequestError
from cds_hooks.prefetch import (
    Ignored,
    PrefetchState,
    bundle_resources,
    classify,
    next_link,
)
from cds_hooks.prefetch_template import PrefetchTemplateError, render_template

SPEC = Path(__file__).parents[1] / "data" / "cds-hooks-spec"
V2 = SPEC / "examples-v2.0.1"
V3 = SPEC / "examples-v3.0.0-ballot"
# The date the 3.0 ballot's own worked example assumes ("If today is 2024-09-13").
SPEC_TODAY = datetime.date(2024, 9, 13)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


V2_CONTEXT = load(V2 / "04-context-prefetch-token-basic.json")["context"]  # patientId 123
V3_CONTEXT = load(V3 / "04-service-request-order-sign-paginated-prefetch.json")["context"]


def render(template: str, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "context": {"patientId": "123", "userId": "Practitioner/abc"},
        "user_id": "Practitioner/abc",
        "today": SPEC_TODAY,
    } | overrides
    return render_template(template, **arguments)


# --------------------------------------------------------------------------------------------
# The spec's own templates


SPEC_TEMPLATES = [
    (
        V2 / "03-prefetch-template-hba1c.json",
        "hemoglobin-a1c",
        "Observation?patient=123&code=4548-4&_count=1&sort:desc=date",
    ),
    (V2 / "07-prefetch-templates-discovery-fragment.json", "patient", "Patient/123"),
    (
        V2 / "07-prefetch-templates-discovery-fragment.json",
        "hemoglobin-a1c",
        "Observation?patient=123&code=4548-4&_count=1&sort:desc=date",
    ),
    (
        V2 / "07-prefetch-templates-discovery-fragment.json",
        "diabetes-type2",
        "Condition?patient=123&code=44054006&category=problem-list-item&status=active",
    ),
    (V2 / "07-prefetch-templates-discovery-fragment.json", "user", "PractitionerRole?_id=123"),
    (
        V3 / "05-prefetch-relative-date-fhirpath.json",
        "labsFromLastQuarter",
        "Observation?patient=1288992&category=laboratory&date=gt2024-06-15",
    ),
    (
        V3 / "07-prefetch-template-simpler-fhirpath.json",
        "appointments-upcoming",
        "Appointment?patient=1288992&date=gt2024-09-13&date=lt2025-09-13",
    ),
]

SPEC_FHIRPATH_TEMPLATES = [
    (V3 / "06-prefetch-chained-fhirpath.json", "serviceConditions"),
    (V3 / "06-prefetch-chained-fhirpath.json", "practitionerRoles"),
    (V3 / "06-prefetch-chained-fhirpath.json", "practitioners"),
    (V3 / "07-prefetch-template-simpler-fhirpath.json", "meds"),
    (V3 / "07-prefetch-template-simpler-fhirpath.json", "prescriber"),
]


def spec_context(path: Path) -> tuple[dict[str, Any], str]:
    """2.0.1 templates use the 2.0.1 context example (with a PractitionerRole user, which the
    2.0.1 ``user`` template asks for); 3.0 ballot templates use the ballot's order-sign request."""
    if path.parent == V2:
        return V2_CONTEXT, "PractitionerRole/123"
    return V3_CONTEXT, V3_CONTEXT["userId"]


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    SPEC_TEMPLATES,
    ids=[f"{path.parent.name}/{path.name}:{key}" for path, key, _ in SPEC_TEMPLATES],
)
def test_spec_example_templates_render(path: Path, key: str, expected: str) -> None:
    """Every 2.0.1 template and the 3.0 ballot's relative-date templates render as the spec shows."""
    context, user_id = spec_context(path)
    template = load(path)["prefetch"][key]
    assert render_template(template, context=context, user_id=user_id, today=SPEC_TODAY) == expected


@pytest.mark.parametrize(
    ("path", "key"),
    SPEC_FHIRPATH_TEMPLATES,
    ids=[f"{path.name}:{key}" for path, key in SPEC_FHIRPATH_TEMPLATES],
)
def test_spec_fhirpath_templates_are_refused(path: Path, key: str) -> None:
    """Chained FHIRPath (ofType, resolve, %key) is not rendered: a clear error, not a bad URL."""
    context, user_id = spec_context(path)
    template = load(path)["prefetch"][key]
    with pytest.raises(PrefetchTemplateError, match="FHIRPath") as caught:
        render_template(template, context=context, user_id=user_id, today=SPEC_TODAY)
    assert caught.value.token in template


# --------------------------------------------------------------------------------------------
# Context tokens


def test_list_context_value_is_an_error() -> None:
    """A context field holding a list cannot stand in a URL."""
    with pytest.raises(PrefetchTemplateError, match="a list") as caught:
        render("Patient?_id={{context.draftOrders}}", context={"draftOrders": [{"id": "1"}]})
    assert caught.value.token == "context.draftOrders"


def test_object_context_value_is_an_error() -> None:
    """The 3.0 ballot's draftOrders Bundle (an object) is not a primitive either."""
    with pytest.raises(PrefetchTemplateError, match="string"):
        render("MedicationRequest?_id={{context.draftOrders}}", context=V3_CONTEXT)


def test_missing_context_field_is_an_error() -> None:
    """A token naming a field the hook context lacks is an error naming that field."""
    with pytest.raises(PrefetchTemplateError, match="encounterId"):
        render("Encounter/{{context.encounterId}}")


def test_empty_context_value_is_an_error() -> None:
    """An empty id would turn a read into a type-level search."""
    with pytest.raises(PrefetchTemplateError, match="empty"):
        render("Patient/{{context.patientId}}", context={"patientId": ""})


def test_nested_context_field_renders() -> None:
    """A qualified path into a nested context object renders (the 1.0-era example)."""
    context = {"medication": {"medicationId": "456"}}
    assert render("Medication/{{context.medication.medicationId}}", context=context) == ("Medication/456")


def test_whitespace_inside_braces_is_allowed() -> None:
    """``{{ context.patientId }}`` is the same token as ``{{context.patientId}}``."""
    assert render("Patient/{{ context.patientId }}") == "Patient/123"


@pytest.mark.parametrize(
    ("template", "patient_id", "expected"),
    [
        ("Observation?patient={{context.patientId}}", "123&_include=*", "123%26_include%3D%2A"),
        ("Observation?patient={{context.patientId}}", "1,2", "1%5C%2C2"),
        ("Observation?patient={{context.patientId}}", "a|b$c", "a%5C%7Cb%5C%24c"),
        ("Observation?patient={{context.patientId}}", "x#frag", "x%23frag"),
        ("Patient/{{context.patientId}}", "../Practitioner/1", "..%2FPractitioner%2F1"),
        ("Patient/{{context.patientId}}", "1?_format=xml", "1%3F_format%3Dxml"),
        ("Patient/{{context.patientId}}", "Patient/2", "Patient%2F2"),
        ("Patient/{{context.patientId}}", "é 1", "%C3%A9%201"),
    ],
)
def test_context_values_cannot_change_the_query(template: str, patient_id: str, expected: str) -> None:
    """Values are percent-encoded (and FHIR-escaped in search values): no new parameters,
    path segments or ``or`` alternatives can be smuggled in."""
    assert render(template, context={"patientId": patient_id}).endswith(expected)


@pytest.mark.parametrize("patient_id", [".", ".."])
def test_dot_segment_values_are_refused(patient_id: str) -> None:
    """``Patient/..`` would climb out of the resource path."""
    with pytest.raises(PrefetchTemplateError, match="usable id"):
        render("Patient/{{context.patientId}}", context={"patientId": patient_id})


def test_context_user_id_as_a_whole_read_keeps_its_slash() -> None:
    """The spec's ``"user": "{{context.userId}}"`` read renders to ``Practitioner/abc``."""
    assert render("{{context.userId}}") == "Practitioner/abc"


# --------------------------------------------------------------------------------------------
# User tokens


@pytest.mark.parametrize(
    ("token", "user_id"),
    [
        ("userPractitionerId", "Practitioner/123"),
        ("userPractitionerRoleId", "PractitionerRole/123"),
        ("userPatientId", "Patient/123"),
        ("userRelatedPersonId", "RelatedPerson/123"),
    ],
)
def test_user_tokens_take_the_id_from_user_id(token: str, user_id: str) -> None:
    """Each user token is the id part of ``context.userId`` of its own type."""
    assert render(f"X?_id={{{{{token}}}}}", user_id=user_id) == "X?_id=123"


def test_user_token_of_another_type_is_an_error() -> None:
    """``{{userPractitionerId}}`` with a PractitionerRole user names both types."""
    with pytest.raises(PrefetchTemplateError, match="PractitionerRole") as caught:
        render("Practitioner/{{userPractitionerId}}", user_id="PractitionerRole/123")
    assert caught.value.token == "userPractitionerId"
    assert isinstance(caught.value, CdsHooksError)


def test_user_token_without_user_is_an_error() -> None:
    """A user token needs a ``user_id``."""
    with pytest.raises(PrefetchTemplateError, match="userId"):
        render("Patient/{{userPatientId}}", user_id=None)


@pytest.mark.parametrize("user_id", ["123", "Practitioner/", "Practitioner/1/_history/2", ""])
def test_malformed_user_id_is_an_error(user_id: str) -> None:
    """``context.userId`` must be ``ResourceType/id``."""
    with pytest.raises(PrefetchTemplateError, match="ResourceType/id"):
        render("Practitioner/{{userPractitionerId}}", user_id=user_id)


# --------------------------------------------------------------------------------------------
# Relative dates (3.0 ballot)


@pytest.mark.parametrize(
    ("token", "today", "expected"),
    [
        ("today()", "2024-09-13", "2024-09-13"),
        ("today() - 90 days", "2024-09-13", "2024-06-15"),
        ("today()-1 day", "2024-03-01", "2024-02-29"),
        ("today() + 365 days", "2024-09-13", "2025-09-13"),
        ("today() - 2 weeks", "2024-09-13", "2024-08-30"),
        ("today() - 1 month", "2024-03-31", "2024-02-29"),
        ("today() + 1 months", "2024-01-31", "2024-02-29"),
        ("today() + 1 year", "2024-02-29", "2025-02-28"),
        ("today() - 10 years", "2024-09-13", "2014-09-13"),
        ("today() - 7 'd'", "2024-09-13", "2024-09-06"),
        ("today() + 1 'wk'", "2024-09-13", "2024-09-20"),
    ],
)
def test_relative_date_tokens(token: str, today: str, expected: str) -> None:
    """``today()`` plus or minus days, weeks, months or years renders an ISO date; a month
    step to a day the month lacks lands on its last day."""
    template = f"Observation?date=ge{{{{{token}}}}}"
    rendered = render(template, today=datetime.date.fromisoformat(today))
    assert rendered == f"Observation?date=ge{expected}"


def test_relative_date_from_a_datetime_is_a_date() -> None:
    """A timezone-aware datetime passed as ``today`` still renders a plain date."""
    now = datetime.datetime(2024, 9, 13, 23, 30, tzinfo=datetime.UTC)
    assert render("Observation?date=gt{{today() - 1 day}}", today=now) == "Observation?date=gt2024-09-12"


@pytest.mark.parametrize(
    "token", ["today() - 999999 years", "today() + 999999 weeks", "today() + 8000 years"]
)
def test_relative_date_out_of_range_is_an_error(token: str) -> None:
    """A date before year 1 or after 9999 is a template error, not an OverflowError."""
    with pytest.raises(PrefetchTemplateError, match="out of range"):
        render(f"Observation?date=gt{{{{{token}}}}}")


@pytest.mark.parametrize("token", ["now()", "today() - 90 minutes", "today() * 2", "today() - 3"])
def test_other_date_expressions_are_refused(token: str) -> None:
    """Only ``today()`` with a calendar duration is rendered."""
    with pytest.raises(PrefetchTemplateError):
        render(f"Observation?date=gt{{{{{token}}}}}")


# --------------------------------------------------------------------------------------------
# Unknown tokens and braces


@pytest.mark.parametrize("token", ["user", "Patient.id", "patientId", "context", ""])
def test_unknown_token_is_an_error(token: str) -> None:
    """Pre-2.0 tokens (``{{user}}``, ``{{Patient.id}}``) and anything else unknown are refused."""
    with pytest.raises(PrefetchTemplateError, match="unknown") as caught:
        render(f"Patient/{{{{{token}}}}}")
    assert caught.value.token == token


@pytest.mark.parametrize(
    "template", ["Patient/{{context.patientId", "Patient/}}", "a{{context.patientId}}c}}"]
)
def test_unbalanced_braces_are_an_error(template: str) -> None:
    """A stray ``{{`` or ``}}`` is an error rather than being sent to the server."""
    with pytest.raises(PrefetchTemplateError, match="unbalanced"):
        render(template)


def test_template_without_tokens_is_unchanged() -> None:
    """A template without tokens comes back as it is."""
    assert render("Observation?code=4548-4") == "Observation?code=4548-4"


TOKEN_PIECES = st.sampled_from(
    [
        "{{",
        "}}",
        "context.",
        "patientId",
        "userId",
        "draftOrders",
        "userPractitionerId",
        "userPatientId",
        "today()",
        " - ",
        " + ",
        "90",
        "999999",
        " days",
        " months",
        "?",
        "&",
        "/",
        "%",
        ".",
    ]
)
CONTEXT_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text()),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=8,
)


@given(
    template=st.one_of(st.text(), st.lists(st.one_of(TOKEN_PIECES, st.text())).map("".join)),
    context=st.dictionaries(
        st.sampled_from(["patientId", "userId", "draftOrders", "x"]) | st.text(), CONTEXT_VALUES
    ),
    user_id=st.one_of(
        st.none(),
        st.text(),
        st.sampled_from(["Practitioner/1", "Patient/a.b", "RelatedPerson/..", "PractitionerRole/"]),
    ),
    today=st.dates(),
)
def test_render_template_raises_only_its_own_error(
    template: str, context: dict[str, object], user_id: str | None, today: datetime.date
) -> None:
    """On any input, rendering returns a string without braces or raises PrefetchTemplateError."""
    try:
        rendered = render_template(template, context=context, user_id=user_id, today=today)
    except PrefetchTemplateError:
        return
    assert "{{" not in rendered
    assert "}}" not in rendered


# --------------------------------------------------------------------------------------------
# Prefetch states


SPEC_PREFETCH = load(V2 / "08-prefetch-data-request-fragment.json")["prefetch"]
SPEC_OUTCOME = load(V3 / "13-operationoutcome-412-body.json")


@pytest.mark.parametrize(
    ("key", "state"),
    [
        ("patient", PrefetchState.PRESENT),
        ("hemoglobin-a1c", PrefetchState.PRESENT),
        ("diabetes-type2", PrefetchState.MISSING),
    ],
)
def test_spec_prefetch_data_states(key: str, state: PrefetchState) -> None:
    """The 2.0.1 prefetch data example: resources are present, the absent key is missing."""
    assert classify(SPEC_PREFETCH, key) is state


def test_spec_prefetch_user_string_is_refused() -> None:
    """The 2.0.1 example's ``"user": "123"`` is not a resource: a RequestError with a pointer."""
    with pytest.raises(RequestError) as caught:
        classify(SPEC_PREFETCH, "user")
    assert caught.value.pointer == "/prefetch/user"


def test_null_value_is_null() -> None:
    """``null`` means the client had no data."""
    assert classify({"patient": None}, "patient") is PrefetchState.NULL


def test_no_prefetch_at_all_is_missing() -> None:
    """A request without ``prefetch`` leaves every key missing."""
    assert classify(None, "patient") is PrefetchState.MISSING


def test_operation_outcome_is_outcome() -> None:
    """An OperationOutcome under a key means the client's own fetch failed."""
    assert classify({"allergies": SPEC_OUTCOME}, "allergies") is PrefetchState.OUTCOME


def test_warning_operation_outcome_is_still_outcome() -> None:
    """An OperationOutcome in place of the data is an outcome whatever its severity."""
    warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning"}]}
    assert classify({"allergies": warning}, "allergies") is PrefetchState.OUTCOME


def test_bundle_of_warning_outcomes_only_is_present() -> None:
    """A searchset holding only warning outcome entries is an empty search, not a failure."""
    warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning"}]}
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": warning, "search": {"mode": "outcome"}}],
    }
    assert classify({"obs": bundle}, "obs") is PrefetchState.PRESENT


def test_bundle_of_failed_outcomes_is_outcome() -> None:
    """A Bundle whose only entries are error OperationOutcomes is an outcome too."""
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": SPEC_OUTCOME}]}
    assert classify({"allergies": bundle}, "allergies") is PrefetchState.OUTCOME


def test_bundle_with_warning_outcome_and_matches_is_present() -> None:
    """A searchset with matches and a warning outcome entry is ordinary data."""
    warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning"}]}
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Observation", "id": "o1"}},
            {"resource": warning, "search": {"mode": "outcome"}},
        ],
    }
    assert classify({"obs": bundle}, "obs") is PrefetchState.PRESENT


def test_empty_bundle_is_present() -> None:
    """A search that found nothing is a Bundle with zero entries: present, not null."""
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    assert classify({"obs": bundle}, "obs") is PrefetchState.PRESENT


@pytest.mark.parametrize("value", [[], 1, {"id": "no-type"}, {"resourceType": 3}])
def test_values_that_are_not_resources_are_refused(value: object) -> None:
    """Anything but null or a resource is a RequestError; the pointer escapes ``/`` in keys."""
    with pytest.raises(RequestError) as caught:
        classify({"a/b": value}, "a/b")
    assert caught.value.pointer == "/prefetch/a~1b"


# --------------------------------------------------------------------------------------------
# Bundle unpacking


OBSERVATION = {"resourceType": "Observation", "id": "o1"}
CONDITION = {"resourceType": "Condition", "id": "c1"}
WARNING = {"resourceType": "OperationOutcome", "id": "w1", "issue": [{"severity": "warning"}]}
BOTH = frozenset({"Observation", "Condition"})


def searchset(*entries: object, **extra: object) -> dict[str, object]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": list(entries), **extra}


def test_single_resource_of_expected_type_is_returned() -> None:
    """A read result (one resource) comes back as a one-item list."""
    assert bundle_resources(OBSERVATION, expected_types=BOTH) == ([OBSERVATION], [])


def test_single_resource_of_other_type_is_reported() -> None:
    """A resource of another type is reported, not returned."""
    assert bundle_resources(CONDITION, expected_types=frozenset({"Observation"})) == (
        [],
        [Ignored("Condition", "c1", "unexpected resource type", "")],
    )


def test_bundle_keeps_expected_and_reports_the_rest() -> None:
    """Outcome entries and resources of other types are reported with their pointers."""
    bundle = searchset(
        {"resource": OBSERVATION, "search": {"mode": "match"}},
        {"resource": WARNING, "search": {"mode": "outcome"}},
        {"resource": CONDITION},
    )
    kept, ignored = bundle_resources(
        bundle, expected_types=frozenset({"Observation"}), pointer="/prefetch/obs"
    )
    assert kept == [OBSERVATION]
    assert [(i.resource_type, i.id, i.reason) for i in ignored] == [
        ("OperationOutcome", "w1", "search outcome (server message)"),
        ("Condition", "c1", "unexpected resource type"),
    ]


def test_ignored_entries_carry_json_pointers() -> None:
    """Each Ignored points at the entry's resource inside the request."""
    bundle = searchset({"resource": WARNING, "search": {"mode": "outcome"}}, {"resource": CONDITION})
    _, ignored = bundle_resources(bundle, expected_types=frozenset({"Observation"}), pointer="/prefetch/obs")
    assert [i.pointer for i in ignored] == [
        "/prefetch/obs/entry/0/resource",
        "/prefetch/obs/entry/1/resource",
    ]


def test_collection_bundle_is_accepted() -> None:
    """A collection Bundle (the spec's ``user`` example) is unpacked like a searchset."""
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": CONDITION}]}
    assert bundle_resources(bundle, expected_types=BOTH) == ([CONDITION], [])


def test_spec_paged_prefetch_bundle_is_unpacked() -> None:
    """The 3.0 ballot's paged ``orders`` page yields its MedicationRequest."""
    request = load(V3 / "04-service-request-order-sign-paginated-prefetch.json")
    kept, ignored = bundle_resources(
        request["prefetch"]["orders"], expected_types=frozenset({"MedicationRequest"})
    )
    assert [resource["id"] for resource in kept] == ["rx\u2011page\u20111\u201101"]
    assert ignored == []


@pytest.mark.parametrize(
    ("value", "pointer"),
    [
        (["not a mapping"], "/prefetch/obs"),
        ({"id": "x"}, "/prefetch/obs"),
        ({"resourceType": "Bundle", "type": "transaction"}, "/prefetch/obs/type"),
        ({"resourceType": "Bundle"}, "/prefetch/obs/type"),
        (searchset() | {"entry": {"resource": OBSERVATION}}, "/prefetch/obs/entry"),
        (searchset({"resource": OBSERVATION}, "not an object"), "/prefetch/obs/entry/1"),
        (searchset({"fullUrl": "urn:uuid:1"}), "/prefetch/obs/entry/0"),
        (searchset({"resource": {"id": "x"}}), "/prefetch/obs/entry/0/resource/resourceType"),
    ],
    ids=[
        "list",
        "no-resourceType",
        "transaction",
        "no-type",
        "entry-object",
        "entry-string",
        "no-resource",
        "resource-no-type",
    ],
)
def test_malformed_values_raise_with_pointer(value: Any, pointer: str) -> None:
    """Malformed Bundles are a RequestError pointing at the offending element."""
    with pytest.raises(RequestError) as caught:
        bundle_resources(value, expected_types=BOTH, pointer="/prefetch/obs")
    assert caught.value.pointer == pointer


# --------------------------------------------------------------------------------------------
# Next links


def test_next_link_of_spec_paged_prefetch() -> None:
    """The 3.0 ballot's paged prefetch names its second page."""
    request = load(V3 / "04-service-request-order-sign-paginated-prefetch.json")
    assert next_link(request["prefetch"]["orders"]) == (
        "https://ehr.example.org/fhir/MedicationRequest?patient=1288992&_count=1&_page=2"
    )


@pytest.mark.parametrize(
    "links",
    [None, "next", [], [{"relation": "self", "url": "x"}], [{"relation": "next"}], ["next"]],
)
def test_no_or_malformed_next_link_is_none(links: object) -> None:
    """No usable ``next`` link means no more pages."""
    assert next_link({"resourceType": "Bundle", "link": links}) is None
