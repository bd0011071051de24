"""Governance commands of ``calf-cds``: their parser (registered by ``service.cli``)::

    calf-cds rules validate [FILE...]        schema, compile, draft orders, release manifest
    calf-cds rules list                      every version: status, release, approvals, hash
    calf-cds rules diff A B                  what changed, in a clinician's words
    calf-cds rules test [VERSION] [--cases DIR]
    calf-cds rules replay --candidate VERSION [--since DATE] [--json]
    calf-cds rules release ID@VERSION [--date DATE]      record a release in the manifest
    calf-cds rules retire ID@VERSION --reason TEXT [--date DATE]
    calf-cds db upgrade [--sql] | db current | db purge [--days N] [--dry-run]
    calf-cds db dead-letters list [--json] | db dead-letters redrive [ID...]
    calf-cds report [--out FILE] [--since DATE]
    calf-cds trail CARD_UUID|CALL_ID         one card's (or call's) audit trail, end to end

A pack is named ``id@version``, by a bare version, or by a file path. The database and rule
folders come from the ``CALF_CDS_*`` settings, as for ``serve``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CASES", "Handler", "add_commands"]

Handler = Callable[[argparse.Namespace], int]
DEFAULT_CASES = Path("tests/rules/cases")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _lazy(name: str) -> Handler:
    """The handler of command ``name``, imported when it runs: ``--help`` loads no database code."""

    def run(args: argparse.Namespace) -> int:
        commands = importlib.import_module("service.governance.commands")
        result: int = commands.run(name, args)
        return result

    return run


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rules``, ``db``, ``report`` and ``trail`` to the ``calf-cds`` parser."""
    rules = commands.add_parser("rules", help="rule packs: validate, list, diff, test, replay, release")
    sub = rules.add_subparsers(dest="rules_command", required=True)

    def command(name: str, handler: str, help_text: str, parent: Any = sub) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        parser.set_defaults(handler=_lazy(handler))
        if parent is sub:
            parser.add_argument("--manifest", type=Path, help="release manifest (default: the bundled one)")
        return parser

    validate = command("validate", "validate", "check packs: schema, compile, draft orders, manifest")
    validate.add_argument("files", nargs="*", help="pack files (default: every known pack)")
    command("list", "list", "every known pack version")
    diff = command("diff", "diff", "what changed between two versions, in words")
    diff.add_argument("old", help="id@version, version or file")
    diff.add_argument("new", help="id@version, version or file")
    test = command("test", "test", "run clinical test cases against a pack")
    test.add_argument("version", nargs="?", help="pack (default: the active pack)")
    test.add_argument("--cases", type=Path, help=f"folder of case files (default: {DEFAULT_CASES})")
    replay_parser = command("replay", "replay", "re-evaluate audited calls with a candidate pack")
    replay_parser.add_argument("--candidate", required=True, help="id@version, version or file")
    replay_parser.add_argument("--since", type=_day, help="only calls from this date (YYYY-MM-DD)")
    replay_parser.add_argument("--json", action="store_true", help="machine-readable output")
    release_parser = command("release", "release", "record a version as released (immutable)")
    release_parser.add_argument("pack", help="id@version")
    release_parser.add_argument("--date", type=_day, help="release date (default: today)")
    retire_parser = command("retire", "retire", "record a released version as retired")
    retire_parser.add_argument("pack", help="id@version")
    retire_parser.add_argument("--reason", required=True, help="why it is retired")
    retire_parser.add_argument("--date", type=_day, help="retirement date (default: today)")

    db = commands.add_parser("db", help="database schema and retention")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = command("upgrade", "upgrade", "migrate the database to the newest schema", db_sub)
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    command("current", "current", "the database's schema revision", db_sub)
    purge = command("purge", "purge", "delete audit rows older than the retention period", db_sub)
    purge.add_argument("--days", type=int, help="retention in days (default: CALF_CDS_RETENTION_DAYS)")
    purge.add_argument("--dry-run", action="store_true", help="count, do not delete")
    letters = db_sub.add_parser("dead-letters", help="audit records the database refused")
    letters_sub = letters.add_subparsers(dest="dead_letters_command", required=True)
    listing = command("list", "dead-letters-list", "every dead letter, with its reason", letters_sub)
    listing.add_argument("--json", action="store_true", help="machine-readable, with each record")
    again = command(
        "redrive", "dead-letters-redrive", "write dead letters into their tables again", letters_sub
    )
    again.add_argument("ids", nargs="*", help="dead letter ids (default: all)")

    report = commands.add_parser("report", help="write the governance report (HTML)")
    report.add_argument("--out", type=Path, default=Path("governance-report.html"), help="output file")
    report.add_argument("--since", type=_day, help="only calls from this date (YYYY-MM-DD)")
    report.set_defaults(handler=_lazy("report"), manifest=None)

    trail = commands.add_parser("trail", help="the audit trail of one card or call")
    trail.add_argument("id", help="a card uuid or a call id")
    trail.set_defaults(handler=_lazy("trail"))
