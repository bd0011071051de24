"""Errors raised by the CDS Hooks protocol layer.

::

    CdsHooksError
    ├── RequestError            the hook request is malformed or inconsistent (→ 400)
    │   └── PrefetchMismatchError   prefetch for another patient or of the wrong type
    ├── PrefetchMissingError    a required prefetch key is missing and cannot be fetched (→ 412)
    └── FhirFetchError          fetching from fhirServer failed (→ 412)
        ├── FhirAuthError           the FHIR server refused the token (401/403)
        ├── FhirUnavailableError    unreachable, timed out, or 5xx after retries
        └── FhirResponseError       the FHIR server answered with something that is not a valid Bundle

Only ``service`` maps these to HTTP status codes.
"""

from __future__ import annotations

__all__ = [
    "CdsHooksError",
    "FhirAuthError",
    "FhirFetchError",
    "FhirResponseError",
    "FhirUnavailableError",
    "PrefetchMismatchError",
    "PrefetchMissingError",
    "RequestError",
]


class CdsHooksError(Exception):
    """Base of every error this package raises."""


class RequestError(CdsHooksError):
    """The hook request is malformed; ``pointer`` is a JSON pointer into the request."""

    def __init__(self, message: str, *, pointer: str = "") -> None:
        super().__init__(message)
        self.pointer = pointer


class PrefetchMismatchError(RequestError):
    """Prefetched data belongs to another patient or is of the wrong resource type."""


class PrefetchMissingError(CdsHooksError):
    """A prefetch key our service needs is missing and there is no ``fhirServer`` to fetch it from."""

    def __init__(self, message: str, *, keys: tuple[str, ...]) -> None:
        super().__init__(message)
        self.keys = keys


class FhirFetchError(CdsHooksError):
    """Fetching from the EHR's FHIR server failed; ``url`` is the query without credentials."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class FhirAuthError(FhirFetchError):
    """The FHIR server refused our bearer token (401 or 403)."""


class FhirUnavailableError(FhirFetchError):
    """The FHIR server was unreachable, timed out, or kept answering 5xx."""


class FhirResponseError(FhirFetchError):
    """The FHIR server answered with a body that is not the Bundle or resource we asked for."""
