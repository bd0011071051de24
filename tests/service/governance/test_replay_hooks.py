"""`rules replay` on order-hook calls: each call re-evaluated for its own hook; a hook the candidate
does not answer is skipped and counted."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, select

from fhir_mappings.facts import vocabulary
from service.app import create_app
from service.config import Settings
from service.governance.replay import replay
from service.store.schema import hook_calls
from tests.charts.charts import parse_instant
from tests.rules.order_cases import load_order_cases, pack
from tests.service.governance.conftest import count, wait_for
from tests.service.test_order_hooks import order_request
from tests.signing import dev_client

CASE = next(c for c in load_order_cases() if "order-duplex-d-dimer-first" in c["expect"].get("rules", ()))


def test_replay_passes_the_stored_hook_and_skips_hooks_the_candidate_does_not_answer(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", dev=True, db_migrate="upgrade", active_pack="calf-pain@1.2.0"
    )
    now = CASE["now"]

    with dev_client(create_app(settings, clock=lambda: parse_instant(now)), settings) as client:
        discovery = client.get("/cds-services").json()["services"]
        templates = next(s for s in discovery if s["id"] == "calf-pain-order-sign")["prefetch"]
        for hook in ("order-select", "order-sign"):
            body = order_request(CASE, hook, templates)
            response = client.post(f"/cds-services/calf-pain-{hook}", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["cards"]
        engine = create_engine(settings.resolved_database_url())
        wait_for(lambda: count(engine, select(hook_calls)) >= 2)
    try:
        with engine.connect() as connection:
            stored = connection.execute(select(hook_calls.c.hook, hook_calls.c.draft_orders)).all()
        assert {hook for hook, _ in stored} == {"order-select", "order-sign"}
        assert all(drafts and drafts["orders"] for _, drafts in stored)
        same = replay(engine, pack("1.2.0"), vocabulary(), known_packs={"calf-pain@1.2.0": pack("1.2.0")})
        assert same.replayed == 2
        assert same.changed == []  # the stored order facts give the same order cards back
        assert same.not_reproduced == []
        older = replay(engine, pack("1.1.0"), vocabulary())
        assert older.replayed == 0
        assert dict(older.skipped_hooks) == {"order-select": 1, "order-sign": 1}
        assert "order-select (1), order-sign (1)" in older.render()
    finally:
        engine.dispose()
