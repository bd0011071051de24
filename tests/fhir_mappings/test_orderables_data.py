"""Checks on the order catalogue ``fhir_mappings/data/orderables.json`` and the orderable CodeSystem.

Every code is well formed for its system (LOINC mod-10, SNOMED CT Verhoeff and partition, CPT five
digits), carries its evidence, and is never one of GUIDANCE's known-wrong codes; the local codes are
the CodeSystem's; the CPT codes taken from the CDS Hooks Sandbox still have its descriptors; the
anticoagulants are the fact vocabulary's; and every kind is read as its two facts.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from fhir_mappings.facts import vocabulary
from fhir_mappings.orderables import ATC, ORDERABLE_SYSTEM, ORIGIN, bundled_catalogue
from tests.fhir_mappings.test_terminology_data import KNOWN_WRONG, loinc_code_valid, snomed_concept_id_valid

DATA = resources.files("fhir_mappings").joinpath("data")
CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
SANDBOX = Path(__file__).resolve().parents[3] / "shared" / "cds-hooks-sandbox" / "app.bundle.js"
needs_sandbox = pytest.mark.skipif(
    not SANDBOX.exists(), reason="../shared/cds-hooks-sandbox is not beside the checkout"
)
KINDS = (
    "venous_duplex",
    "d_dimer",
    "venography",
    "arterial_imaging",
    "abi",
    "compression",
    "lumbar_mri",
    "rest_ice",
    "analgesic",
    "anticoagulant",
)


@cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DATA.joinpath("orderables.json").read_text("utf-8"))
    return loaded


def entries() -> list[tuple[str, dict[str, Any]]]:
    return [(kind, code) for kind, body in document()["kinds"].items() for code in body.get("codes", [])]


def test_the_kinds_are_the_ones_the_rules_read() -> None:
    assert tuple(document()["kinds"]) == KINDS
    assert tuple(bundled_catalogue().kinds) == KINDS


def test_every_kind_is_read_as_two_boolean_facts_of_the_vocabulary() -> None:
    """order_<kind> and draft_<kind>, both declared with origin draft-orders (and no others)."""
    specs = vocabulary().specs
    for kind in KINDS:
        for name in (f"order_{kind}", f"draft_{kind}"):
            assert specs[name].type == "boolean"
            assert specs[name].origin == ORIGIN
            assert specs[name].sources == ()
    from_orders = {name for name, spec in specs.items() if spec.origin == ORIGIN}
    assert from_orders == {f"{prefix}_{kind}" for kind in KINDS for prefix in ("order", "draft")}
    bundled_catalogue().check(vocabulary())


def test_every_code_has_system_code_display_and_evidence() -> None:
    for kind, code in entries():
        assert code["system"], (kind, code)
        assert code["code"], (kind, code)
        assert code["display"], (kind, code)
        assert code.get("evidence", "").strip(), (kind, code)


@pytest.mark.parametrize(
    ("kind", "code"), [e for e in entries() if e[1]["system"] == LOINC], ids=lambda v: str(v)
)
def test_loinc_codes_have_a_valid_check_digit(kind: str, code: dict[str, Any]) -> None:
    assert loinc_code_valid(code["code"]), code


@pytest.mark.parametrize(
    ("kind", "code"), [e for e in entries() if e[1]["system"] == SNOMED], ids=lambda v: str(v)
)
def test_snomed_codes_are_concept_ids(kind: str, code: dict[str, Any]) -> None:
    assert snomed_concept_id_valid(code["code"]), code


def test_cpt_codes_are_five_digits() -> None:
    cpt = [code for _, code in entries() if code["system"] == CPT]
    assert cpt
    assert all(re.fullmatch(r"\d{5}", code["code"]) for code in cpt)


def test_no_known_wrong_code_is_an_orderable() -> None:
    listed = {(code["system"], code["code"]) for _, code in entries()}
    assert not listed & set(KNOWN_WRONG)


def test_local_orderables_are_the_codesystems_codes() -> None:
    """Every local orderable is a concept of CodeSystem-orderable.json, and every concept is used."""
    concepts = json.loads(DATA.joinpath("CodeSystem-orderable.json").read_text("utf-8"))["concept"]
    defined = {c["code"]: c["display"] for c in concepts}
    local = {code["code"]: code["display"] for _, code in entries() if code["system"] == ORDERABLE_SYSTEM}
    assert local == defined


def test_only_codes_that_do_not_name_the_limb_are_extremity_codes() -> None:
    """'site': 'extremity' marks the CPT codes for 'extremity' / 'upper or lower extremity' studies."""
    for _, code in entries():
        if code.get("site") is not None:
            assert code["site"] == "extremity"
            display = code["display"].lower()
            assert "upper or lower extremity" in display or "of extremity" in display, code


def test_the_venous_duplex_and_d_dimer_result_codes_are_reused_not_copied() -> None:
    """Kinds that read the verified result codes name their value sets (one list, valuesets.json)."""
    assert document()["kinds"]["venous_duplex"]["valuesets"] == ["venous-duplex"]
    assert document()["kinds"]["d_dimer"]["valuesets"] == ["d-dimer-feu", "d-dimer-ddu"]
    catalogue = bundled_catalogue()
    for code in ("39420-5", "39432-0", "39443-7", "30881-7"):
        assert [o.kind for o in catalogue.lookup(LOINC, code)] == ["venous_duplex"]
    for code in ("48065-7", "48066-5", "55398-2"):
        assert [o.kind for o in catalogue.lookup(LOINC, code)] == ["d_dimer"]


def test_medication_kinds_use_atc_prefixes_and_names() -> None:
    for kind in ("analgesic", "anticoagulant"):
        body = document()["kinds"][kind]
        assert body["medication"] is True
        assert all(re.fullmatch(r"[A-Z]\d{2}[A-Z]{0,2}\d{0,2}", prefix) for prefix in body["atc"])
        assert body["atc_evidence"].strip()
        assert body["names"] == [name.lower() for name in body["names"]]
    assert "N02BA" not in document()["kinds"]["analgesic"]["atc"]  # aspirin: an antiplatelet here
    assert "aspirin" not in document()["kinds"]["analgesic"]["names"]


def test_anticoagulants_are_the_fact_vocabularys() -> None:
    """The anticoagulant kind reads exactly what anticoagulant_use reads from medications."""
    source = next(s for s in vocabulary().specs["anticoagulant_use"].sources if s["from"] == "medication")
    body = document()["kinds"]["anticoagulant"]
    assert body["atc"] == source["atc"]
    assert body["names"] == source["names"]
    assert ATC == "http://www.whocc.no/atc"


def sandbox_cpt() -> dict[str, str]:
    text = SANDBOX.read_text("utf-8")
    found = re.findall(
        r'\{"code":"(\d{5})","display":"([^"]*)","system":"http://www\.ama-assn\.org/go/cpt"\}', text
    )
    return dict(found)


@needs_sandbox
def test_cpt_codes_taken_from_the_sandbox_keep_its_descriptors() -> None:
    """Every CPT orderable whose evidence is the Sandbox's PAMA list is in that list, same descriptor;
    and the codes the issue names (CTA 73706, MRA 73725, lumbar MRI 72148, venography 78457-78458) are."""
    listed = sandbox_cpt()
    from_sandbox = [code for _, code in entries() if code["system"] == CPT and "Sandbox" in code["evidence"]]
    assert {c["code"] for c in from_sandbox} >= {"73706", "73725", "72148", "78457", "78458"}
    for code in from_sandbox:
        assert listed.get(code["code"]) == code["display"], code
