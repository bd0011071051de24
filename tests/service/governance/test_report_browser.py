"""The report in a real browser: headless Chromium lays out every SVG plot, and a screenshot shows them.

Chromium (Debian's `chromium`, installed by `scripts/test.sh`) opens the report twice: once with a
probe script appended to a *copy* (the report itself has no script) that measures each chart and
its marks after layout, and once to take screenshots, saved in `tests/artifacts/` for people to
look at. The screenshot is then read back and the plots' colours counted. Chromium is confined to
loopback and each run's net log is checked (``tests/browser/confinement.py``).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from service.config import Settings
from service.governance.catalogue import Catalogue
from service.governance.report import ACCEPTED, OVERRIDDEN, TOPIC_COLOURS, render
from service.governance.reportdata import collect
from tests.browser.confinement import assert_stayed_on_loopback, require_chromium, run_chromium
from tests.fhir_builders import NOW
from tests.service.governance.conftest import CANDIDATE, RULE_PACKS
from tests.service.governance.png import colour_pixels
from tests.service.governance.sample import populate

ARTIFACTS = Path(__file__).parents[2] / "artifacts"

PROBE = """<script>
const charts = [...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  const marks = [...svg.querySelectorAll('rect.mark')].filter(r => {
    const b = r.getBBox(); return b.width > 0 && b.height > 0; }).length;
  const texts = [...svg.querySelectorAll('text')].filter(t => t.getComputedTextLength() > 0).length;
  return {chart: svg.dataset.chart, width: box.width, height: box.height, marks: marks,
          declared: Number(svg.dataset.marks), texts: texts};
});
const result = {charts: charts, height: document.documentElement.scrollHeight};
document.body.insertAdjacentHTML('beforeend', '<pre id="probe">' + JSON.stringify(result) + '</pre>');
</script>"""


def chromium(profile: Path, *args: str) -> str:
    """One confined Chromium run; fails the test if it reached beyond loopback."""
    net_log = profile.with_name(f"{profile.name}-netlog-{len(list(profile.parent.glob('*netlog*')))}.json")
    output = run_chromium(profile, net_log, "--hide-scrollbars", *args)
    assert_stayed_on_loopback(net_log)
    return output


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three weeks of sample traffic rendered to tests/artifacts/governance-report.html."""
    folder = tmp_path_factory.mktemp("report")
    settings = Settings(data_dir=folder, rules_dir=RULE_PACKS, shadow_packs=(CANDIDATE,))
    populate(settings, days=21)
    engine = create_engine(settings.resolved_database_url())
    data = collect(engine, Catalogue.discover(RULE_PACKS), active=settings.active_pack, shadows=(CANDIDATE,),
                   since=None, now=NOW)  # fmt: skip
    engine.dispose()
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "governance-report.html"
    path.write_text(render(data, active=settings.active_pack, shadows=(CANDIDATE,)), "utf-8")
    return path


@pytest.mark.browser
def test_report_plots_render_in_chromium(report: Path, tmp_path: Path) -> None:
    """Every plot is laid out at a readable size, with all its bars drawn and its labels set."""
    require_chromium()
    probed = tmp_path / "probe.html"
    probed.write_text(report.read_text("utf-8").replace("</body>", PROBE + "</body>"), "utf-8")
    dom = chromium(
        tmp_path / "profile",
        "--virtual-time-budget=5000",
        "--window-size=1280,2000",
        "--dump-dom",
        probed.as_uri(),
    )
    found = re.findall(r'<pre id="probe">(\{.*?)</pre>', dom, re.S)  # the output, not the script's own text
    assert found, "the probe did not run"
    result: dict[str, Any] = json.loads(html.unescape(found[-1]))
    charts = {chart["chart"]: chart for chart in result["charts"]}
    assert set(charts) == {"cards-per-topic", "outcomes-per-rule", "override-reasons", "shadow-agreement",
                           "shadow-changes"}  # fmt: skip
    for chart in result["charts"]:
        assert chart["width"] >= 600, chart
        assert chart["height"] >= 120, chart
        assert chart["marks"] == chart["declared"] > 0, chart
        assert chart["texts"] >= 6, chart

    screenshot = ARTIFACTS / "governance-report.png"
    chromium(tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,2000", report.as_uri())
    drawn = colour_pixels(
        screenshot, (TOPIC_COLOURS["duplex-dvt"], TOPIC_COLOURS["abi"], ACCEPTED, OVERRIDDEN)
    )
    for colour, count in drawn.items():
        assert count > 400, f"{colour} barely drawn: {count} pixels"
    full = ARTIFACTS / "governance-report-full.png"
    chromium(
        tmp_path / "profile",
        f"--screenshot={full}",
        f"--window-size=1280,{result['height']}",
        report.as_uri(),
    )
    assert full.stat().st_size > 50_000
