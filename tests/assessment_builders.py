"""QuestionnaireResponses to the calf-pain assessment, built as a form would send them."""

from __future__ import annotations

from typing import Any

from fhir_mappings.questionnaire import Assessment, bundled_assessment
from fhir_mappings.terminology import UCUM
from tests.fhir_builders import NOW

ASSESSMENT: Assessment = bundled_assessment()
PRACTITIONER = "Practitioner/dr-ng"


def answer_value(link_id: str, value: Any) -> dict[str, Any]:
    """The answer of ``link_id``: True/False, a number (in the question's unit) or an answer key."""
    question = ASSESSMENT.question(link_id)
    assert question is not None, link_id
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int | float):
        unit = str(question.fact.unit)
        return {"valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}
    (chosen,) = [a for a in question.answers if a.key == value]
    return {"valueCoding": dict(chosen.coding)}


def response(
    answers: dict[str, Any], *, side: str | None = "left", patient_id: str = "p1", **extra: Any
) -> dict[str, Any]:
    """A completed response: the side, then each answer inside its group, in the form's order."""
    items: list[dict[str, Any]] = []
    if side is not None:
        items.append(
            {"linkId": ASSESSMENT.side.link_id, "answer": [answer_value(ASSESSMENT.side.link_id, side)]}
        )
    for group in ASSESSMENT.groups:
        children = [
            {"linkId": q.link_id, "answer": [answer_value(q.link_id, answers[q.link_id])]}
            for q in group.questions
            if q.link_id in answers
        ]
        if children:
            items.append({"linkId": group.link_id, "item": children})
    body: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": ASSESSMENT.url,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient_id}"},
        "authored": NOW.isoformat(),
        "author": {"reference": PRACTITIONER},
        "item": items,
    }
    body.update(extra)
    return body


# Typical answers: a swollen leg (Wells), exertional pain (claudication), a calf strain.
SUSPECTED_DVT: dict[str, Any] = {
    "symptom_duration_weeks": 0.5,
    "sudden_onset": False,
    "direct_trauma": False,
    "exertional_leg_pain": False,
    "leg_oedema": True,
    "erythema": False,
    "low_back_pain": False,
    "paresthesia": False,
    "calf_tenderness": True,
    "entire_leg_swollen": True,
    "calf_circumference_difference": 3.5,
    "pitting_oedema": "420829009",
    "collateral_superficial_veins": False,
    "plaster_cast_immobilisation": False,
    "recent_major_surgery": False,
    "bedridden": False,
    "paralysis_paresis": False,
    "on_active_cancer_treatment": True,
    "wells_alternative_diagnosis": False,
}
CLAUDICATION: dict[str, Any] = {
    "symptom_duration_weeks": 30,
    "sudden_onset": False,
    "direct_trauma": False,
    "exertional_leg_pain": True,
    "leg_oedema": False,
    "erythema": False,
    "low_back_pain": False,
    "paresthesia": False,
    "relief_standing_still": True,
    "relief_sitting_or_lumbar_flexion": False,
    "walking_distance_to_onset": 200,
    "reproducible_walking_distance": True,
    "exertional_leg_fatigue_atypical": False,
    "pedal_pulses": "diminished",
    "rest_pain_relieved_by_dependency": False,
    "load_related_pain": False,
}
CALF_STRAIN: dict[str, Any] = {
    "symptom_duration_weeks": 0.3, "sudden_onset": True, "direct_trauma": False,
    "exertional_leg_pain": False, "leg_oedema": False, "erythema": False, "low_back_pain": False,
    "paresthesia": False, "cold_pale_limb": False, "limb_weakness": False, "cyanosis": False,
    "acute_onset_during_sport_with_pop": True, "recent_unaccustomed_exertion": False,
    "muscle_belly_tenderness": True, "morning_stiffness": False,
    "joint_related_weight_bearing_pain": False, "leg_cramp": False,
    "worse_end_of_day_relieved_by_elevation": False,
}  # fmt: skip
