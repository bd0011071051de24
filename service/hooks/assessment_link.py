"""The loop back to the form: a CDS Hooks ``smart`` link that opens the assessment on what a card lacks.

A card whose decision waits on undocumented findings carries ``assessment_link(missing, base_url)``;
the EHR launches the app (``/app/launch.html``) and hands it the link's ``appContext``,
``{"missing": [question link ids]}``, which the app marks and lists above the form.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from cds_hooks.models import Link
from fhir_mappings.questionnaire import Assessment, bundled_assessment

__all__ = ["LABEL", "LEGS", "assessment_link", "missing_questions"]

LABEL = "Record the missing findings (calf pain assessment)"
LEGS = ("_left", "_right")


def missing_questions(missing_fact_names: Iterable[str], assessment: Assessment | None = None) -> list[str]:
    """The questions (link ids, in the form's order) that record the given facts; per-leg names
    (``entire_leg_swollen_left``) count as their question; facts the form does not ask are dropped."""
    form = assessment or bundled_assessment()
    wanted = set()
    for name in missing_fact_names:
        wanted.add(name)
        wanted.update(name.removesuffix(leg) for leg in LEGS if name.endswith(leg))
    return [q.link_id for q in form.questions() if q.link_id in wanted]


def assessment_link(missing_fact_names: Iterable[str], base_url: str) -> Link | None:
    """A SMART link to the assessment naming the missing findings, or None when the form asks none."""
    questions = missing_questions(missing_fact_names)
    if not questions:
        return None
    return Link.model_validate(
        {
            "label": LABEL,
            "url": f"{base_url.rstrip('/')}/app/launch.html",
            "type": "smart",
            "appContext": json.dumps({"missing": questions}, separators=(",", ":")),
        }
    )
