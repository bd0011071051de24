"""The CDS services offered here, each one hook definition, and the registry discovery lists.

``calf-pain`` (:data:`CALF_PAIN`) is a ``patient-view`` service; ``calf-pain-order-select`` and
``calf-pain-order-sign`` (:mod:`service.hooks.order_hooks`) the order hooks, with the same templates.
``calf-pain`` has its context model
(:class:`~cds_hooks.models.PatientViewContext`), its prefetch templates and its handler
(:func:`~service.hooks.registry.decide_on_chart`: the chart alone decides). :func:`standard_hooks` is the registry the app serves; the discovery
document is generated from whichever registry the app is given
(:meth:`~service.hooks.registry.HookRegistry.discovery`). ``SERVICE_ID``, ``HOOK``,
``PREFETCH_TEMPLATES`` and ``OPTIONAL_KEYS`` name calf-pain's for the OpenAPI document and the
benchmarks.

Templates stay inside the CDS Hooks recommended query subset (a read by id and type-level searches
on ``patient``, with ``code``, ``date`` and the 3.0 ballot's ``{{today() - N days}}``). They are
narrowed so that chart size does not matter: Observations and DiagnosticReports by the ``code=``
list of everything the mapper reads (built from the fact vocabulary, see
:mod:`fhir_mappings.search`), Procedures and Encounters by date. Conditions and medications are not
narrowed by code: ICD-10-CM is matched by range and medications by class and name, which no code
list can express. The FHIR fetch of a missing key runs the same query.

``OPTIONAL_KEYS`` were added in 1.1 (issue 11): a client that does not send them and gives no
``fhirServer`` gets cards from what it did send (a note says what was not read), instead of the 412
a missing required key gets.
"""

from __future__ import annotations

from typing import TypeVar

from cds_hooks.models import (
    DiscoveryResponse,
    OrderSelectContext,
    OrderSignContext,
    PatientContext,
    PatientViewContext,
)
from fhir_mappings.facts import vocabulary
from fhir_mappings.search import code_parameter, search_codes
from fhir_mappings.terminology import listed_terminology
from service.hooks.order_hooks import order_select, order_sign
from service.hooks.registry import Handler, HookDefinition, HookRegistry, decide_on_chart

__all__ = [
    "CALF_PAIN",
    "CALF_PAIN_ORDER_SELECT",
    "CALF_PAIN_ORDER_SIGN",
    "HOOK",
    "OPTIONAL_KEYS",
    "PREFETCH_TEMPLATES",
    "SERVICE_ID",
    "discovery",
    "standard_hooks",
]

_Context = TypeVar("_Context", bound=PatientContext)

_PATIENT = "patient={{context.patientId}}"
_OBSERVATION_CODES = code_parameter(search_codes(vocabulary(), listed_terminology(), "observation"))
_REPORT_CODES = code_parameter(search_codes(vocabulary(), listed_terminology(), "report"))
PREFETCH_TEMPLATES: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "observations": f"Observation?{_PATIENT}&{_OBSERVATION_CODES}",
    "conditions": f"Condition?{_PATIENT}",
    "procedures": f"Procedure?{_PATIENT}&date=ge{{{{today() - 84 days}}}}",
    "medication_requests": f"MedicationRequest?{_PATIENT}",
    "medication_statements": f"MedicationStatement?{_PATIENT}",
    "diagnostic_reports": f"DiagnosticReport?{_PATIENT}&{_REPORT_CODES}",
    "encounters": f"Encounter?{_PATIENT}&date=ge{{{{today() - 28 days}}}}",
}
#: Keys whose absence (with no fhirServer to fetch them) is read as "no data", with a note.
OPTIONAL_KEYS = frozenset(
    {"procedures", "medication_requests", "medication_statements", "diagnostic_reports", "encounters"}
)


CALF_PAIN = HookDefinition(
    id="calf-pain",
    hook="patient-view",
    title="Calf pain: vascular, neurogenic or musculoskeletal?",
    description=(
        "Reads the patient's Observations, Conditions, Procedures, medications, DiagnosticReports "
        "and Encounters and recommends the next step for calf pain: ankle-brachial index for "
        "suspected PAD, duplex ultrasound or D-dimer for suspected DVT (NICE two-level Wells), "
        "conservative care with a safety net, or urgent referral for a red flag. Every card cites "
        "its guideline and rule version."
    ),
    context=PatientViewContext,
    context_error="context needs userId and patientId strings",
    prefetch=PREFETCH_TEMPLATES,
    optional_prefetch=OPTIONAL_KEYS,
    handler=decide_on_chart,
    usage_requirements=(
        "Needs read access to Patient, Observation and Condition through prefetch or fhirServer; "
        "Procedure, MedicationRequest, MedicationStatement, DiagnosticReport and Encounter are "
        "read when sent or fetchable."
    ),
)
SERVICE_ID = CALF_PAIN.id
HOOK = CALF_PAIN.hook


def _order_service(
    hook: str, context: type[_Context], context_error: str, handler: Handler[_Context]
) -> HookDefinition[_Context]:
    """The calf-pain service of an order hook: ``calf-pain-{hook}``, with calf-pain's templates;
    the order hooks differ only in their context and handler."""
    return HookDefinition(
        id=f"calf-pain-{hook}",
        hook=hook,
        title="Calf pain: advice on orders",
        description=(
            "Reads the draft orders (ServiceRequest, MedicationRequest, DeviceRequest) with the patient's "
            "record and advises from NICE NG158, ACC/AHA 2024 and NASS 2011: D-dimer before a venous scan "
            "when DVT is unlikely, ultrasound instead of venography or a D-dimer that cannot exclude DVT, "
            "ABI before arterial imaging or compression, never compression with possible compartment "
            "syndrome, lumbar MRI only if intervention is considered; any red flag gives its critical card "
            "whatever is ordered."
        ),
        context=context,
        context_error=context_error,
        prefetch=PREFETCH_TEMPLATES,
        optional_prefetch=OPTIONAL_KEYS,
        handler=handler,
        usage_requirements=(
            "The same patient data as calf-pain (patient-view), through prefetch or fhirServer; the draft "
            "orders are read from the context. Order codes: LOINC, CPT, SNOMED CT, WHO ATC and the "
            "calf-cds orderable codes a site maps (CALF_CDS_SITE_ORDERABLES)."
        ),
    )


CALF_PAIN_ORDER_SELECT = _order_service(
    "order-select",
    OrderSelectContext,
    "context needs userId and patientId strings, selections (1..*) and a draftOrders object",
    order_select,
)
CALF_PAIN_ORDER_SIGN = _order_service(
    "order-sign",
    OrderSignContext,
    "context needs userId and patientId strings and a draftOrders object",
    order_sign,
)


def standard_hooks() -> HookRegistry:
    """The hooks this service answers, in the order discovery lists them (an order service only
    when the active rule pack answers its hook: see :meth:`HookRegistry.discovery`)."""
    return HookRegistry([CALF_PAIN, CALF_PAIN_ORDER_SELECT, CALF_PAIN_ORDER_SIGN])


def discovery(hooks: HookRegistry | None = None) -> DiscoveryResponse:
    """The discovery document of ``hooks`` (by default, :func:`standard_hooks`)."""
    return (hooks if hooks is not None else standard_hooks()).discovery()
