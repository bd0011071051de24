"""Errors raised while turning FHIR resources into facts.

::

    MappingError
    ├── VocabularyError     the fact vocabulary or value sets are inconsistent (found at load)
    └── ResourceError       a resource is malformed where we must read it (carries the element path)
        └── ExtractionError a QuestionnaireResponse cannot be extracted (fhir_mappings.extraction)

Tolerance is the rule: a resource we cannot read is skipped and reported, not raised.
"""

from __future__ import annotations

__all__ = ["MappingError", "ResourceError", "VocabularyError"]


class MappingError(Exception):
    """Base of every error this package raises."""


class VocabularyError(MappingError):
    """The declared fact vocabulary or a value set is inconsistent; ``fact`` names the culprit."""

    def __init__(self, message: str, *, fact: str = "") -> None:
        super().__init__(message)
        self.fact = fact


class ResourceError(MappingError):
    """A FHIR resource is malformed; ``path`` is the FHIR element path (``Observation.valueQuantity``)."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path
