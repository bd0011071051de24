"""The governance report: one self-contained HTML page (inline CSS and SVG; no script, no CDN).

Sections, in the order clinical governance asked for them: the rule catalogue (versions,
release state, approvals, citations), cards fired per topic over time, accept and override rates
per rule version, override reasons, and shadow-versus-active disagreements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from rules.codes import Topic
from service.governance import svg
from service.governance.replay import describe
from service.governance.reportdata import PackEntry, ReportData, RuleStat

__all__ = ["ACCEPTED", "CSS", "OVERRIDDEN", "TOPIC_COLOURS", "TOPIC_NAMES", "render", "topic_name"]

# Topics the report has its own colour and short name for, in the order the chart stacks them; any
# other topic takes a colour left in the palette and its display as its name (topic_name).
TOPIC_COLOURS: Mapping[str, str] = {
    Topic.URGENT_REFERRAL: "#D55E00",
    Topic.DUPLEX_DVT: "#0072B2",
    Topic.ABI: "#E69F00",
    Topic.CONSERVATIVE: "#009E73",
}
TOPIC_NAMES: Mapping[str, str] = {
    Topic.URGENT_REFERRAL: "urgent referral",
    Topic.DUPLEX_DVT: "DVT work-up",
    Topic.ABI: "ABI",
    Topic.CONSERVATIVE: "conservative care",
}
ACCEPTED, OVERRIDDEN, NO_RESPONSE = "#009E73", "#D55E00", "#C5CCD3"

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f7fa; color: #1f2933;
       font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
header { background: #102a43; color: #f0f4f8; padding: 28px 40px 24px; }
header h1 { margin: 0 0 6px; font-size: 26px; font-weight: 650; }
header p { margin: 0; color: #bcccdc; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 20px 60px; }
section { background: #fff; border: 1px solid #e4e7eb; border-radius: 10px; padding: 20px 24px;
          margin: 0 0 22px; }
h2 { font-size: 19px; margin: 0 0 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.lead { margin: 0 0 14px; color: #52606d; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px;
        margin: 0 0 22px; }
.kpi { background: #fff; border: 1px solid #e4e7eb; border-radius: 10px; padding: 14px 16px; }
.kpi b { display: block; font-size: 26px; line-height: 1.1; }
.kpi span { color: #52606d; font-size: 13px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 4px; font-size: 14px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e4e7eb; vertical-align: top; }
th { color: #52606d; font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: #334e68; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600; }
.active { background: #d9f2e6; color: #0b5e3a; } .draft { background: #fff3c4; color: #7a5a00; }
.retired { background: #e4e7eb; color: #3e4c59; } .role { background: #dceefb; color: #0b4f8a; }
.warn { background: #ffe3e3; color: #8a1c1c; }
details { border-top: 1px solid #e4e7eb; padding: 10px 0; }
summary { cursor: pointer; font-weight: 600; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 8px 0; }
.muted { color: #52606d; }
.nowrap { white-space: nowrap; }
footer { color: #7b8794; font-size: 13px; text-align: center; }
"""


def _e(value: object) -> str:
    return escape(str(value))


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _nowrap(html: str) -> str:
    return f'<span class="nowrap">{html}</span>'


def _rate(part: int, whole: int) -> str:
    return f"{part / whole * 100:.0f}%" if whole else "–"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(
        f'<th class="n">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>" for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def topic_name(topic: str) -> str:
    """A topic as the report names it: its short name, else its display, else the code as stored."""
    if topic in TOPIC_NAMES:
        return TOPIC_NAMES[topic]
    displays = {member.value: member.display for member in Topic}
    return displays.get(topic, topic)


def _topic_series(data: ReportData) -> list[svg.Series]:
    present = {topic for counts in data.cards_by_period.values() for topic in counts}
    topics = [t for t in TOPIC_COLOURS if t in present] + sorted(present - set(TOPIC_COLOURS))
    extra = iter(c for c in svg.PALETTE if c not in TOPIC_COLOURS.values())
    return [
        svg.Series(
            topic_name(topic),
            [counts.get(topic, 0) for counts in data.cards_by_period.values()],
            TOPIC_COLOURS.get(topic) or next(extra, "#999999"),
        )
        for topic in topics
    ]


def _kpis(data: ReportData) -> str:
    shown = sum(s.shown for s in data.rules)
    accepted = sum(s.accepted for s in data.rules)
    overridden = sum(s.overridden for s in data.rules)
    disagreements = sum(s.disagreed for s in data.shadows.values())
    items = [
        (f"{data.calls}", f"hook calls · {data.failed_calls} failed"),
        (f"{data.cards}", "cards shown"),
        (f"{data.feedback_entries}", "feedback entries"),
        (_rate(accepted, shown), "of cards accepted"),
        (_rate(overridden, shown), "of cards overridden"),
        (f"{disagreements}", "shadow disagreements"),
    ]
    return (
        '<div class="kpis">'
        + "".join(f'<div class="kpi"><b>{_e(v)}</b><span>{_e(t)}</span></div>' for v, t in items)
        + "</div>"
    )


def _catalogue(entries: list[PackEntry]) -> str:
    parts = [
        '<section id="catalogue"><h2>Rule catalogue</h2>',
        '<p class="lead">Every rule-pack version this service knows. A released version is immutable '
        "(its content hash is in the release manifest); retirement is recorded there, not in the pack.</p>",
    ]
    rows = []
    for entry in entries:
        approvals = entry.document.get("approvals", [])
        approved = (
            "; ".join(f"{a['name']} ({a['role']}, {a['date']})" for a in approvals)
            or '<span class="badge warn">none recorded</span>'
        )
        role = f' <span class="badge role">{_e(entry.role)}</span>' if entry.role else ""
        released = entry.released.isoformat() if entry.released else "—"
        if entry.retired:
            released += f", retired {entry.retired.isoformat()}"
        rows.append(
            [
                _nowrap(f"<b>{_e(entry.key)}</b>{role}"),
                f'<span class="badge {_e(entry.status)}">{_e(entry.status)}</span>',
                _nowrap(_e(released)),
                approved,
                str(len(entry.document.get("rules", []))),
                f"<code>{_e(entry.content_hash[:19])}…</code>",
            ]
        )
    parts.append(_table(["version", "status", "released", "approvals", "cards", "content hash"], rows))
    parts.append(
        '<p class="muted">Each version\'s cards, citations and changelog are listed at the end of '
        'this report (<a href="#packs">rule packs in detail</a>).</p></section>'
    )
    return "".join(parts)


def _details(entries: list[PackEntry]) -> str:
    return (
        '<section id="packs"><h2>Rule packs in detail</h2>'
        '<p class="lead">What each version recommends, the guideline each card follows, and its changelog.</p>'
        + "".join(_pack_details(entry) for entry in entries)
        + "</section>"
    )


def _pack_details(entry: PackEntry) -> str:
    document = entry.document
    citations: Mapping[str, Mapping[str, Any]] = document.get("citations", {})
    opened = " open" if entry.role else ""
    lines = [f"<details{opened}><summary>{_e(entry.key)} — {_e(document.get('title', ''))}</summary>"]
    effective = document.get("effective", {})
    authors = ", ".join(a.get("name", "") for a in document.get("authors", []))
    lines.append(
        f'<p class="muted">Effective from {_e(effective.get("from", "?"))}'
        + (f" to {_e(effective['to'])}" if effective.get("to") else "")
        + f" · authors: {_e(authors)} · hash <code>{_e(entry.content_hash)}</code></p>"
    )
    if entry.retired_reason:
        lines.append(f"<p><b>Retired:</b> {_e(entry.retired_reason)}</p>")
    rules = [
        [
            f"<b>{_e(rule['title'])}</b><br><code>{_e(rule['id'])}</code>",
            _nowrap(_e(rule["topic"])),
            _e(rule["indicator"]) + (" · red flag" if rule.get("red_flag") else ""),
            _e(citations.get(rule["citation"]["ref"], {}).get("title", rule["citation"]["ref"]))
            + f" — {_e(rule['citation']['section'])}",
        ]
        for rule in document.get("rules", [])
    ]
    lines.append("<h3>Cards</h3>" + _table(["rule", "topic", "urgency", "follows"], rules))
    sources = [
        [
            _e(source.get("title", ref)),
            f'<a href="{_e(source["url"])}">{_e(source["url"])}</a>' if source.get("url") else "",
        ]
        for ref, source in citations.items()
    ]
    lines.append("<h3>Citations</h3>" + _table(["source", "link"], sources))
    log = [
        [_e(item.get("version")), _e(item.get("date")), "<br>".join(_e(c) for c in item.get("changes", []))]
        for item in document.get("changelog", [])
    ]
    lines.append("<h3>Changelog</h3>" + _table(["version", "date", "changes"], log))
    lines.append("</details>")
    return "".join(lines)


def _cards_over_time(data: ReportData) -> str:
    chart = svg.columns(
        "cards-per-topic",
        f"Cards shown per {data.period_unit}, by topic",
        list(data.cards_by_period),
        _topic_series(data),
        y_label="cards shown",
        x_label=f"{data.period_unit} (UTC)" if data.period_unit == "day" else "week starting (UTC)",
        empty="No cards were shown in this period",
    )
    totals: dict[str, int] = {}
    for counts in data.cards_by_period.values():
        for topic, count in counts.items():
            totals[topic] = totals.get(topic, 0) + count
    rows = [[_e(topic_name(t)), str(n)] for t, n in sorted(totals.items(), key=lambda kv: -kv[1])]
    return (
        '<section id="cards"><h2>Cards fired per topic over time</h2>'
        '<p class="lead">Every card the service showed, by the day it was shown and what it recommends.</p>'
        + chart
        + (_table(["topic", "cards"], rows, numeric=(1,)) if rows else "")
        + "</section>"
    )


def _rates(data: ReportData) -> str:
    rules: list[RuleStat] = [s for s in data.rules if s.shown]
    chart = svg.bars(
        "outcomes-per-rule",
        "What clinicians did with each card, per rule version",
        [s.label for s in rules],
        [
            svg.Series("accepted", [s.accepted for s in rules], ACCEPTED),
            svg.Series("overridden", [s.overridden for s in rules], OVERRIDDEN),
            svg.Series("no feedback", [s.shown - s.accepted - s.overridden for s in rules], NO_RESPONSE),
        ],
        x_label="share of cards shown",
        percent=True,
        notes=[f"n = {s.shown}" for s in rules],
        empty="No cards were shown in this period",
    )
    rows = [
        [
            f"<code>{_e(s.rule_id)}</code>",
            _e(s.pack_version),
            _e(topic_name(s.topic)),
            str(s.shown),
            f"{s.accepted} ({_rate(s.accepted, s.shown)})",
            f"{s.overridden} ({_rate(s.overridden, s.shown)})",
        ]
        for s in rules
    ]
    note = (
        f'<p class="muted">{data.unlinked_feedback} feedback entries name a card that is not in the audit trail.</p>'
        if data.unlinked_feedback
        else ""
    )
    return (
        '<section id="rates"><h2>Accept and override rates per rule version</h2>'
        '<p class="lead">Each card counts once, with its latest feedback; "no feedback" means the EHR '
        "reported nothing (the card may have been read and ignored).</p>"
        + chart
        + _table(["rule", "version", "topic", "shown", "accepted", "overridden"], rows, numeric=(3, 4, 5))
        + note
        + "</section>"
    )


def _reasons(data: ReportData) -> str:
    reasons = data.reasons.most_common(12)
    chart = svg.bars(
        "override-reasons",
        "Why cards were overridden",
        [reason for reason, _ in reasons],
        [svg.Series("overrides", [count for _, count in reasons], OVERRIDDEN)],
        x_label="feedback entries",
        empty="No card was overridden in this period",
    )
    rows = [
        [_nowrap(_e(_when(o.at))), _nowrap(f"<code>{_e(o.rule)}</code>"), _e(o.reason), _e(o.comment or "")]
        for o in data.overrides
    ]
    comments = (
        "<h3>Latest overrides</h3>" + _table(["received", "card's rule", "reason", "comment"], rows)
        if rows
        else ""
    )
    return (
        '<section id="reasons"><h2>Override reasons</h2>'
        '<p class="lead">The reason the clinician chose (the card\'s override reasons) and any comment.</p>'
        + chart
        + comments
        + "</section>"
    )


def _shadow(data: ReportData) -> str:
    parts = [
        '<section id="shadow"><h2>Shadow versus active</h2>',
        '<p class="lead">Candidate versions run beside the active one on live calls; their cards are '
        "recorded, never shown. A disagreement is a call where the candidate would have shown other cards "
        "(topic or urgency).</p>",
    ]
    stats = list(data.shadows.values())
    parts.append(
        svg.bars(
            "shadow-agreement",
            "Calls where the shadow version would have decided differently",
            [s.key for s in stats],
            [
                svg.Series("same cards", [s.compared - s.disagreed for s in stats], "#56B4E9"),
                svg.Series("different cards", [s.disagreed for s in stats], "#CC79A7"),
            ],
            x_label="share of calls compared",
            percent=True,
            notes=[f"n = {s.compared}" for s in stats],
            empty="No shadow version ran in this period",
        )
    )
    for stat in stats:
        if not stat.kinds:
            continue
        kinds = stat.kinds.most_common(10)
        parts.append(
            svg.bars(
                "shadow-changes",
                f"What {stat.key} would change",
                [kind for kind, _ in kinds],
                [svg.Series("calls", [count for _, count in kinds], "#CC79A7")],
                x_label="calls",
            )
        )
        rows = [
            [
                _nowrap(_e(_when(at))),
                f"<code>{_e(call_id[:8])}</code>",
                _e(describe(shown)),
                _e(describe(candidate)),
            ]
            for at, call_id, shown, candidate in stat.examples
        ]
        parts.append(
            f"<h3>Latest disagreements of {_e(stat.key)}</h3>"
            + _table(["call", "id", "shown (active)", f"would show ({stat.key})"], rows)
        )
    parts.append("</section>")
    return "".join(parts)


def render(data: ReportData, *, active: str, shadows: Sequence[str]) -> str:
    """The whole report as one HTML document."""
    period = f"since {data.since:%Y-%m-%d}" if data.since else "all recorded calls"
    shadow_text = ", ".join(shadows) or "none"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>calf-cds governance report</title>"
        f"<style>{CSS}</style></head><body>"
        "<header><h1>calf-cds governance report</h1>"
        f"<p>Generated {_e(_when(data.generated_at))} · {_e(period)} · active pack <b>{_e(active)}</b>"
        f" · shadow: {_e(shadow_text)}</p></header><main>"
        + _kpis(data)
        + _catalogue(data.catalogue)
        + _cards_over_time(data)
        + _rates(data)
        + _reasons(data)
        + _shadow(data)
        + _details(data.catalogue)
        + "<footer>calf-cds · rule packs are versioned, cited and approved; every card links to its call, "
        "facts and pack version in the audit trail.</footer>"
        "</main></body></html>\n"
    )
