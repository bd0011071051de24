"""The hooks this service answers: each one :class:`HookDefinition`, found by its service id.

A definition is everything that differs between hooks: the service id, the hook it answers, its
title and description, the model of its ``context``, its prefetch templates and its handler. The
rest — request guards, prefetch and fetching, rules, cards, the response check and the audit
record — is the front door's (:mod:`service.hooks.pipeline`) and the same for every hook.

A handler gets the validated context, the patient's data (prefetch checked, the rest fetched) and
a :class:`HookKit`: the decision services for this call (the mapper, the active and shadow rule
packs, the card builder), with the call's ``now`` and card links. It returns a
:class:`HookResult`; :func:`decide_on_chart` is the handler of a hook the chart alone decides.
``calf-pain`` (``patient-view``) is defined in :mod:`service.hooks.discovery`; another hook is one
context model (in :mod:`cds_hooks.models`), one definition and one handler, added to the registry
there. Discovery is generated from the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from cds_hooks.errors import RequestError
from cds_hooks.models import (
    Card,
    DiscoveryResponse,
    HookRequest,
    HookResponse,
    PatientContext,
    ServiceDefinition,
)
from cds_hooks.prefetch_plan import PatientData, search_types
from fhir_mappings.facts import Facts, Vocabulary
from fhir_mappings.mapper import Mapper
from rules.engine import Assessment, Recommendation, evaluate
from rules.pack import RulePack
from service.hooks.cards import ExplanationLink, build_cards

__all__ = [
    "CalfPainService",
    "CardLinks",
    "Handler",
    "HookDefinition",
    "HookKit",
    "HookRegistry",
    "HookResult",
    "decide_on_chart",
]

ContextT = TypeVar("ContextT", bound=PatientContext)


@dataclass(frozen=True, kw_only=True)
class CalfPainService:
    """The decision services, built once per process (``PackRegistry.service``): the mapper and its
    vocabulary, the active and shadow rule packs, and the clock that says "now"."""

    mapper: Mapper
    vocabulary: Vocabulary
    active: RulePack
    shadows: tuple[RulePack, ...] = ()
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class HookResult:
    """What a handler decided: the facts it read, the active pack's assessment, the cards (each beside
    the recommendation it shows) and the shadow packs' assessments."""

    facts: Facts
    assessment: Assessment
    cards: tuple[tuple[Card, Recommendation], ...] = ()
    shadows: tuple[Assessment, ...] = ()

    @property
    def response(self) -> HookResponse:
        return HookResponse(cards=[card for card, _ in self.cards])


@dataclass(frozen=True)
class CardLinks:
    """What cards link to, from the entry point: ``explanation(card_uuid)`` gives a card's explanation
    page, ``app_base_url`` the base of the assessment app (the web app has both, ``calf-cds try`` neither)."""

    explanation: ExplanationLink | None = None
    app_base_url: str | None = None


@dataclass(frozen=True)
class HookKit:
    """What the front door lends a handler for one call: the decision services at ``now``, the card
    links, and the call's audit notes (what the mapper notices is noted as soon as it is read)."""

    services: CalfPainService
    now: datetime
    links: CardLinks = CardLinks()
    notes: list[str] = field(default_factory=list)

    def facts(self, patient_id: str, data: PatientData) -> Facts:
        """The patient's facts from the gathered data."""
        facts = self.services.mapper.map(
            patient_id=patient_id, patient=data.patient, resources=data.resources, now=self.now
        )
        self.notes.extend(facts.notes)
        return facts

    def decide(self, facts: Facts, *, patient_id: str) -> HookResult:
        """The active pack's assessment of ``facts``, its cards, and the shadow packs' assessments."""
        services = self.services
        assessment = evaluate(services.active, facts)
        pairs = build_cards(
            assessment,
            facts,
            services.vocabulary,
            patient_id=patient_id,
            now=self.now,
            explanation_link=self.links.explanation,
            app_base_url=self.links.app_base_url,
        )
        shadows = tuple(evaluate(shadow, facts) for shadow in services.shadows)
        return HookResult(facts, assessment, tuple(pairs), shadows)


Handler = Callable[[ContextT, PatientData, HookKit], HookResult]


def decide_on_chart(context: PatientContext, data: PatientData, kit: HookKit) -> HookResult:
    """The handler of a hook the patient's chart alone decides (``patient-view``): the facts the
    gathered data hold, assessed by the rule packs, as cards. A hook with more to read (the draft
    orders of ``order-sign``) has a handler of its own that adds its facts before ``kit.decide``."""
    return kit.decide(kit.facts(context.patient_id, data), patient_id=context.patient_id)


@dataclass(frozen=True)
class HookDefinition(Generic[ContextT]):
    """One CDS service: ``id`` (in its URL), the ``hook`` it answers and how.

    ``context`` is the model of the hook's context (``context_error`` is the 400's diagnostics when
    a request's context does not fit it); ``prefetch`` the templates, of which ``optional_prefetch``
    may be left out with no fhirServer (read as no data, with a note).
    """

    id: str
    hook: str
    title: str
    description: str
    context: type[ContextT]
    context_error: str
    prefetch: Mapping[str, str]
    handler: Handler[ContextT]
    optional_prefetch: frozenset[str] = frozenset()
    usage_requirements: str | None = None

    @cached_property
    def search_types(self) -> dict[str, str]:
        """The prefetch keys that are searches, and the resource type each returns."""
        return search_types(self.prefetch)

    def read_context(self, request: HookRequest) -> ContextT:
        """The request's context, validated.

        :raises RequestError: for another hook (``/hook``) or a context that does not fit (``/context``).
        """
        if request.hook != self.hook:
            raise RequestError(f"this service answers {self.hook}, not {request.hook!r}", pointer="/hook")
        try:
            return self.context.model_validate(request.context)
        except ValidationError as error:
            raise RequestError(self.context_error, pointer="/context") from error

    def service_definition(self) -> ServiceDefinition:
        """The definition's entry in the discovery document."""
        return ServiceDefinition(
            hook=self.hook,
            id=self.id,
            title=self.title,
            description=self.description,
            prefetch=dict(self.prefetch),
            usage_requirements=self.usage_requirements,
        )


class HookRegistry:
    """The definitions a service offers, by service id, in the order discovery lists them."""

    def __init__(self, definitions: Iterable[HookDefinition[Any]]) -> None:
        self._definitions: dict[str, HookDefinition[Any]] = {}
        for definition in definitions:
            if definition.id in self._definitions:
                raise ValueError(f"two hook definitions with the service id {definition.id!r}")
            self._definitions[definition.id] = definition

    def with_definitions(self, *definitions: HookDefinition[Any]) -> HookRegistry:
        """This registry and ``definitions`` (a test adds a hook this way, the app is given it)."""
        return HookRegistry([*self._definitions.values(), *definitions])

    def get(self, service_id: str) -> HookDefinition[Any] | None:
        return self._definitions.get(service_id)

    def __contains__(self, service_id: object) -> bool:
        return service_id in self._definitions

    def __iter__(self) -> Iterator[HookDefinition[Any]]:
        return iter(self._definitions.values())

    def discovery(self) -> DiscoveryResponse:
        """The discovery document: every definition's service."""
        return DiscoveryResponse(services=[definition.service_definition() for definition in self])
