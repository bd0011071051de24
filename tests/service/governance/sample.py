"""Three weeks of realistic traffic for report tests: real hook calls through the real pipeline,
with the candidate pack in shadow mode, and clinicians' feedback (accepted, overridden with the
cards' own HL7 override reasons, or none). Deterministic: the same seed gives the same data.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

import orjson

from service.config import Settings
from service.governance import database
from service.governance.feedback import FeedbackWriter
from service.hooks.cards import OVERRIDE_REASONS, OVERRIDE_SYSTEM
from service.hooks.discovery import standard_hooks
from service.hooks.guards import RequestLimits, body_reader
from service.hooks.packs import PackRegistry
from service.hooks.pipeline import FrontDoor, HookCall
from service.store.schema import make_engine
from service.store.writers import AuditWriter
from tests.fhir_builders import NOW, calf_pain, finding, hook_request
from tests.service.governance.conftest import CLAUDICATION, CRAMP, DVT, SLIGHT_SWELLING, STRAIN

ISCHAEMIA = [calf_pain(), finding("sudden-onset"), finding("cold-pale-limb")]
MIX = [DVT, DVT, CLAUDICATION, CLAUDICATION, CLAUDICATION, CRAMP, STRAIN, STRAIN, SLIGHT_SWELLING, ISCHAEMIA]
COMMENTS = ["ABI done at the vascular clinic last week", "Patient declined the scan today", None, None]


@dataclass
class Sample:
    calls: int = 0
    cards: int = 0
    accepted: int = 0
    overridden: int = 0


def populate(settings: Settings, *, days: int = 21, seed: int = 7) -> Sample:
    rng = random.Random(seed)  # noqa: S311 - reproducible sample data, not a secret
    door = FrontDoor(
        standard_hooks(),
        PackRegistry.load(settings).service(clock=lambda: NOW),
        RequestLimits.from_settings(settings),
    )
    engine = make_engine(settings.resolved_database_url())
    database.upgrade(engine)
    calls = AuditWriter(engine, settings.data_dir / "spool")
    answers = FeedbackWriter(engine, settings.data_dir / "spool")
    sample = Sample()
    for day in range(days):
        for _ in range(rng.randint(2, 8) + day // 4):
            body = hook_request(rng.choice(MIX), hookInstance=str(uuid.uuid4()))
            at = NOW - timedelta(days=days - 1 - day, hours=rng.randint(0, 9), minutes=rng.randint(0, 59))
            call = HookCall("calf-pain", "application/json", body_reader(orjson.dumps(body)))
            answer = asyncio.run(door.answer(call))
            assert answer.status == 200
            assert answer.result is not None
            # the calls are spread over three weeks, each decided on the charts as they are at NOW
            assert calls.write([replace(answer.record, received_at=at).to_json()]) == []
            sample.calls += 1
            for card in answer.result.response.cards:
                sample.cards += 1
                roll = rng.random()
                entry: dict[str, object] = {"card_uuid": card.uuid, "accepted_suggestions": []}
                if roll < 0.5 and card.suggestions:
                    entry |= {"outcome": "accepted", "accepted_suggestions": [card.suggestions[0].uuid]}
                    sample.accepted += 1
                elif roll < 0.8:
                    code, display = rng.choice(OVERRIDE_REASONS[:4])
                    entry |= {"outcome": "overridden", "override_reason_system": OVERRIDE_SYSTEM,
                              "override_reason_code": code, "override_reason_display": display,
                              "user_comment": rng.choice(COMMENTS)}  # fmt: skip
                    sample.overridden += 1
                else:
                    continue
                when = (at + timedelta(minutes=3)).isoformat()
                entry |= {"feedback_id": str(uuid.uuid4()), "received_at": when, "service_id": "calf-pain",
                          "outcome_timestamp": when, "client": {}}  # fmt: skip
                assert answers.write([entry]) == []
    engine.dispose()
    return sample
