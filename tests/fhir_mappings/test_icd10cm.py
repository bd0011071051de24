"""ICD-10-CM by range and hierarchy: the table, the ranges file, laterality from descriptions."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from fhir_mappings.errors import VocabularyError
from fhir_mappings.icd10cm import icd10cm_table, laterality, normalise, ranges_from_json
from fhir_mappings.terminology import ICD10CM, bundled_terminology


def ranges_document() -> dict[str, object]:
    text = resources.files("fhir_mappings").joinpath("data/icd10cm-ranges.json").read_text("utf-8")
    loaded: dict[str, object] = json.loads(text)
    return loaded


def test_every_range_bound_is_a_real_node_of_the_table() -> None:
    """Each range end and node in icd10cm-ranges.json exists in the bundled ICD-10-CM table."""
    assert ranges_from_json(ranges_document(), icd10cm_table())


def test_a_bound_that_is_not_in_the_table_is_refused() -> None:
    """A typo in a range bound is found at load, not at a patient."""
    with pytest.raises(VocabularyError):
        ranges_from_json({"ranges": [{"valueset": "dvt", "include": ["I82.9Q"]}]}, icd10cm_table())


def test_the_table_version_is_named() -> None:
    """The version of the table is the April 2026 tabular list."""
    assert icd10cm_table().version == "ICD-10-CM tabular April-1-2026"


@pytest.mark.parametrize(
    ("written", "normal"), [("c50911", "C50.911"), (" I82.4Z1 ", "I82.4Z1"), ("Z331", "Z33.1")]
)
def test_codes_are_normalised(written: str, normal: str) -> None:
    """Codes written without the dot, in lower case or padded are read in the table's form."""
    assert normalise(written) == normal


@pytest.mark.parametrize(
    ("description", "side"),
    [
        ("Unspecified fracture of shaft of right tibia, initial encounter", "right"),
        ("Acute embolism and thrombosis of left tibial vein", "left"),
        (
            "Acute embolism and thrombosis of unspecified deep veins of lower extremity, bilateral",
            "bilateral",
        ),
        ("Left ventricular failure, unspecified", None),
        ("Contusion of knee", None),
    ],
)
def test_laterality_from_descriptions(description: str, side: str | None) -> None:
    """Right, left and bilateral are read from a description; 'left ventricular' is not a side."""
    assert laterality(description) == side


@pytest.mark.parametrize(
    ("code", "valueset", "member"),
    [
        ("C44.91", "active-cancer", False),
        ("C43.71", "active-cancer", True),
        ("D47.3", "active-cancer", True),
        ("D47.2", "active-cancer", False),
        ("S82.201S", "leg-fracture", False),
        ("S82.201D", "leg-fracture", True),
        ("I82.5Y2", "dvt", False),
        ("I82.5Y2", "dvt-history", True),
    ],
)
def test_range_membership(code: str, valueset: str, member: bool) -> None:
    """Exclusions (C44, sequelae, chronic DVT) hold; the hierarchy finds the rest."""
    assert bundled_terminology().contains(valueset, ICD10CM, code) is member


SAMPLE = [
    "S82.201A",
    "C50.911",
    "I82.4Z1",
    "S83.91XA",
    "T79.A21S",
    "Z3A.24",
    "C4A.9",
    "O26.893",
    "D47.3",
    "Z96.651",
]


def test_the_table_agrees_with_the_package_api() -> None:
    """Validity, ancestry and descriptions read from the data files are what simple-icd-10-cm says."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its loader uses importlib.resources.read_text
        import simple_icd_10_cm as cm

    table = icd10cm_table()
    for code in SAMPLE:
        lineage = table.lineage(code)
        assert lineage is not None, code
        ancestors = list(dict.fromkeys(a for a in cm.get_ancestors(code) if "-" not in a and not a.isdigit()))
        assert list(lineage[1:]) == ancestors, code
        assert table.description(code) == cm.get_description(code), code
    assert table.lineage("C50.999") is None
    assert not cm.is_valid_item("C50.999")
