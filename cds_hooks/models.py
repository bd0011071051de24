"""CDS Hooks 2.0.1 data models: discovery, hook request, response (cards), feedback.

Requests are parsed leniently (unknown fields ignored, as the spec requires of services);
responses are built strictly and serialised without null or empty values.
Prefetch values stay plain JSON (``dict``): FHIR resources are parsed by ``fhir_mappings``.

The response models are the card contract of CDS Hooks 2.0.1: besides each element's type, their
validators hold the rules between elements (``selectionBehavior`` exactly when there are
suggestions, a resource on a create or update action, absolute URLs, ``appContext`` only on a
SMART link, a ``display`` on every override reason). Cards the service builds satisfy them by
construction, and :mod:`cds_hooks.card_contract` checks a response's JSON against the same models
before it leaves, adding the one rule of the wire form: no null, empty string, empty list or empty
object anywhere (:func:`empty_members`, the mirror of what ``to_json`` prunes).

Stored strings: a request string that the service keeps in a text column of its audit trail has
the column's maximum length and may not hold U+0000 (NUL), which PostgreSQL cannot store in text;
such a string is refused (400), never cut or changed (see the README, "What the audit trail
stores"). Strings kept only inside JSON columns (prefetched resources) are stored as they came.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "NO_NUL",
    "AcceptedSuggestion",
    "Action",
    "Card",
    "Coding",
    "DiscoveryResponse",
    "FeedbackCoding",
    "FeedbackEntry",
    "FeedbackRequest",
    "FhirAuthorization",
    "HookRequest",
    "HookResponse",
    "Indicator",
    "Link",
    "OrderSelectContext",
    "OrderSignContext",
    "OverrideReason",
    "PatientContext",
    "PatientViewContext",
    "ServiceDefinition",
    "Source",
    "Suggestion",
    "empty_members",
]

Indicator = Literal["info", "warning", "critical"]
NO_NUL = r"^[^\x00]*$"  # a stored string: PostgreSQL text cannot hold U+0000


class _Incoming(BaseModel):
    """Something a CDS client sends: unknown fields are ignored, never an error."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class _Outgoing(BaseModel):
    """Something we send: unknown fields are a programming error."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON object, with no null, empty string, empty list or empty object anywhere."""
        pruned: dict[str, Any] = _prune(self.model_dump(by_alias=True, mode="json"))
        return pruned


def _prune(value: Any) -> Any:
    """``value`` without null, empty string, empty list or empty object members, at any depth
    (list items are kept as they are, pruned inside). One pass: this runs on every response."""
    if isinstance(value, dict):
        pruned: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, dict | list):
                item = _prune(item)
                if not item:
                    continue
            elif item is None or item == "":
                continue
            pruned[key] = item
        return pruned
    if isinstance(value, list):
        return [_prune(item) for item in value]
    return value


def empty_members(value: Any, pointer: str = "") -> Iterator[str]:
    """Where a JSON value holds a null, an empty string, an empty list or an empty object, which the
    wire form of a response never does (``to_json`` prunes them): one ``"<pointer>: null or empty"``
    each."""
    if value is None or value == "" or value == [] or value == {}:
        yield f"{pointer}: null or empty"
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from empty_members(item, f"{pointer}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from empty_members(item, f"{pointer}/{index}")


def contract_error(message: str, *, at: str = "") -> PydanticCustomError:
    """A broken card rule; ``at`` continues the error's location below the validated field
    (``0/display``), so that :mod:`cds_hooks.card_contract` can point at the element itself."""
    return PydanticCustomError("card_contract", message, {"at": at})


def _absolute_url(value: str | None) -> str | None:
    if value is not None and not (value.startswith(("https://", "http://")) and len(value) > 8):
        raise contract_error("not an absolute URL")
    return value


# --- requests -------------------------------------------------------------------------------


class FhirAuthorization(_Incoming):
    """OAuth 2.0 access token the client grants for its FHIR server (never stored or logged)."""

    access_token: str = Field(min_length=1)
    token_type: Literal["Bearer"]
    expires_in: int = Field(strict=True)  # an integer, as the spec says: not "3600", not true
    scope: str
    subject: str
    patient: str | None = None

    def __repr__(self) -> str:  # keep the token out of any accidental log line
        return f"FhirAuthorization(token_type={self.token_type!r}, scope={self.scope!r})"

    __str__ = __repr__


class PatientContext(_Incoming):
    """What the context of every hook about one patient holds (``patient-view``, ``order-select``,
    ``order-sign``): the user, the patient and, if any, the encounter. A hook's own context model
    adds its members (e.g. ``draftOrders``)."""

    user_id: str = Field(alias="userId", min_length=1, max_length=256, pattern=NO_NUL)
    patient_id: str = Field(alias="patientId", min_length=1, max_length=64, pattern=NO_NUL)
    encounter_id: str | None = Field(default=None, alias="encounterId")


class PatientViewContext(PatientContext):
    """Context of the ``patient-view`` hook."""


class OrderSignContext(PatientContext):
    """Context of the ``order-sign`` hook (1.1): ``draftOrders``, a FHIR Bundle of the draft orders
    being signed. Only its being a JSON object is checked here; what is inside is read fail-safe by
    :mod:`fhir_mappings.orders` (never an error)."""

    draft_orders: dict[str, Any] = Field(alias="draftOrders")


class OrderSelectContext(OrderSignContext):
    """Context of the ``order-select`` hook (1.0): ``selections``, the ``ResourceType/id`` of the
    newly selected orders (at least one), and ``draftOrders``."""

    selections: list[str] = Field(min_length=1, max_length=1000)


class HookRequest(_Incoming):
    """The body a CDS client POSTs to a service endpoint."""

    hook: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    hook_instance: str = Field(alias="hookInstance", min_length=1, max_length=128, pattern=NO_NUL)
    fhir_server: str | None = Field(default=None, alias="fhirServer", max_length=2048, pattern=NO_NUL)
    fhir_authorization: FhirAuthorization | None = Field(default=None, alias="fhirAuthorization")
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None

    @field_validator("fhir_server")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("fhirServer must be an absolute http(s) URL")
        return value

    @model_validator(mode="after")
    def _authorization_needs_server(self) -> HookRequest:
        # cds-r-1: if fhirAuthorization details are provided, a fhirServer SHALL be specified.
        if self.fhir_authorization is not None and self.fhir_server is None:
            raise ValueError("fhirAuthorization is given without fhirServer")
        return self


# --- responses ------------------------------------------------------------------------------


class Coding(_Outgoing):
    system: str | None = None
    code: str
    display: str | None = None


class Source(_Outgoing):
    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None

    _absolute = field_validator("url", "icon")(_absolute_url)


class Action(_Outgoing):
    type: Literal["create", "update", "delete"]
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = Field(default=None, validate_default=True)
    resource_id: str | None = Field(default=None, alias="resourceId")

    @field_validator("resource")
    @classmethod
    def _resource_to_write(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        kind = info.data.get("type")
        if kind in ("create", "update") and not (value and isinstance(value.get("resourceType"), str)):
            raise contract_error(f"a {kind} action needs a FHIR resource")
        return value

    @model_validator(mode="after")
    def _delete_names_its_resource(self) -> Action:
        # A delete removes one resource, named by a relative reference (cds-resp-2): ServiceRequest/us1.
        if self.type == "delete" and not (self.resource_id and "/" in self.resource_id.strip("/")):
            raise contract_error("a delete action needs a resourceId (ResourceType/id)", at="resourceId")
        return self


class Suggestion(_Outgoing):
    label: str = Field(min_length=1)
    uuid: str | None = None
    is_recommended: bool | None = Field(default=None, alias="isRecommended")
    actions: list[Action] = Field(default_factory=list)


class Link(_Outgoing):
    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    type: Literal["absolute", "smart"]
    app_context: str | None = Field(default=None, alias="appContext")
    autolaunchable: bool | None = None  # 3.0 ballot; a hint CDS clients may ignore

    _absolute = field_validator("url")(_absolute_url)

    @field_validator("app_context")
    @classmethod
    def _only_on_smart_links(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("type") != "smart":
            raise contract_error("only on a smart link")
        return value


class Card(_Outgoing):
    uuid: str | None = None
    summary: str = Field(min_length=1, max_length=139)
    detail: str | None = None
    indicator: Indicator
    source: Source
    suggestions: list[Suggestion] = Field(default_factory=list)
    selection_behavior: Literal["at-most-one", "any"] | None = Field(default=None, alias="selectionBehavior")
    override_reasons: list[Coding] = Field(default_factory=list, alias="overrideReasons")
    links: list[Link] = Field(default_factory=list)

    @model_validator(mode="after")
    def _selection_behavior_exactly_with_suggestions(self) -> Card:
        if self.suggestions and self.selection_behavior is None:
            raise contract_error("required with suggestions (at-most-one or any)", at="selectionBehavior")
        if not self.suggestions and self.selection_behavior is not None:
            raise contract_error("given without suggestions", at="selectionBehavior")
        return self

    @field_validator("override_reasons")
    @classmethod
    def _reasons_are_displayed(cls, value: list[Coding]) -> list[Coding]:
        # The client shows an override reason's display: a code alone means nothing to a clinician.
        for index, reason in enumerate(value):
            if reason.display is None:
                raise contract_error("required on an override reason", at=f"{index}/display")
        return value


class HookResponse(_Outgoing):
    cards: list[Card] = Field(default_factory=list)
    system_actions: list[Action] = Field(default_factory=list, alias="systemActions")

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["cards"] = body.get("cards", [])  # `cards` is required, even when empty
        return body


# --- discovery ------------------------------------------------------------------------------


class ServiceDefinition(_Outgoing):
    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] = Field(default_factory=dict)
    usage_requirements: str | None = Field(default=None, alias="usageRequirements")


class DiscoveryResponse(_Outgoing):
    services: list[ServiceDefinition]

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["services"] = body.get("services", [])
        return body


# --- feedback -------------------------------------------------------------------------------


class FeedbackCoding(_Incoming):
    system: str | None = Field(default=None, max_length=256, pattern=NO_NUL)
    code: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    display: str | None = Field(default=None, max_length=512, pattern=NO_NUL)


class OverrideReason(_Incoming):
    reason: FeedbackCoding | None = None
    user_comment: str | None = Field(default=None, alias="userComment", max_length=4000, pattern=NO_NUL)

    @model_validator(mode="after")
    def _reason_or_comment(self) -> OverrideReason:
        # cds-fb-3: an overrideReason must contain a reason, a userComment, or both.
        if self.reason is None and not self.user_comment:
            raise ValueError("overrideReason needs a reason, a userComment, or both")
        return self


class AcceptedSuggestion(_Incoming):
    id: str = Field(min_length=1)


class FeedbackEntry(_Incoming):
    card: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    outcome: Literal["accepted", "overridden"]
    accepted_suggestions: list[AcceptedSuggestion] = Field(
        default_factory=list, alias="acceptedSuggestions", max_length=50
    )
    override_reason: OverrideReason | None = Field(default=None, alias="overrideReason")
    outcome_timestamp: str = Field(alias="outcomeTimestamp", min_length=1)

    @model_validator(mode="after")
    def _accepted_needs_suggestions(self) -> FeedbackEntry:
        # cds-fb-2: if outcome is 'accepted', acceptedSuggestions SHALL be provided.
        if self.outcome == "accepted" and not self.accepted_suggestions:
            raise ValueError("an accepted outcome needs acceptedSuggestions")
        return self


class FeedbackRequest(_Incoming):
    feedback: list[FeedbackEntry] = Field(min_length=1, max_length=100)
