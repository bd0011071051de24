"""Records lost under the poison-record scenario of issue 18, for this checkout or another commit.

    python bench/poison.py [--src DIR]

Runs ``tests/service/governance/poison.py`` (two workers, PostgreSQL, a poison call every 25
calls, an unstorable userId every 20, an outage mid-traffic, SIGTERM during a second outage, a
restart) against the server in ``--src`` (default: this checkout; e.g. ``git archive d98605c``
unpacked somewhere for the release before), on a PostgreSQL database of its own (dropped after),
and prints the counts: answered, stored, dead letters, lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service.governance.conftest import admin, sqlalchemy_url  # noqa: E402 -- after the path is set
from tests.service.governance.poison import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--src", type=Path, default=ROOT)
    args = parser.parse_args()
    name = f"calf_bench_{uuid.uuid4().hex[:12]}"
    with admin() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as folder:
            outcome = run(args.src.resolve(), name, sqlalchemy_url(name), Path(folder))
    finally:
        with admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    answered = set(outcome.answered)
    report = {
        "src": str(args.src),
        "answered": len(answered),
        "poisoned": len(outcome.poisoned),
        "stored": len(outcome.stored & answered),
        "dead_letters": len(outcome.dead),
        "lost": len(outcome.lost),
        "lost_not_poisoned": len(outcome.lost - outcome.poisoned),
        "spool_files_left": outcome.spool_files_left,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
