"""Draft orders (the ``draftOrders`` Bundle of ``order-select`` / ``order-sign``) → order facts.

Order kinds and their verified codes are the catalogue's (:mod:`fhir_mappings.orderables`:
venous duplex, D-dimer, venography, arterial imaging, ABI, compression, lumbar MRI, rest-and-ice advice,
analgesic, anticoagulant; a site adds its own codes with a site file).
A draft order is of a kind when ANY of its codings is one of that kind's codes (system and code):
``ServiceRequest.code``, ``DeviceRequest.codeCodeableConcept``, ``MedicationRequest``'s
``medicationCodeableConcept`` or the code of the contained Medication it references; a medication
kind also by WHO ATC prefix or by an ingredient name in the text or displays. An order of no known
kind gives no fact: only red flags (which read the patient, not the orders) then give a card.

Two facts per kind, both boolean and declared in ``data/facts.json`` (``"origin": "draft-orders"``):

* ``order_<kind>``: an order of this kind is being decided now — on ``order-select`` the selected
  orders (``context.selections``), on ``order-sign`` every draft; what a card is about;
* ``draft_<kind>``: an order of this kind is anywhere in the draft orders (selected or not): the rest
  of the plan, e.g. whether a DVT work-up is ordered beside an analgesic.

Each is ``True`` with the draft orders as evidence (``ServiceRequest/123`` and the coding that
matched) or ``False`` (the whole Bundle was read and holds none). Fail-safe reading:

* only ``draft`` and ``active`` orders (or one with no status) are read; any other status
  (``on-hold``, ``revoked``, ``completed``, ``entered-in-error``, ``cancelled``, ``stopped``,
  ``unknown``) and a ``doNotPerform`` order are not an order of the kind and are noted;
* an order about another patient is ignored, noted and listed in :attr:`DraftOrders.foreign`
  (the service answers such a request with a 400, as it does prefetch about another patient);
  an order with no subject is read as the context patient's (the hook puts it there);
* a code that does not name the limb (``"site": "extremity"``) is not read when the order's
  ``bodySite`` names somewhere that is not the leg (an arm);
* on ``order-select``, selections that name no draft order make every draft "being ordered"
  (advice rather than silence), with a note;
* whatever cannot be read (not a Bundle, an entry that is not a resource) is skipped and noted,
  never raised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from fhir_mappings.errors import MappingError
from fhir_mappings.facts import Evidence, Fact, Vocabulary, vocabulary
from fhir_mappings.fhir_json import codings, get, items, parse_datetime, text
from fhir_mappings.orderables import ATC, OrderCatalogue, bundled_catalogue
from fhir_mappings.reading import names_elsewhere
from fhir_mappings.terminology import listed_terminology

__all__ = [
    "ORDER_HOOKS",
    "ORDER_RESOURCES",
    "READ_STATUSES",
    "DraftOrder",
    "DraftOrders",
    "Match",
    "OrderReader",
    "bundled_reader",
    "order_facts",
]

ORDER_HOOKS = ("order-select", "order-sign")
ORDER_RESOURCES = ("ServiceRequest", "MedicationRequest", "DeviceRequest")
READ_STATUSES = frozenset({"draft", "active"})


@dataclass(frozen=True, slots=True)
class Match:
    """Why an order is of a kind: the coding (system, code, display), an ATC class or a name."""

    kind: str
    system: str
    code: str
    display: str

    def shown(self) -> str:
        return f"{self.display} ({self.code})" if self.display and self.display != self.code else self.code


@dataclass(frozen=True, slots=True)
class DraftOrder:
    """One draft order that was read, with the kinds it is and whether it is being decided now."""

    resource_type: str
    id: str | None
    status: str | None
    selected: bool
    matches: tuple[Match, ...]
    label: str
    when: datetime | None = None
    laterality: str | None = None

    @property
    def reference(self) -> str:
        """``ServiceRequest/123`` (``ServiceRequest/?`` without an id: it cannot be deleted by reference)."""
        return f"{self.resource_type}/{self.id or '?'}"

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(match.kind for match in self.matches))


@dataclass(frozen=True)
class DraftOrders:
    """The draft orders of one order-hook call, as read (see the module docstring)."""

    hook: str
    orders: tuple[DraftOrder, ...] = ()
    foreign: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def of_kind(self, kind: str, *, selected_only: bool = False) -> tuple[DraftOrder, ...]:
        return tuple(o for o in self.orders if kind in o.kinds and (o.selected or not selected_only))

    def delete_targets(self, kind: str) -> tuple[str, ...]:
        """The ``resourceId`` of every draft of ``kind`` a suggestion's delete removes (drafts with an id)."""
        return tuple(o.reference for o in self.of_kind(kind) if o.id)


class OrderReader:
    """Reads draft orders against a catalogue; built once (checked against the vocabulary), reused."""

    def __init__(self, catalogue: OrderCatalogue, vocab: Vocabulary) -> None:
        catalogue.check(vocab)
        self.catalogue = catalogue
        self.vocabulary = vocab
        self._sides = listed_terminology()
        self._names = {
            kind.name: [(n, re.compile(rf"\b{re.escape(n)}\b", re.IGNORECASE)) for n in kind.names]
            for kind in catalogue.kinds.values()
        }

    def read(
        self, draft_orders: object, *, patient_id: str, hook: str, selections: object = None
    ) -> tuple[DraftOrders, dict[str, Fact]]:
        """The draft orders of a call and the ``order_<kind>`` / ``draft_<kind>`` facts they give."""
        if hook not in ORDER_HOOKS:
            raise MappingError(f"draft orders belong to an order hook, not {hook!r}")
        notes: list[str] = []
        foreign: list[str] = []
        read: list[tuple[Mapping[str, Any], str | None, str]] = []
        for resource in _resources(draft_orders, notes):
            kind = resource.get("resourceType")
            ident = resource.get("id") if isinstance(resource.get("id"), str) else None
            reference = f"{kind}/{ident or '?'}"
            if kind not in ORDER_RESOURCES:
                notes.append(f"ignored draft order {_quote(reference)}: resource type not read")
                continue
            owner = _subject(resource)
            if owner is not None and not (
                owner == f"Patient/{patient_id}" or owner.endswith(f"/Patient/{patient_id}")
            ):
                notes.append(f"ignored draft order {_quote(reference)}: not about the context patient")
                foreign.append(reference)
                continue
            if owner is None:
                notes.append(f"draft order {_quote(reference)} has no subject: read as the context patient's")
            status = resource.get("status") if isinstance(resource.get("status"), str) else None
            if status is not None and status not in READ_STATUSES:
                notes.append(f"ignored draft order {_quote(reference)}: status {_quote(status)}")
                continue
            if resource.get("doNotPerform") is True:
                notes.append(f"ignored draft order {_quote(reference)}: do not perform")
                continue
            read.append((resource, ident, str(kind)))
        chosen = self._selected(read, hook, selections, notes)
        orders = tuple(
            self._order(resource, ident, kind, selected=(f"{kind}/{ident}" in chosen if chosen else True))
            for resource, ident, kind in read
        )
        found = DraftOrders(hook=hook, orders=orders, foreign=tuple(foreign), notes=tuple(notes))
        return found, self._facts(found)

    def _selected(
        self,
        read: list[tuple[Mapping[str, Any], str | None, str]],
        hook: str,
        selections: object,
        notes: list[str],
    ) -> frozenset[str]:
        """The references being decided now; empty = all of them."""
        if hook == "order-sign":
            return frozenset()
        wanted = (
            frozenset(s for s in selections if isinstance(s, str))
            if isinstance(selections, list)
            else frozenset()
        )
        present = {f"{kind}/{ident}" for _, ident, kind in read if ident}
        if not wanted & present:
            if read:
                notes.append("no selection names a draft order: every draft order is read as selected")
            return frozenset()
        return wanted & present

    def _order(
        self, resource: Mapping[str, Any], ident: str | None, kind: str, *, selected: bool
    ) -> DraftOrder:
        concepts = _concepts(resource, kind)
        sites = resource.get("bodySite")
        elsewhere = names_elsewhere(" ".join(text(s) for s in items(sites))) and not self._leg_site(sites)
        matches: list[Match] = []
        for concept in concepts:
            for coding in codings(concept):
                for orderable in self.catalogue.lookup(coding.get("system"), coding.get("code")):
                    if self.catalogue.kinds[orderable.kind].medication != (kind == "MedicationRequest"):
                        continue
                    if orderable.site == "extremity" and elsewhere:
                        continue
                    shown = coding.get("display")
                    matches.append(
                        Match(
                            orderable.kind,
                            orderable.system,
                            orderable.code,
                            shown if isinstance(shown, str) else orderable.display,
                        )
                    )
        if kind == "MedicationRequest":
            matches += self._medication(concepts)
        label = next((t for t in (_label(c) for c in concepts) if t), "") or kind
        when = parse_datetime(resource.get("authoredOn"))
        status = resource.get("status") if isinstance(resource.get("status"), str) else None
        return DraftOrder(kind, ident, status, selected, tuple(matches), label, when, self._laterality(sites))

    def _medication(self, concepts: list[object]) -> list[Match]:
        atc = [
            str(c["code"])
            for concept in concepts
            for c in codings(concept)
            if c.get("system") == ATC and isinstance(c.get("code"), str)
        ]
        words = " ".join(text(concept) for concept in concepts)
        found: list[Match] = []
        for kind in self.catalogue.kinds.values():
            if not kind.medication:
                continue
            code = next((code for code in atc if code.startswith(kind.atc)), None) if kind.atc else None
            if code is not None:
                found.append(Match(kind.name, ATC, code, f"ATC {code}"))
                continue
            name = next((n for n, pattern in self._names[kind.name] if pattern.search(words)), None)
            if name is not None:
                found.append(Match(kind.name, "name", name, f"ingredient {name}"))
        return found

    def _leg_site(self, sites: object) -> bool:
        return any(
            self._sides.lookup(c.get("system"), c.get("code")) for s in items(sites) for c in codings(s)
        )

    def _laterality(self, sites: object) -> str | None:
        found = {
            e.laterality
            for s in items(sites)
            for c in codings(s)
            for e in self._sides.lookup(c.get("system"), c.get("code"))
            if e.laterality
        }
        if "bilateral" in found or {"left", "right"} <= found:
            return "bilateral"
        return found.pop() if len(found) == 1 else None

    def _facts(self, found: DraftOrders) -> dict[str, Fact]:
        facts: dict[str, Fact] = {}
        for kind in self.catalogue.kinds.values():
            for name, selected_only in ((kind.fact, True), (kind.draft_fact, False)):
                orders = found.of_kind(kind.name, selected_only=selected_only)
                evidence = tuple(
                    Evidence(
                        reference=order.reference,
                        label=match.display or kind.label,
                        value=f"{'selected ' if order.selected and found.hook == 'order-select' else ''}{order.status or 'draft'} order: {match.shown()}",
                        when=order.when,
                        laterality=order.laterality,
                        status=order.status,
                    )
                    for order in orders
                    for match in order.matches
                    if match.kind == kind.name
                )
                when = max((o.when for o in orders if o.when), default=None)
                facts[name] = Fact(name, bool(orders), evidence, when)
        return facts


def _resources(bundle: object, notes: list[str]) -> list[Mapping[str, Any]]:
    if bundle is None:
        return []
    if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
        notes.append("draftOrders is not a Bundle: no draft order read")
        return []
    entries = bundle.get("entry")
    if entries is None:
        return []
    if not isinstance(entries, list):
        notes.append("draftOrders.entry is not a list: no draft order read")
        return []
    found: list[Mapping[str, Any]] = []
    for number, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            notes.append(f"ignored draftOrders.entry[{number}]: no resource")
            continue
        found.append(resource)
    return found


def _subject(resource: Mapping[str, Any]) -> str | None:
    reference = get(resource, "subject", "reference")
    return reference if isinstance(reference, str) and reference else None


def _concepts(resource: Mapping[str, Any], kind: str) -> list[object]:
    if kind == "ServiceRequest":
        return [resource.get("code")]
    if kind == "DeviceRequest":
        return [resource.get("codeCodeableConcept"), _reference_text(resource.get("codeReference"))]
    found: list[object] = [resource.get("medicationCodeableConcept")]
    reference = get(resource, "medicationReference", "reference")
    if isinstance(reference, str) and reference.startswith("#"):
        for contained in items(resource.get("contained")):
            if contained.get("resourceType") == "Medication" and contained.get("id") == reference[1:]:
                found.append(contained.get("code"))
    found.append(_reference_text(resource.get("medicationReference")))
    return found


def _label(concept: object) -> str:
    """A concept's text, else its first display: what the order is called."""
    if not isinstance(concept, Mapping):
        return ""
    found = concept.get("text")
    if isinstance(found, str) and found.strip():
        return found
    return next((d for c in codings(concept) if isinstance(d := c.get("display"), str) and d.strip()), "")


def _reference_text(reference: object) -> object:
    display = reference.get("display") if isinstance(reference, Mapping) else None
    return {"text": display} if isinstance(display, str) else None


def _quote(value: str) -> str:
    """A request-supplied string in a note: cut short and without line breaks (escaped again on output)."""
    flat = " ".join(value.split())
    return flat if len(flat) <= 80 else flat[:79] + "…"


@cache
def bundled_reader() -> OrderReader:
    return OrderReader(bundled_catalogue(), vocabulary())


def order_facts(
    draft_orders: object,
    *,
    patient_id: str,
    hook: str,
    selections: object = None,
    reader: OrderReader | None = None,
) -> tuple[DraftOrders, dict[str, Fact]]:
    """The draft orders of an order-hook call and their facts (bundled catalogue unless ``reader``).

    Merge with the patient's facts: ``facts.with_facts(extra.values(), notes=drafts.notes)``.
    """
    return (reader or bundled_reader()).read(
        draft_orders, patient_id=patient_id, hook=hook, selections=selections
    )
