"""The patient's data for one hook call: prefetch checked against the service's templates, the rest fetched.

The templates are the hook definition's (a service's discovery ``prefetch``): nothing here knows
which service asks. Per prefetch template key, CDS Hooks 2.0.1 allows four states (:class:`PrefetchState`):

==============  =====================================================================================
state           what we do
==============  =====================================================================================
``PRESENT``     check it against the template (a read: that resource; a search: a Bundle of that
                type, or one resource of it); complete a searchset Bundle with a ``next`` link
``NULL``        no data: nothing to fetch
``OUTCOME``     the client's fetch failed: fetch it ourselves
``MISSING``     fetch it ourselves (an optional key with no fhirServer: read as no data, with a note)
==============  =====================================================================================

A value whose type does not fit its template is a :class:`PrefetchMismatchError` (400). Inside
Bundles, resources of other types and the server's ``search.mode = outcome`` messages are ignored
and a note says so; the mapper notes resources about another patient. Keys we did not ask for are
ignored. Fetching (and paging) is done by a :class:`Fetcher` (``service.hooks.fhir_fetcher.FhirFetcher``
in production) with the request's ``fhirServer`` and ``fhirAuthorization``; without a
``fhirServer`` a key that must be fetched is a :class:`PrefetchMissingError` (412).

:func:`check_prefetch_subjects` refuses, before anything else is read, prefetched resources whose
subject is another patient than the context's (:class:`PrefetchMismatchError`, 400).
"""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from cds_hooks.errors import CdsHooksError, PrefetchMismatchError, PrefetchMissingError
from cds_hooks.models import HookRequest
from cds_hooks.prefetch import (
    JSON_OBJECT,
    Ignored,
    PrefetchState,
    bundle_resources,
    classify,
    json_pointer,
    next_link,
)
from cds_hooks.prefetch_template import render_template

__all__ = [
    "FetchPlan",
    "Fetched",
    "Fetcher",
    "KeyQuery",
    "PatientData",
    "check_prefetch_subjects",
    "gather_patient_data",
    "search_types",
]

Resource = Mapping[str, Any]
_Unpacked = tuple[list[dict[str, Any]], list[Ignored]]
#: Ignored resources named one by one in the notes, per key; the rest are counted.
MAX_NOTES_PER_KEY = 20
_READ = re.compile(r"(?P<type>[A-Z][A-Za-z]{0,63})/(?P<id>[^/?]+)")
_SEARCH = re.compile(r"(?P<type>[A-Z][A-Za-z]{0,63})(?:\?.*)?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class KeyQuery:
    """One prefetch template rendered for this call: a read (``read_id`` set) or a search."""

    key: str
    query: str
    resource_type: str
    read_id: str | None

    @classmethod
    def parse(cls, key: str, query: str) -> KeyQuery:
        """Tell a read (``Patient/123``) from a type-level search (``Observation?patient=123``).

        :raises PrefetchMismatchError: for any other shape (a template we cannot check values of).
        """
        read = _READ.fullmatch(query)
        if read:
            return cls(key, query, read["type"], unquote(read["id"]))
        search = _SEARCH.fullmatch(query)
        if search:
            return cls(key, query, search["type"], None)
        raise PrefetchMismatchError(
            f"prefetch template {key!r} is neither a read nor a type-level search",
            pointer=json_pointer("prefetch", key),
        )


@dataclass(frozen=True)
class FetchPlan:
    """What a :class:`Fetcher` must get: ``queries`` (key → relative query, for missing and
    OperationOutcome keys) and ``pages`` (key → a prefetched searchset page with a ``next`` link)."""

    queries: Mapping[str, str] = field(default_factory=dict)
    pages: Mapping[str, Resource] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.queries or self.pages)


@dataclass(frozen=True)
class Fetched:
    """A fetcher's answer: key → resource, Bundle or ``None``; and what it noticed (no secrets)."""

    values: dict[str, Any]
    notes: tuple[str, ...] = ()


class Fetcher(Protocol):
    """Fetches a :class:`FetchPlan` from ``request.fhir_server`` with ``request.fhir_authorization``.

    Raises :class:`cds_hooks.errors.FhirFetchError` leaves when the FHIR server fails.
    """

    async def __call__(self, request: HookRequest, plan: FetchPlan) -> Fetched: ...


@dataclass(frozen=True)
class PatientData:
    """What the mapper reads: the Patient (if any) and the Observations and Conditions."""

    patient: Resource | None
    resources: list[Resource]


async def _run(fetcher: Fetcher, request: HookRequest, plan: FetchPlan) -> Fetched:
    return await fetcher(request, plan) if plan else Fetched({})


async def gather_patient_data(
    request: HookRequest,
    *,
    patient_id: str,
    user_id: str | None,
    today: datetime.date,
    fetcher: Fetcher | None,
    states: dict[str, str],
    notes: list[str],
    templates: Mapping[str, str],
    optional: frozenset[str] = frozenset(),
) -> PatientData:
    """Check the prefetch against ``templates``, fetch what is missing or paged, and unpack every value.

    Keys in ``optional`` that are missing with no fhirServer to fetch them are read as no data
    (with a note) instead of a :class:`PrefetchMissingError`.

    ``states`` (key → state, with ``+fetched`` or ``+paged`` when we fetched) and ``notes`` are
    filled as it goes, so the audit record has them even when an error is raised.

    :raises RequestError: for a malformed prefetch value (400).
    :raises PrefetchMismatchError: for a value that does not fit its template (400).
    :raises PrefetchTemplateError: when a template cannot be rendered for this context (400).
    :raises PrefetchMissingError: when data must be fetched and there is no fhirServer (412).
    :raises FhirFetchError: when fetching fails (412).
    """
    context = request.context
    queries = {
        key: KeyQuery.parse(key, render_template(template, context=context, user_id=user_id, today=today))
        for key, template in templates.items()
    }
    prefetch = request.prefetch or {}
    notes.extend(
        f"ignored prefetch key {key!r}: not one of our templates" for key in prefetch if key not in queries
    )
    values: dict[str, Any] = {}
    unpacked: dict[str, tuple[Any, _Unpacked]] = {}
    to_fetch: dict[str, str] = {}
    pages: dict[str, Resource] = {}
    for key, query in queries.items():
        state = classify(prefetch, key)
        states[key] = state.value
        if state is PrefetchState.PRESENT:
            value = prefetch[key]
            if (bundle := _check(query, value, patient_id)) is not None:
                unpacked[key] = (value, bundle)
            values[key] = value
            if query.read_id is None and value["resourceType"] == "Bundle" and next_link(value):
                pages[key] = value
        elif state is PrefetchState.NULL:
            values[key] = None
        else:
            to_fetch[key] = query.query
    can_fetch = fetcher is not None and request.fhir_server is not None
    if not can_fetch:
        for key in [k for k in to_fetch if k in optional]:
            del to_fetch[key]
            values[key] = None
            states[key] += "+not-read"
            notes.append(f"{key}: not in the prefetch and no fhirServer to fetch it: read as no data")
    if to_fetch and not can_fetch:
        raise PrefetchMissingError(
            "prefetch lacks " + ", ".join(to_fetch) + " and no fhirServer was given to fetch it",
            keys=tuple(to_fetch),
        )
    if pages and not can_fetch:
        notes.extend(f"{key}: only the first page was read (no fhirServer to follow 'next')" for key in pages)
        pages = {}
    plan = FetchPlan(queries={k: q for k, q in to_fetch.items() if k not in optional}, pages=pages)
    extra = FetchPlan(queries={k: q for k, q in to_fetch.items() if k in optional})
    if (plan or extra) and fetcher is not None:
        required, more = await asyncio.gather(
            _run(fetcher, request, plan), _run(fetcher, request, extra), return_exceptions=True
        )
        if isinstance(required, BaseException):
            raise required
        if isinstance(more, CdsHooksError):
            # an optional key the server cannot give degrades to "no data", like a null prefetch
            notes.append(f"{', '.join(extra.queries)}: not fetched ({more}): read as no data")
            more = Fetched(dict.fromkeys(extra.queries))
        elif isinstance(more, BaseException):
            raise more
        for fetched, done in ((required, plan), (more, extra)):
            notes.extend(fetched.notes)
            for key in done.queries:
                values[key] = fetched.values.get(key)
                states[key] += "+fetched"
                if values[key] is None and queries[key].read_id is not None:
                    notes.append(f"{key}: {queries[key].query} not found on fhirServer")
        for key in plan.pages:
            values[key] = required.values.get(key, values[key])
            states[key] += "+paged"
    return _unpack(queries, values, notes, unpacked)


def _check(query: KeyQuery, value: Resource, patient_id: str) -> _Unpacked | None:
    """A present value fits its template: the resource read, or a well-formed Bundle (or one
    resource) of the type searched. Checked before any fetch, so a bad request is a 400 at once.
    A Bundle's resources, read to check it, are returned for :func:`_unpack` to reuse."""
    kind = value["resourceType"]
    pointer = json_pointer("prefetch", query.key)
    if query.read_id is not None:
        if kind != query.resource_type:
            raise PrefetchMismatchError(
                f"prefetch {query.key!r} holds {kind!r}, expected the {query.resource_type} "
                f"its template reads",
                pointer=pointer + "/resourceType",
            )
        if value.get("id") != query.read_id:
            whose = (
                "the context patient" if kind == "Patient" and query.read_id == patient_id else query.query
            )
            raise PrefetchMismatchError(f"prefetch {query.key!r} is not {whose}", pointer=pointer + "/id")
    elif kind not in ("Bundle", query.resource_type):
        raise PrefetchMismatchError(
            f"prefetch {query.key!r} holds {kind!r}, expected a Bundle of {query.resource_type}",
            pointer=pointer + "/resourceType",
        )
    elif kind == "Bundle":
        return bundle_resources(value, expected_types=frozenset({query.resource_type}), pointer=pointer)
    return None


def _unpack(
    queries: Mapping[str, KeyQuery],
    values: Mapping[str, Any],
    notes: list[str],
    unpacked: Mapping[str, tuple[Any, _Unpacked]],
) -> PatientData:
    """Every value's resources; a prefetched Bundle is read once (``unpacked`` by :func:`_check`,
    unless a fetch replaced it)."""
    patient: Resource | None = None
    resources: list[Resource] = []
    for key, query in queries.items():
        value = values.get(key)
        if value is None:
            continue
        checked, bundle = unpacked.get(key, (None, None))
        if checked is value and bundle is not None:
            kept, ignored = bundle
        else:
            kept, ignored = bundle_resources(
                value, expected_types=frozenset({query.resource_type}), pointer=json_pointer("prefetch", key)
            )
        notes.extend(
            f"ignored {item.resource_type}/{item.id or '?'} in {key}: {item.reason}"
            for item in ignored[:MAX_NOTES_PER_KEY]
        )
        if len(ignored) > MAX_NOTES_PER_KEY:
            notes.append(f"ignored {len(ignored) - MAX_NOTES_PER_KEY} more resources in {key}")
        if query.resource_type == "Patient" and query.read_id is not None:
            patient = kept[0] if kept else None
        else:
            resources.extend(kept)
    return PatientData(patient=patient, resources=resources)


def search_types(templates: Mapping[str, str]) -> dict[str, str]:
    """The search keys of ``templates`` and the resource type each returns (reads are not searches)."""
    return {key: template.split("?", 1)[0] for key, template in templates.items() if "?" in template}


def check_prefetch_subjects(request: HookRequest, search_keys: Iterable[str]) -> None:
    """Refuse prefetched resources under ``search_keys`` whose subject is another patient.

    Only a subject written as a ``Patient/<id>`` reference (relative or absolute) is compared; other
    shapes (``urn:uuid:``, identifiers) cannot be checked here and are left to the mapper, which
    reads only resources about the context patient.

    :raises PrefetchMismatchError: pointing at the subject reference (400).
    """
    patient_id = request.context.get("patientId")
    if not isinstance(patient_id, str) or not isinstance(request.prefetch, Mapping):
        return
    own = f"Patient/{patient_id}"
    for key in search_keys:
        value = request.prefetch.get(key)
        if not isinstance(value, Mapping):
            continue
        if value.get("resourceType") != "Bundle":
            if _names_another_patient(_subject_reference(value), patient_id):
                raise _another_patient(f"/prefetch/{key}")
            continue
        entries = value.get("entry")
        if not isinstance(entries, list):
            continue
        # every resource of the chart, inline: the everyday reference is the context patient's own
        # (or none); the pointer is written only for the resource refused
        for index, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, JSON_OBJECT) else None
            subject = resource.get("subject") if isinstance(resource, JSON_OBJECT) else None
            reference = subject.get("reference") if isinstance(subject, JSON_OBJECT) else None
            if reference is not None and reference != own and _names_another_patient(reference, patient_id):
                raise _another_patient(f"/prefetch/{key}/entry/{index}/resource")


def _subject_reference(resource: Mapping[str, Any]) -> object:
    subject = resource.get("subject")
    return subject.get("reference") if isinstance(subject, Mapping) else None


def _names_another_patient(reference: object, patient_id: str) -> bool:
    """Whether ``reference`` is a ``Patient/<id>`` reference (relative or absolute) to another patient."""
    if not isinstance(reference, str):
        return False
    kind, _, subject_id = reference.rstrip("/").rpartition("/")
    return (kind == "Patient" or kind.endswith("/Patient")) and subject_id != patient_id


def _another_patient(pointer: str) -> PrefetchMismatchError:
    return PrefetchMismatchError(
        "prefetch holds a resource about another patient", pointer=f"{pointer}/subject/reference"
    )
