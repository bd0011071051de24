"""The codes the mapper reads, as FHIR search parameters: what narrows a prefetch template.

A chart of 10,000 Observations holds a few dozen the rules read. ``code=`` lists built here from
the fact vocabulary (every value-set code and finding code an ``observation`` or ``report``
source reads) let the EHR send, and the FHIR fetch ask for, only those. What a narrowed query
cannot see: a panel whose own code is not listed but whose components are (read only when the
panel arrives by other means), and codes a site adds through a terminology server.
"""

from __future__ import annotations

from fhir_mappings.facts import Vocabulary
from fhir_mappings.terminology import FINDING_SYSTEM, Terminology

__all__ = ["code_parameter", "search_codes"]


def search_codes(vocabulary: Vocabulary, terminology: Terminology, kind: str) -> tuple[str, ...]:
    """``system|code`` of every code a source ``from: kind`` reads, sorted and unique."""
    found: set[str] = set()
    for spec in vocabulary.specs.values():
        for source in spec.sources:
            if source.get("from") != kind:
                continue
            if "finding" in source:
                found.add(f"{FINDING_SYSTEM}|{source['finding']}")
            name = source.get("valueset")
            if isinstance(name, str):
                found.update(f"{e.system}|{e.code}" for e in terminology.valuesets.get(name, ()))
    return tuple(sorted(found))


def code_parameter(codes: tuple[str, ...]) -> str:
    """``code=1,2,...``: one FHIR token search parameter, OR over its values, codes without their
    systems (a token without ``|`` matches the code in any system; the mapper checks the system
    again). With systems the Observation list is about 8 KB, more than many servers take in a URL;
    without, about 2 KB."""
    bare = sorted({code.rsplit("|", 1)[-1] for code in codes})
    return "code=" + ",".join(c.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|") for c in bare)
