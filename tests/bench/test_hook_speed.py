"""Smoke run of the hook benchmark (``bench/hook_speed.py --quick``): it runs and prints its tables.

A benchmark is not a test: nothing here looks at a timing, only at the shape of the report and
at what must hold whatever the timings (the hook's cards come back, no call fails, the audit
rows match the calls answered).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FHIR_DATA = ROOT.parent / "shared" / "fhir-data"
pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_quick_run_prints_every_table(tmp_path: Path) -> None:
    """``--quick`` with every mode prints the latency, throughput, soak and CLI tables."""
    if not (FHIR_DATA / "derived" / "observations-1000-searchset.json").exists():
        pytest.skip(f"the benchmark's real FHIR data is not in {FHIR_DATA}")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "bench.hook_speed", "--quick",
            "--modes", "latency,throughput,soak,cli", "--soak", "0.1",
            "--database", f"calfcds_smoke_{os.getpid()}", "--json", str(report),
        ],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )  # fmt: skip
    output = done.stdout
    assert done.returncode == 0, output + done.stderr
    for heading in (
        "== latency", "== throughput", "== soak", "== CLI start-up", "hook p50", "floor p50", "guarded ÷ floor"
    ):  # fmt: skip
        assert heading in output
    figures = json.loads(report.read_text("utf-8"))
    sizes = figures["latency"]["sizes"]
    assert [row["observations"] for row in sizes] == [10, 100]
    for row in sizes:
        assert row["cards"] == ["duplex-dvt"]  # the DVT chart's card, whatever the timings
        assert row["rss_peak_mb"] > 0
        assert row["guarded_p50_ms"] > 0  # the guarded floor answered 200 to every call
        assert row["hook_p50_over_guarded_p50"] > 0
        assert "other_cores" in row["machine"]
    throughput = figures["throughput"]
    if "skipped" not in throughput:
        for name in ("service", "guarded"):  # the guarded floor accepted every fresh, valid client JWT
            assert throughput[name]["errors"] == {"transport": 0, "non_200": 0, "wrong_cards": 0}
        audit = throughput["audit"]
        assert audit["rows_after_sigterm"] == audit["calls_answered_incl_warmup"]
    assert figures["soak"]["workers"][0]["rss_end_mb"] > 0
    assert set(figures["cli"]) == {"calf-cds --help", "calf-cds token"}
