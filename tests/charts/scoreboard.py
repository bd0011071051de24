"""Scoreboard for the chart cases: how many the service gets right, and which are safety violations.

``uv run --frozen python -m tests.charts.scoreboard`` runs every chart end to end exactly as
``test_real_charts.py`` does and prints one line per wrong case and the totals (the "before/after"
figures of issue 11). It judges with the test's own functions, so the two cannot disagree.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from service.app import create_app
from service.auth.dev_issuer import DevIssuer
from service.config import Settings
from tests.charts.test_real_charts import CASES, App, Clock, call, card_topic, is_safety_violation, problems
from tests.signing import signed_client


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        settings = Settings(data_dir=data_dir, dev=True)
        clock = Clock()
        with signed_client(create_app(settings, clock=clock), DevIssuer.load_or_create(data_dir)) as client:
            (service,) = [s for s in client.get("/cds-services").json()["services"] if s["id"] == "calf-pain"]
            app = App(client, clock, dict(service.get("prefetch", {})))
            right = 0
            unsafe: list[str] = []
            for case in CASES:
                cards = call(app, case)
                wrong = problems(case, cards)
                if not wrong:
                    right += 1
                    continue
                label = "SAFETY" if is_safety_violation(case, cards) else "wrong "
                if label == "SAFETY":
                    unsafe.append(case["id"])
                shown = ",".join(sorted({card_topic(c) for c in cards})) or "-"
                print(f"{label} {case['id']}: {'; '.join(wrong)} [cards: {shown}]")
    print(
        f"\n{right} of {len(CASES)} charts right; {len(CASES) - right} wrong, {len(unsafe)} safety violations"
    )
    return 0 if right == len(CASES) else 1


if __name__ == "__main__":
    sys.exit(main())
