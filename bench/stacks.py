"""Where the workers' time goes, from py-spy's collapsed stacks (``py-spy record --format raw``).

Each sample is charged to the deepest frame in the project's own packages (``service``,
``cds_hooks``, ``fhir_mappings``, ``rules``): library code is charged to the project function that
called it (``service/store/writers.py:AuditWriter.write`` includes SQLAlchemy and psycopg beneath it). Samples with no
project frame are charged to the library of their innermost frame (``uvicorn``, ``h11``,
``asyncio``, …): the HTTP server and the event loop.

    python bench/stacks.py DIR/worker-*.folded
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PROJECT = ("service", "cds_hooks", "fhir_mappings", "rules", "bench")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _where(frame: str) -> tuple[str, str]:
    """(file path, function) of a py-spy frame ``function (path:line)``."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return "", frame.strip()
    return match["file"], match["function"]


def _project_name(path: str) -> str | None:
    parts = Path(path).parts
    for index, part in enumerate(parts):
        if part in PROJECT and "site-packages" not in parts[:index]:
            return "/".join(parts[index:])
    return None


def _library(path: str) -> str:
    parts = Path(path).parts
    if "site-packages" in parts:
        index = parts.index("site-packages")
        if index + 1 < len(parts):
            return parts[index + 1].removesuffix(".py")
    return Path(path).stem or "other"


def charge(stack: list[str]) -> str:
    """The name a sample is charged to (see the module docstring)."""
    for frame in reversed(stack):
        file, function = _where(frame)
        name = _project_name(file)
        if name is not None:
            return f"{name}:{function}"
    file, _ = _where(stack[-1]) if stack else ("", "")
    return f"[{_library(file)}]"


def summarize(paths: list[Path], top: int = 25) -> dict[str, Any]:
    charged: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text("utf-8", errors="replace").splitlines():
            stack_text, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            name = charge(stack_text.split(";"))
            charged[name] += count
            packages[
                name.split("/", 1)[0] if not name.startswith("[") else "libraries (HTTP server, event loop)"
            ] += count
            total += count
    lines = [
        f"profile: {total} samples from {len(paths)} worker(s); share of samples, charged as in bench/stacks.py"
    ]
    for name, count in packages.most_common():
        lines.append(f"  {count / total:6.1%}  {name}")
    lines.append("  --")
    for name, count in charged.most_common(top):
        lines.append(f"  {count / total:6.1%}  {name}")
    return {
        "samples": total,
        "by_package": {k: v / total for k, v in packages.items()} if total else {},
        "top": [(k, v / total) for k, v in charged.most_common(top)] if total else [],
        "text": "\n".join(lines),
    }


if __name__ == "__main__":
    print(summarize([Path(p) for p in sys.argv[1:]])["text"])
