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
from fhir_mappings.orders import DraftOrders, OrderReader, bundled_reader
from rules.engine import Assessment, Recommendation, evaluate
from rules.pack import RulePack
from service.hooks.cards import ExplanationLink, build_cards
from service.hooks.facts_cache import FactsCache, FactsKey, data_digest

__all__ = [
    "CalfPainService",
    "CallOrigin",
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
    vocabulary, the active and shadow rule packs, and the clock that says "now"; for the order hooks,
    the reader of draft orders (the bundled order catalogue, or a site's) and the patient facts an
    ``order-select`` call leaves for the ``order-sign`` that follows (:mod:`service.hooks.facts_cache`)."""

    mapper: Mapper
    vocabulary: Vocabulary
    active: RulePack
    shadows: tuple[RulePack, ...] = ()
    clock: Callable[[], datetime]
    orders: OrderReader = field(default_factory=bundled_reader)
    facts_cache: FactsCache = field(default_factory=FactsCache)

    @property
    def hooks(self) -> frozenset[str]:
        """The hooks answered: ``patient-view`` always, and those the active pack's rules answer."""
        return frozenset({"patient-view", *self.active.hooks()})


@dataclass(frozen=True)
class HookResult:
    """What a handler decided: the facts it read, the active pack's assessment, the cards (each beside
    the recommendation it shows) and the shadow packs' assessments."""

    facts: Facts
    assessment: Assessment
    cards: tuple[tuple[Card, Recommendation], ...] = ()
    shadows: tuple[Assessment, ...] = ()
    drafts: DraftOrders | None = None
    facts_reused_from: str | None = None

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
class CallOrigin:
    """Who made the call and about what data, as far as reusing patient facts must know: the
    ``call_id`` of its audit record, the client's ``issuer`` and the request's ``fhir_server``."""

    call_id: str = ""
    issuer: str | None = None
    fhir_server: str | None = None


@dataclass(frozen=True)
class HookKit:
    """What the front door lends a handler for one call: the decision services at ``now``, the card
    links, and the call's audit notes (what the mapper notices is noted as soon as it is read)."""

    services: CalfPainService
    now: datetime
    links: CardLinks = CardLinks()
    notes: list[str] = field(default_factory=list)
    origin: CallOrigin = CallOrigin()

    def facts(self, patient_id: str, data: PatientData) -> Facts:
        """The patient's facts from the gathered data."""
        facts = self.services.mapper.map(
            patient_id=patient_id, patient=data.patient, resources=data.resources, now=self.now
        )
        self.notes.extend(facts.notes)
        return facts

    def reusable_facts(
        self, context: PatientContext, data: PatientData, *, keep: bool, reuse: bool
    ) -> tuple[Facts, str | None]:
        """The patient's facts, and the call whose facts were reused (``None``: mapped now).

        With ``reuse``, facts an earlier call kept under exactly this call's key (client, FHIR
        server, patient, encounter, user and the data read) are reused; with ``keep``, the facts
        mapped now are kept for a later call (:class:`~service.hooks.facts_cache.FactsCache`).
        """
        key = FactsKey(
            issuer=self.origin.issuer,
            fhir_server=self.origin.fhir_server,
            patient_id=context.patient_id,
            encounter_id=context.encounter_id,
            user_id=context.user_id,
            digest=data_digest(data),
        )
        cache = self.services.facts_cache
        if reuse and (hit := cache.get(key, now=self.now)) is not None:
            facts, call_id = hit
            self.notes.extend(facts.notes)
            self.notes.append(f"patient facts reused from call {call_id} (same patient data)")
            return facts, call_id
        facts = self.facts(context.patient_id, data)
        if keep:
            cache.put(key, facts, call_id=self.origin.call_id, now=self.now)
        return facts, None

    def decide(
        self,
        facts: Facts,
        *,
        patient_id: str,
        hook: str = "patient-view",
        drafts: DraftOrders | None = None,
        encounter_id: str | None = None,
    ) -> HookResult:
        """The active pack's assessment of ``facts`` for ``hook``, its cards, and the assessments of
        the shadow packs that answer ``hook``. ``drafts`` (order hooks) are what a suggestion's
        delete removes; a suggestion's new order names ``encounter_id`` when given."""
        services = self.services
        assessment = evaluate(services.active, facts, hook=hook)
        pairs = build_cards(
            assessment,
            facts,
            services.vocabulary,
            patient_id=patient_id,
            now=self.now,
            explanation_link=self.links.explanation,
            app_base_url=self.links.app_base_url,
            hook=hook,
            drafts=drafts,
            encounter_id=encounter_id,
        )
        shadows = tuple(
            evaluate(shadow, facts, hook=hook) for shadow in services.shadows if hook in shadow.hooks()
        )
        return HookResult(facts, assessment, tuple(pairs), shadows, drafts=drafts)


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
            # a member of the hook's own context is pointed at (/context/draftOrders); the
            # members every patient hook shares keep the pointer /context
            where = str(error.errors()[0]["loc"][0]) if error.errors()[0]["loc"] else ""
            own = where and where not in {"userId", "patientId", "encounterId"}
            raise RequestError(
                self.context_error, pointer=f"/context/{where}" if own else "/context"
            ) from error

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

    def discovery(self, hooks: Iterable[str] | None = None) -> DiscoveryResponse:
        """The discovery document: every definition's service (only those of ``hooks`` if given: the
        hooks the active rule pack answers)."""
        answered = None if hooks is None else frozenset(hooks)
        return DiscoveryResponse(
            services=[
                definition.service_definition()
                for definition in self
                if answered is None or definition.hook in answered
            ]
        )
