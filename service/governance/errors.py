"""Errors of the governance layer (rule-pack releases, the schema, case files).

::

    GovernanceError
    ├── ManifestError       the released-pack manifest is malformed, or a pack breaks it (carries key)
    ├── PackNotFoundError   a pack named on the command line matches no pack, or several (carries spec)
    ├── CaseFileError       a rule test case file is malformed (carries path and case id)
    ├── FeedbackError       a feedback request the CDS Hooks specification does not allow (carries pointer);
    │                       also a ``cds_hooks.errors.RequestError``, answered 400 like any request error
    └── SchemaError         the database schema is not at the revision the code needs

Rule-pack content errors stay ``rules.errors.PackError``; only ``service.http.errors`` maps errors to HTTP.
"""

from __future__ import annotations

from cds_hooks.errors import RequestError

__all__ = [
    "CaseFileError",
    "FeedbackError",
    "GovernanceError",
    "ManifestError",
    "PackNotFoundError",
    "SchemaError",
]


class GovernanceError(Exception):
    """Base of every error this package raises."""


class ManifestError(GovernanceError):
    """A released pack differs from its manifest entry, or the manifest itself is malformed."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class PackNotFoundError(GovernanceError):
    """A pack specification (``id@version``, a version, or a file) names no pack, or several."""

    def __init__(self, message: str, *, spec: str) -> None:
        super().__init__(message)
        self.spec = spec


class CaseFileError(GovernanceError):
    """A rule test case file cannot be read."""

    def __init__(self, message: str, *, path: str, case: str = "") -> None:
        super().__init__(f"{message} ({path}{' case ' + case if case else ''})")
        self.path = path
        self.case = case


class FeedbackError(GovernanceError, RequestError):
    """A feedback request is invalid; ``pointer`` is a JSON pointer into it."""

    def __init__(self, message: str, *, pointer: str) -> None:
        super().__init__(message, pointer=pointer)


class SchemaError(GovernanceError):
    """The database schema is behind (or ahead of) the code."""

    def __init__(self, message: str, *, current: tuple[str, ...], expected: tuple[str, ...]) -> None:
        super().__init__(message)
        self.current = current
        self.expected = expected
