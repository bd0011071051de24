"""The route index: the code table answers exactly what the terminology look-up answers, fast."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fhir_mappings.facts import vocabulary
from fhir_mappings.routes import KINDS, Route, RouteIndex
from fhir_mappings.terminology import FINDING_SYSTEM, ICD10CM, LOINC, SNOMED, bundled_terminology

TERMINOLOGY = bundled_terminology()
INDEX = RouteIndex(vocabulary(), TERMINOLOGY)
LISTED = sorted(TERMINOLOGY.index)  # every (system, code) of every value set
FINDINGS = sorted(
    {str(s["finding"]) for spec in vocabulary().specs.values() for s in spec.sources if "finding" in s}
)


def reference(kind: str, concept: object) -> list[Route]:
    """What the mapper computed before the code table: each coding through the terminology look-up."""
    found: list[Route] = []
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings if isinstance(codings, list) else []:
        if not isinstance(coding, dict):
            continue
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str):
            for route in INDEX.resolve(kind, system, code):
                if all(route is not r for r in found):
                    found.append(route)
    return found


def spellings(system: str, code: str) -> st.SearchStrategy[str]:
    """The code as listed, and as EHRs write it: blanks around it, other case, ICD-10-CM without the dot."""
    return st.sampled_from([code, f" {code} ", code.lower(), code.replace(".", ""), code + "X", ""])


@st.composite
def codings(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:  # not a coding at all
        return draw(st.sampled_from([None, "x", 3, [], {"system": 3, "code": "1"}, {"code": ["a"]}]))
    system, code = draw(st.sampled_from([*LISTED, *((FINDING_SYSTEM, c) for c in FINDINGS)]))
    system = draw(st.sampled_from([system, system, SNOMED, LOINC, ICD10CM, "urn:other"]))
    return {"system": system, "code": draw(spellings(system, code))}


@given(st.sampled_from(KINDS), st.lists(codings(), max_size=4))
def test_the_code_table_agrees_with_the_terminology(kind: str, listed: list[Any]) -> None:
    """For any codings (listed, misspelt, foreign or malformed) the table gives the look-up's routes, in order."""
    concept = {"coding": listed}
    assert INDEX.routes(kind, concept) == reference(kind, concept)


def test_a_code_written_with_blanks_still_finds_its_fact() -> None:
    """A listed code with blanks around it is normalised, as the terminology look-up does."""
    system, code = next((s, c) for s, c in LISTED if s == LOINC and INDEX.resolve("observation", s, c))
    plain = INDEX.routes("observation", {"coding": [{"system": system, "code": code}]})
    assert plain
    assert INDEX.routes("observation", {"coding": [{"system": system, "code": f" {code}\t"}]}) == plain


def test_icd10cm_codes_are_matched_by_range() -> None:
    """An ICD-10-CM code no value set lists (a billed sub-code) still finds its fact by range."""
    code = "C50.911"  # breast cancer, a code of tests/fhir_mappings/test_icd10cm.py
    assert (ICD10CM, code) not in TERMINOLOGY.index
    routes = INDEX.routes("condition", {"coding": [{"system": ICD10CM, "code": code}]})
    assert "active-cancer" in {route.source.get("valueset") for route in routes}


def test_each_route_once_in_the_order_of_the_codings() -> None:
    """Two codings of the same concept give each route once, the first coding's routes first."""
    listed = [
        {"system": FINDING_SYSTEM, "code": FINDINGS[0]},
        {"system": FINDING_SYSTEM, "code": FINDINGS[0]},
    ]
    routes = INDEX.routes("observation", {"coding": listed})
    assert routes == INDEX.routes("observation", {"coding": listed[:1]})
    assert len({id(route) for route in routes}) == len(routes)


def test_a_chart_s_ordinary_codes_feed_nothing() -> None:
    """Laboratory results that no fact reads have no routes."""
    for code in ("2947-0", "2339-0", "6298-4"):  # sodium, glucose, potassium (tests/charts/background)
        assert INDEX.routes("observation", {"coding": [{"system": LOINC, "code": code}]}) == []
