"""The discovery document: one ``patient-view`` service, ``calf-pain``, and its prefetch templates.

Templates stay inside the CDS Hooks recommended query subset (a read by id and type-level
searches on ``patient``); the rules read only Observations and Conditions.
"""

from __future__ import annotations

from cds_hooks.models import DiscoveryResponse, ServiceDefinition

SERVICE_ID = "calf-pain"
HOOK = "patient-view"
PREFETCH_TEMPLATES: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
}

# The search keys and the resource type each returns (reads, such as `patient`, are not searches).
RESOURCE_TYPES: dict[str, str] = {
    key: template.split("?", 1)[0] for key, template in PREFETCH_TEMPLATES.items() if "?" in template
}


def service_definition() -> ServiceDefinition:
    return ServiceDefinition(
        hook=HOOK,
        id=SERVICE_ID,
        title="Calf pain: vascular, neurogenic or musculoskeletal?",
        description=(
            "Reads the patient's Observations and Conditions and recommends the next step for "
            "calf pain: ankle-brachial index for suspected PAD, duplex ultrasound or D-dimer "
            "for suspected DVT (NICE two-level Wells), conservative care with a safety net, or "
            "urgent referral for a red flag. Every card cites its guideline and rule version."
        ),
        prefetch=PREFETCH_TEMPLATES,
        usage_requirements=(
            "Needs read access to Patient, Observation and Condition through prefetch or fhirServer."
        ),
    )


def discovery() -> DiscoveryResponse:
    return DiscoveryResponse(services=[service_definition()])
