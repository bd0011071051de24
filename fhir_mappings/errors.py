"""Errors raised while turning FHIR resources into facts.

::

    MappingError
    ├── VocabularyError     the fact vocabulary or value sets are inconsistent (found at load)
    │   └── OrderCatalogueError  the order catalogue or a site's order file is invalid (carries path, pointer)
    └── ExtractionError     a QuestionnaireResponse cannot be extracted (carries the element path;
                            defined in fhir_mappings.extraction)

Tolerance is the rule: a chart resource we cannot read is skipped and reported, not raised. Only a
QuestionnaireResponse sent to ``$extract`` is refused whole when it is malformed.
"""

from __future__ import annotations

__all__ = ["MappingError", "OrderCatalogueError", "VocabularyError"]


class MappingError(Exception):
    """Base of every error this package raises."""


class VocabularyError(MappingError):
    """The declared fact vocabulary or a value set is inconsistent; ``fact`` names the culprit."""

    def __init__(self, message: str, *, fact: str = "") -> None:
        super().__init__(message)
        self.fact = fact


class OrderCatalogueError(VocabularyError):
    """The order catalogue (``data/orderables.json``) or a site's order file is invalid; ``path``
    names the file and ``pointer`` the JSON pointer into it."""

    def __init__(self, message: str, *, path: str, pointer: str = "") -> None:
        super().__init__(f"{message} ({path}{pointer and ' at ' + pointer})")
        self.path = path
        self.pointer = pointer
