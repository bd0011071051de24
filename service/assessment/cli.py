"""``calf-cds extract``: a QuestionnaireResponse file to the transaction Bundle, as ``$extract`` answers.

::

    calf-cds extract RESPONSE.json [--now 2026-11-20T09:00:00Z]

Prints the Bundle (FHIR JSON) on stdout. A response that cannot be extracted prints the
OperationOutcome on stderr and exits 1; a file that cannot be read exits 2. ``--now`` dates the
findings of a response without ``authored`` (default: the clock ``calf-cds`` hands the command).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

import orjson

from fhir_mappings.fhir_json import parse_datetime
from service.assessment.extract import extract_body
from service.config import Settings

__all__ = ["handle", "run_extract"]


def handle(args: argparse.Namespace) -> int:
    """``calf-cds extract`` as ``service.cli`` parsed it, at ``args.clock()`` unless ``--now`` says."""
    parser: argparse.ArgumentParser = args.parser
    now: datetime = args.clock()
    if args.now is not None:
        given = parse_datetime(args.now)
        if given is None or "T" not in args.now:
            parser.error("--now must be a dateTime with a time zone, e.g. 2026-11-20T09:00:00Z")
        now = given
    return run_extract(args.response, settings=Settings(), clock=lambda: now)


def run_extract(
    source: str,
    *,
    settings: Settings,
    clock: Callable[[], datetime],
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Extract ``source`` (a path, or ``-`` for stdin) at ``clock()``; print the Bundle or the outcome."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        text = (stdin or sys.stdin).read() if source == "-" else Path(source).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"calf-cds extract: cannot read {source}: {type(error).__name__}", file=err)
        return 2
    status, answer = extract_body(text.encode("utf-8"), settings, clock())
    rendered = orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode()
    if status != 200:
        print(rendered, file=err)
        return 1
    print(rendered, file=out)
    return 0
