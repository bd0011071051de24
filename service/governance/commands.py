"""The governance commands of ``calf-cds`` (their parser is ``service.governance.cli``)::

    calf-cds rules validate|list|diff|test|replay|release|retire ...
    calf-cds db upgrade|current|purge ...
    calf-cds report ...     calf-cds trail ...

``run(name, args)`` runs one; ``args.clock`` is the clock that ``service.cli.main`` supplies
(release and retirement dates, retention cut-off, the report's "now"). Governance, rule and
database errors end the command with their message, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from rules.errors import RuleError
from rules.pack import content_hash
from service.config import Settings
from service.governance import database, dead_letters
from service.governance.cases import run_cases
from service.governance.catalogue import Catalogue
from service.governance.cli import DEFAULT_CASES
from service.governance.diff import diff_packs
from service.governance.errors import GovernanceError
from service.governance.manifest import Finding, load_manifest, release, retire, save_manifest
from service.governance.replay import replay
from service.governance.report import render
from service.governance.reportdata import collect
from service.governance.wording import Wording
from service.store.schema import feedback, hook_calls, hook_cards, make_engine

__all__ = ["HANDLERS", "Handler", "run"]

Handler = Callable[[argparse.Namespace], int]


def _start_of(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), tzinfo=UTC)


def _engine(settings: Settings) -> Engine:
    return make_engine(settings.resolved_database_url())


def _catalogue(settings: Settings, args: argparse.Namespace) -> Catalogue:
    manifest = load_manifest(getattr(args, "manifest", None))
    return Catalogue.discover(settings.rules_dir, manifest)


# -- rules ---------------------------------------------------------------------------------------


def _check(catalogue: Catalogue, key: str) -> list[Finding]:
    source = catalogue.sources[key]
    try:
        catalogue.load(key)
    except RuleError as error:
        return [Finding("error", str(error))]
    document = source.document
    findings = catalogue.manifest.check(key, document, content_hash(document), bundled=source.bundled)
    if not any(entry.get("version") == document.get("version") for entry in document.get("changelog", [])):
        findings.append(Finding("warning", f"the changelog has no entry for {document.get('version')}"))
    if document.get("status") != "draft" and not document.get("approvals"):
        findings.append(Finding("warning", "no approval is recorded"))
    return findings


def _validate(args: argparse.Namespace) -> int:
    settings = Settings()
    catalogue = _catalogue(settings, args)
    keys = [catalogue.add(Path(file)).key for file in args.files] if args.files else catalogue.ordered()
    errors = 0
    for key in keys:
        findings = _check(catalogue, key)
        errors += sum(f.level == "error" for f in findings)
        state = (
            "ok"
            if not findings
            else "FAILED"
            if any(f.level == "error" for f in findings)
            else "ok, with warnings"
        )
        print(
            f"{key}: {state} ({catalogue.manifest.status(key)}, {content_hash(catalogue.sources[key].document)[:19]}…)"
        )
        for finding in findings:
            print(f"  {finding.level}: {finding.message}")
    if not args.files:
        for key, entry in catalogue.manifest.releases.items():
            if key not in catalogue.sources:
                errors += 1
                print(f"{key}: FAILED\n  error: released on {entry.released} but its pack file is missing")
    return 1 if errors else 0


def _list(args: argparse.Namespace) -> int:
    settings = Settings()
    catalogue = _catalogue(settings, args)
    rows = [("pack", "status", "released", "approved", "hash", "serving")]
    for key in catalogue.ordered():
        document = catalogue.sources[key].document
        entry = catalogue.manifest.releases.get(key)
        released = entry.released.isoformat() if entry else "-"
        if entry and entry.retired:
            released += f" (retired {entry.retired})"
        approvals = document.get("approvals", [])
        approved = ", ".join(f"{a['name']} {a['date']}" for a in approvals) or "no"
        serving = (
            "active" if key == settings.active_pack else "shadow" if key in settings.shadow_packs else ""
        )
        rows.append(
            (key, catalogue.manifest.status(key), released, approved, content_hash(document)[:19], serving)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _diff(args: argparse.Namespace) -> int:
    settings = Settings()
    catalogue = _catalogue(settings, args)
    old_key, new_key = catalogue.resolve_key(args.old), catalogue.resolve_key(args.new)
    old, new = catalogue.sources[old_key].document, catalogue.sources[new_key].document
    vocabulary = catalogue.vocabulary
    print(diff_packs(old, new, Wording(vocabulary, old), Wording(vocabulary, new)).render(), end="")
    return 0


def _test(args: argparse.Namespace) -> int:
    settings = Settings()
    catalogue = _catalogue(settings, args)
    pack = catalogue.resolve(args.version or settings.active_pack)
    folder = args.cases or DEFAULT_CASES
    results = run_cases(pack, catalogue.vocabulary, folder)
    failed = [r for r in results if not r.passed]
    for result in failed:
        print(f"FAIL {result.file} {result.case_id}")
        for failure in result.failures:
            print(f"     {failure}")
    print(f"{pack.key}: {len(results) - len(failed)} of {len(results)} cases pass ({folder})")
    return 1 if failed or not results else 0


def _replay(args: argparse.Namespace) -> int:
    settings = Settings()
    catalogue = _catalogue(settings, args)
    candidate = catalogue.resolve(args.candidate)
    known = {}
    for key in catalogue.ordered():
        try:
            known[key] = catalogue.load(key)
        except RuleError:
            continue
    engine = _engine(settings)
    try:
        report = replay(
            engine, candidate, catalogue.vocabulary, known_packs=known, since=_start_of(args.since)
        )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(report.render(), end="")
    return 0


def _release(args: argparse.Namespace) -> int:
    settings = Settings()
    catalogue = _catalogue(settings, args)
    key = catalogue.resolve_key(args.pack)
    catalogue.load(key)  # a pack that does not validate is never released
    document = catalogue.sources[key].document
    entry = release(
        catalogue.manifest, key, document, content_hash(document), on=args.date or args.clock().date()
    )
    path = save_manifest(catalogue.manifest, args.manifest)
    print(f"released {key} on {entry.released} with hash {entry.hash} ({path})")
    return 0


def _retire(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    entry = retire(manifest, args.pack, on=args.date or args.clock().date(), reason=args.reason)
    path = save_manifest(manifest, args.manifest)
    print(f"retired {entry.key} on {entry.retired}: {entry.retired_reason} ({path})")
    return 0


# -- db, report, trail ---------------------------------------------------------------------------


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = Settings()
    if args.sql:
        print(database.upgrade_sql(settings.resolved_database_url(), args.revision), end="")
        return 0
    engine = _engine(settings)
    try:
        current = database.upgrade(engine, args.revision)
    finally:
        engine.dispose()
    print(f"database at revision {', '.join(current) or 'base'}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    engine = _engine(Settings())
    try:
        with engine.connect() as connection:
            current = database.current_revisions(connection)
    finally:
        engine.dispose()
    heads = database.head_revisions()
    state = (
        "up to date"
        if set(current) == set(heads)
        else f"behind: run `calf-cds db upgrade` (head {', '.join(heads)})"
    )
    print(f"database at revision {', '.join(current) or 'none'}: {state}")
    return 0 if set(current) == set(heads) else 1


def _db_purge(args: argparse.Namespace) -> int:
    settings = Settings()
    days = args.days if args.days is not None else settings.retention_days
    engine = _engine(settings)
    try:
        result = database.purge(engine, retention_days=days, now=args.clock(), dry_run=args.dry_run)
    finally:
        engine.dispose()
    print(("would delete " if args.dry_run else "deleted ") + result.describe())
    return 0


def _report(args: argparse.Namespace) -> int:
    settings = Settings()
    catalogue = _catalogue(settings, args)
    engine = _engine(settings)
    try:
        data = collect(
            engine,
            catalogue,
            active=settings.active_pack,
            shadows=settings.shadow_packs,
            since=_start_of(args.since),
            now=args.clock(),
        )
    finally:
        engine.dispose()
    args.out.write_text(render(data, active=settings.active_pack, shadows=settings.shadow_packs), "utf-8")
    print(
        f"wrote {args.out} ({data.calls} calls, {data.cards} cards, {data.feedback_entries} feedback entries)"
    )
    return 0


def _trail(args: argparse.Namespace) -> int:
    engine = _engine(Settings())
    try:
        with engine.connect() as connection:
            card = (
                connection.execute(select(hook_cards).where(hook_cards.c.card_uuid == args.id))
                .mappings()
                .first()
            )
            call_id = card["call_id"] if card else args.id
            call = (
                connection.execute(select(hook_calls).where(hook_calls.c.call_id == call_id))
                .mappings()
                .first()
            )
            uuids = [c["uuid"] for c in call["cards"]] if call else [args.id]
            responses = (
                connection.execute(
                    select(feedback)
                    .where(feedback.c.card_uuid.in_(uuids))
                    .order_by(feedback.c.outcome_timestamp)
                )
                .mappings()
                .all()
            )
    finally:
        engine.dispose()
    if call is None:
        print(
            f"no card or call {args.id} in the audit trail"
            + (f"; {len(responses)} feedback entries name it" if responses else "")
        )
        return 1
    print(_describe_call(call, responses))
    return 0


def _describe_call(call: Any, responses: Any) -> str:
    lines = [
        f"call {call['call_id']} at {call['received_at']} — {call['hook']} for patient {call['patient_id']}",
        f"  user {call['user_id']}; status {call['status_code']}; {call['duration_ms']:.0f} ms",
        f"  rule pack {call['pack_id']}@{call['pack_version']} ({call['pack_hash']})",
        "  facts the rules read:",
    ]
    for name, fact in sorted((call["facts"] or {}).items()):
        sources = ", ".join(
            f"{e['reference']} ({e.get('when') or 'undated'})" for e in fact.get("evidence", [])
        )
        lines.append(f"    {name} = {fact.get('value')!r}  ← {sources or 'no source'}")
    lines.append("  cards shown:")
    for card in call["cards"] or []:
        lines.append(
            f"    {card['uuid']} {card['topic']} ({card['indicator']}) rule {card['rule_id']}: {card['summary']}"
        )
    for item in call["suppressed"] or []:
        lines.append(f"  suppressed: {item}")
    for shadow in call["shadow"] or []:
        topics = (
            ", ".join(f"{r['topic']} ({r['indicator']})" for r in shadow.get("recommendations", []))
            or "no cards"
        )
        lines.append(f"  shadow {shadow.get('pack_id')}@{shadow.get('pack_version')} would show: {topics}")
    lines.append("  feedback:" if responses else "  feedback: none")
    for entry in responses:
        said = [entry["outcome"], entry["override_reason_display"] or entry["override_reason_code"]]
        said.append(f"“{entry['user_comment']}”" if entry["user_comment"] else None)
        told = " ".join(part for part in said if part)
        lines.append(f"    {entry['outcome_timestamp']} card {entry['card_uuid']}: {told}")
    return "\n".join(lines)


# -- running one -----------------------------------------------------------------------------------


HANDLERS: dict[str, Handler] = {
    "validate": _validate,
    "list": _list,
    "diff": _diff,
    "test": _test,
    "replay": _replay,
    "release": _release,
    "retire": _retire,
    "upgrade": _db_upgrade,
    "current": _db_current,
    "purge": _db_purge,
    "report": _report,
    "trail": _trail,
    "dead-letters-list": dead_letters.list_command,
    "dead-letters-redrive": dead_letters.redrive_command,
}


def run(name: str, args: argparse.Namespace) -> int:
    """Run the command ``name``; governance and rule errors end it with their message, not a traceback."""
    try:
        return HANDLERS[name](args)
    except (GovernanceError, RuleError) as error:
        print(f"calf-cds: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:
        print(f"calf-cds: the database is unavailable ({type(error).__name__})", file=sys.stderr)
        return 2
