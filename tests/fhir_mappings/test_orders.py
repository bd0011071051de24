"""Draft orders → order facts: any coding matches, fail-safe statuses and subjects, site catalogues."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_mappings.errors import MappingError, OrderCatalogueError, VocabularyError
from fhir_mappings.facts import Fact, vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.orderables import OrderCatalogue, bundled_catalogue, site_catalogue
from fhir_mappings.orders import OrderReader, order_facts
from fhir_mappings.terminology import bundled_terminology
from tests.fhir_builders import NOW, calf_pain, patient
from tests.strategies import json_values

CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
LOCAL_EHR = "urn:oid:1.2.840.114350.1.13.0.1.7.2.696580"
LEFT_LEG = {"coding": [{"system": SNOMED, "code": "32153003", "display": "Structure of left lower limb"}]}


def request(kind: str, ident: str, *codings: dict[str, str], **extra: Any) -> dict[str, Any]:
    concept_key = {
        "ServiceRequest": "code",
        "DeviceRequest": "codeCodeableConcept",
        "MedicationRequest": "medicationCodeableConcept",
    }[kind]
    resource = {
        "resourceType": kind,
        "id": ident,
        "status": "draft",
        "intent": "order",
        concept_key: {"coding": list(codings)},
        "subject": {"reference": "Patient/p1"},
    }
    return resource | extra


def coding(system: str, code: str, display: str = "") -> dict[str, str]:
    return {"system": system, "code": code, "display": display or code}


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}


def read(
    *resources: dict[str, Any], hook: str = "order-sign", selections: Any = None
) -> tuple[Any, dict[str, Fact]]:
    return order_facts(bundle(*resources), patient_id="p1", hook=hook, selections=selections)


def true_facts(facts: dict[str, Fact]) -> set[str]:
    return {name for name, fact in facts.items() if fact.value is True}


def test_a_second_coding_is_enough() -> None:
    """Matched on ANY coding: a local code first and CPT 93971 second is a venous duplex."""
    sr = request("ServiceRequest", "us1", coding(LOCAL_EHR, "IMG4471"), coding(CPT, "93971"))
    drafts, facts = read(sr)
    assert true_facts(facts) == {"order_venous_duplex", "draft_venous_duplex"}
    (evidence,) = facts["order_venous_duplex"].evidence
    assert evidence.reference == "ServiceRequest/us1"
    assert "93971" in evidence.value
    assert drafts.delete_targets("venous_duplex") == ("ServiceRequest/us1",)


def test_every_kind_is_a_fact_false_when_absent() -> None:
    """The whole Bundle was read: a kind with no draft order is documented False, not missing."""
    _, facts = read(request("ServiceRequest", "cta", coding(CPT, "73706")))
    assert facts["order_arterial_imaging"].value is True
    others = {name: fact.value for name, fact in facts.items() if "arterial_imaging" not in name}
    assert set(others.values()) == {False}
    assert len(facts) == 2 * len(bundled_catalogue().kinds)


@pytest.mark.parametrize(
    ("resource", "kind"),
    [
        (request("ServiceRequest", "a", coding(LOINC, "55398-2")), "d_dimer"),
        (request("ServiceRequest", "a", coding(CPT, "78458")), "venography"),
        (request("ServiceRequest", "a", coding(CPT, "72148")), "lumbar_mri"),
        (request("ServiceRequest", "a", coding(SNOMED, "401221002")), "abi"),
        (request("DeviceRequest", "a", coding(SNOMED, "348681001")), "compression"),
        (request("ServiceRequest", "a", coding(SNOMED, "9458007")), "compression"),
        (
            request(
                "ServiceRequest",
                "a",
                coding("http://calf-cds.org/fhir/CodeSystem/orderable", "rest-ice-advice"),
            ),
            "rest_ice",
        ),
        (
            request("MedicationRequest", "a", coding(RXNORM, "206913", "Ibuprofen 600 MG Oral Tablet [Ibu]")),
            "analgesic",
        ),
        (request("MedicationRequest", "a", coding(ATC, "N02BE01")), "analgesic"),
        (request("MedicationRequest", "a", coding(ATC, "M02AA15")), "analgesic"),
        (request("MedicationRequest", "a", coding(ATC, "B01AF01")), "anticoagulant"),
        (
            request("MedicationRequest", "a", coding(RXNORM, "1", "Apixaban 5 MG Oral Tablet")),
            "anticoagulant",
        ),
    ],
)
def test_each_kind_is_recognised(resource: dict[str, Any], kind: str) -> None:
    _, facts = read(resource)
    assert true_facts(facts) == {f"order_{kind}", f"draft_{kind}"}


def test_a_medication_kind_is_not_read_from_a_service_request_nor_an_imaging_kind_from_a_medication() -> None:
    _, facts = read(
        request("ServiceRequest", "a", coding(ATC, "M01AE01", "ibuprofen")),
        request("MedicationRequest", "b", coding(CPT, "73706")),
    )
    assert true_facts(facts) == set()


def test_low_dose_aspirin_is_not_an_analgesic_plan() -> None:
    _, facts = read(request("MedicationRequest", "asa", coding(ATC, "B01AC06", "Aspirin 75 mg")))
    assert true_facts(facts) == set()


def test_a_contained_medication_is_read() -> None:
    med = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "draft",
        "contained": [
            {"resourceType": "Medication", "id": "x", "code": {"coding": [coding(ATC, "N02AX02")]}}
        ],
        "medicationReference": {"reference": "#x"},
        "subject": {"reference": "Patient/p1"},
    }
    _, facts = read(med)
    assert facts["order_analgesic"].value is True


@pytest.mark.parametrize(
    "status", ["revoked", "completed", "entered-in-error", "on-hold", "unknown", "cancelled", "stopped"]
)
def test_an_order_that_is_not_draft_or_active_is_no_order(status: str) -> None:
    drafts, facts = read(request("ServiceRequest", "dd", coding(LOINC, "48065-7"), status=status))
    assert facts["draft_d_dimer"].value is False
    assert drafts.orders == ()
    assert any(status in note for note in drafts.notes)


def test_an_active_order_and_one_without_status_are_read() -> None:
    without = request("ServiceRequest", "b", coding(LOINC, "48065-7"))
    del without["status"]
    drafts, facts = read(request("ServiceRequest", "a", coding(LOINC, "48065-7"), status="active"), without)
    assert facts["order_d_dimer"].value is True
    assert {o.reference for o in drafts.orders} == {"ServiceRequest/a", "ServiceRequest/b"}


def test_do_not_perform_is_not_an_order_of_the_kind() -> None:
    """A 'do not compress' ServiceRequest forbids compression; it never reads as ordering it."""
    drafts, facts = read(request("ServiceRequest", "no", coding(SNOMED, "348681001"), doNotPerform=True))
    assert facts["draft_compression"].value is False
    assert "do not perform" in drafts.notes[0]


def test_an_order_about_another_patient_is_foreign() -> None:
    other = request("ServiceRequest", "x", coding(LOINC, "39420-5"), subject={"reference": "Patient/p2"})
    drafts, facts = read(other)
    assert drafts.foreign == ("ServiceRequest/x",)
    assert facts["draft_venous_duplex"].value is False


def test_an_absolute_subject_reference_is_the_context_patient() -> None:
    absolute = request(
        "ServiceRequest",
        "x",
        coding(LOINC, "39420-5"),
        subject={"reference": "https://ehr.example/fhir/Patient/p1"},
    )
    drafts, facts = read(absolute)
    assert drafts.foreign == ()
    assert facts["order_venous_duplex"].value is True


def test_an_order_without_subject_is_read_as_the_context_patients_and_noted() -> None:
    orphan = request("ServiceRequest", "x", coding(LOINC, "39420-5"))
    del orphan["subject"]
    drafts, facts = read(orphan)
    assert facts["order_venous_duplex"].value is True
    assert "no subject" in drafts.notes[0]


def test_order_select_reads_the_selections_as_being_ordered() -> None:
    scan = request("ServiceRequest", "us1", coding(LOINC, "39420-5"))
    pill = request("MedicationRequest", "m1", coding(ATC, "M01AE01"))
    drafts, facts = read(scan, pill, hook="order-select", selections=["MedicationRequest/m1"])
    assert true_facts(facts) == {"order_analgesic", "draft_analgesic", "draft_venous_duplex"}
    assert [o.selected for o in drafts.orders] == [False, True]
    assert "selected" in facts["order_analgesic"].evidence[0].value


@pytest.mark.parametrize("selections", [None, [], ["ServiceRequest/nowhere"], "ServiceRequest/us1", [42]])
def test_selections_that_name_no_draft_make_every_draft_selected(selections: Any) -> None:
    scan = request("ServiceRequest", "us1", coding(LOINC, "39420-5"))
    drafts, facts = read(scan, hook="order-select", selections=selections)
    assert facts["order_venous_duplex"].value is True
    assert "every draft order is read as selected" in " ".join(drafts.notes)


def test_order_sign_signs_every_draft_whatever_the_selections() -> None:
    scan = request("ServiceRequest", "us1", coding(LOINC, "39420-5"))
    pill = request("MedicationRequest", "m1", coding(ATC, "M01AE01"))
    _, facts = read(scan, pill, hook="order-sign", selections=["MedicationRequest/m1"])
    assert facts["order_venous_duplex"].value is True


def test_an_extremity_code_for_the_arm_is_not_a_leg_order() -> None:
    """CPT 93971 is a duplex of any limb: with an arm body site it is not a leg venous scan."""
    arm = request("ServiceRequest", "a", coding(CPT, "93971"), bodySite=[{"text": "Left arm"}])
    leg = request("ServiceRequest", "b", coding(CPT, "93971"), bodySite=[LEFT_LEG | {"text": "left leg"}])
    _, facts = read(arm, leg)
    assert facts["order_venous_duplex"].evidence[0].reference == "ServiceRequest/b"
    assert facts["order_venous_duplex"].evidence[0].laterality == "left"
    assert len(facts["order_venous_duplex"].evidence) == 1


def test_a_leg_specific_code_is_read_whatever_the_body_site_says() -> None:
    odd = request("ServiceRequest", "a", coding(LOINC, "39420-5"), bodySite=[{"text": "arm"}])
    _, facts = read(odd)
    assert facts["order_venous_duplex"].value is True


def test_a_draft_without_id_cannot_be_deleted_by_reference() -> None:
    nameless = request("ServiceRequest", "x", coding(LOINC, "39420-5"))
    del nameless["id"]
    drafts, facts = read(nameless)
    assert facts["order_venous_duplex"].value is True
    assert drafts.delete_targets("venous_duplex") == ()


def test_order_facts_belong_to_an_order_hook() -> None:
    with pytest.raises(MappingError, match="patient-view"):
        order_facts(bundle(), patient_id="p1", hook="patient-view")


@pytest.mark.parametrize(
    "draft_orders",
    [
        None,
        {},
        [],
        "Bundle",
        {"resourceType": "Bundle"},
        {"resourceType": "Bundle", "entry": {}},
        {
            "resourceType": "Bundle",
            "entry": [None, 1, {"resource": "x"}, {"resource": {"resourceType": "Patient"}}],
        },
    ],
)
def test_unreadable_bundles_give_false_facts_and_notes(draft_orders: Any) -> None:
    drafts, facts = order_facts(draft_orders, patient_id="p1", hook="order-select")
    assert drafts.orders == ()
    assert {fact.value for fact in facts.values()} == {False}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    draft_orders=st.one_of(
        json_values,
        st.builds(
            lambda entries: {"resourceType": "Bundle", "entry": entries},
            st.lists(
                st.one_of(
                    json_values,
                    st.builds(
                        lambda resource: {"resource": resource},
                        st.one_of(
                            json_values,
                            st.fixed_dictionaries(
                                {
                                    "resourceType": st.sampled_from(
                                        ["ServiceRequest", "MedicationRequest", "DeviceRequest"]
                                    ),
                                    "id": json_values,
                                    "status": st.one_of(
                                        st.sampled_from(["draft", "active", "revoked"]), json_values
                                    ),
                                    "code": json_values,
                                    "medicationCodeableConcept": json_values,
                                    "medicationReference": json_values,
                                    "contained": json_values,
                                    "codeCodeableConcept": json_values,
                                    "subject": st.one_of(st.just({"reference": "Patient/p1"}), json_values),
                                    "bodySite": json_values,
                                    "authoredOn": json_values,
                                    "doNotPerform": json_values,
                                }
                            ),
                        ),
                    ),
                ),
                max_size=5,
            ),
        ),
    ),
    selections=json_values,
    hook=st.sampled_from(["order-select", "order-sign"]),
)
def test_reading_draft_orders_is_total(draft_orders: Any, selections: Any, hook: str) -> None:
    """Hostile draft orders never raise: every fact is a boolean, every note a string."""
    drafts, facts = order_facts(draft_orders, patient_id="p1", hook=hook, selections=selections)
    assert all(isinstance(fact.value, bool) for fact in facts.values())
    assert all(isinstance(note, str) and "\n" not in note for note in drafts.notes)
    json.dumps([e.to_json() for fact in facts.values() for e in fact.evidence])


# --- merging with the patient's facts --------------------------------------------------------------


def test_order_facts_merge_into_the_patients_facts() -> None:
    mapper = Mapper(vocabulary(), bundled_terminology())
    facts = mapper.map(patient_id="p1", patient=patient(), resources=[calf_pain()], now=NOW)
    _, extra = read(
        request("ServiceRequest", "us1", coding(LOINC, "39420-5")),
        request("ServiceRequest", "z", coding(CPT, "1")),
    )
    merged = facts.with_facts(extra.values(), notes=("draft note",))
    assert merged["calf_pain"].value is True
    assert merged["order_venous_duplex"].value is True
    assert merged.notes[-1] == "draft note"
    assert facts["order_venous_duplex"].value is None  # the patient's facts are not changed
    assert "order_venous_duplex" in merged.to_json()


def test_merging_an_undeclared_fact_is_a_vocabulary_error() -> None:
    mapper = Mapper(vocabulary(), bundled_terminology())
    facts = mapper.map(patient_id="p1", patient=patient(), resources=[], now=NOW)
    with pytest.raises(VocabularyError, match="not in the vocabulary") as caught:
        facts.with_facts([Fact("order_teleportation", True)])
    assert caught.value.fact == "order_teleportation"


# --- a site's own order catalogue -------------------------------------------------------------------


def write(tmp_path: Path, body: object) -> Path:
    path = tmp_path / "site-orderables.json"
    path.write_text(json.dumps(body))
    return path


def test_a_site_file_adds_its_own_codes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "site": "St Elsewhere catalogue 2026-11",
            "orderables": {
                "venous_duplex": {
                    "codes": [{"system": LOCAL_EHR, "code": "IMG4471", "display": "US VENOUS LEG"}]
                },
                "analgesic": {"names": ["co-codamol"], "atc": ["N02BB"]},
                "abi": {"codes": [{"system": LOCAL_EHR, "code": "VASC12", "site": "extremity"}]},
            },
        },
    )
    catalogue = site_catalogue(path)
    reader = OrderReader(catalogue, vocabulary())
    _, facts = reader.read(
        bundle(
            request("ServiceRequest", "a", coding(LOCAL_EHR, "IMG4471")),
            request("MedicationRequest", "b", coding(RXNORM, "9", "Co-codamol 30/500 tablets")),
            request("MedicationRequest", "c", coding(ATC, "N02BB02")),
        ),
        patient_id="p1",
        hook="order-sign",
    )
    assert facts["order_venous_duplex"].value is True
    assert len(facts["order_analgesic"].evidence) == 2
    assert catalogue.sources[-1] == str(path)
    # the bundled catalogue is not changed by a site's file
    assert bundled_catalogue().lookup(LOCAL_EHR, "IMG4471") == ()


@pytest.mark.parametrize(
    ("body", "message", "pointer"),
    [
        ({}, "needs an 'orderables' object", "/orderables"),
        (
            {"orderables": {"teleport": {"codes": []}}},
            "unknown order kind 'teleport'",
            "/orderables/teleport",
        ),
        (
            {"orderables": {"d_dimer": {"codes": [{"code": "x"}]}}},
            "needs a system and a code",
            "/orderables/d_dimer/codes/0",
        ),
        (
            {"orderables": {"d_dimer": {"codes": [{"system": "s", "code": "c", "site": "arm"}]}}},
            "site is",
            "/orderables/d_dimer/codes/0/site",
        ),
        ({"orderables": {"d_dimer": {"names": ["dimer"]}}}, "medication kinds only", "/orderables/d_dimer"),
        (
            {"orderables": {"analgesic": {"atc": "M01A"}}},
            "list of non-empty strings",
            "/orderables/analgesic/atc",
        ),
        ({"orderables": {"abi": []}}, "an object", "/orderables/abi"),
    ],
)
def test_a_bad_site_file_names_the_file_and_the_place(
    tmp_path: Path, body: object, message: str, pointer: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(OrderCatalogueError, match=message) as caught:
        site_catalogue(path)
    assert caught.value.path == str(path)
    assert caught.value.pointer == pointer


@pytest.mark.parametrize("content", ["not json", "[1, 2]", ""])
def test_an_unreadable_site_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "site.json"
    path.write_text(content)
    with pytest.raises(OrderCatalogueError):
        site_catalogue(path)


def test_a_missing_site_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OrderCatalogueError, match="not a readable JSON file"):
        site_catalogue(tmp_path / "nowhere.json")


def test_a_catalogue_kind_without_its_facts_is_refused() -> None:
    """A kind the vocabulary does not declare as order_/draft_ facts is refused when the reader is built."""
    document = {"kinds": {"teleport": {"label": "Teleport", "codes": [{"system": "s", "code": "c"}]}}}
    from fhir_mappings.terminology import listed_terminology

    catalogue = OrderCatalogue.from_json(document, terminology=listed_terminology())
    with pytest.raises(OrderCatalogueError, match="order_teleport"):
        OrderReader(catalogue, vocabulary())
