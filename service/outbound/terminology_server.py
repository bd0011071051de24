"""An optional FHIR terminology server: a site's own value-set expansions, added at start-up.

Off by default. With ``CALF_CDS_TERMINOLOGY_SERVER`` (a FHIR R4 base URL) and
``CALF_CDS_TERMINOLOGY_EXPANSIONS`` (JSON: value-set name of ``fhir_mappings/data/valuesets.json``
→ a ValueSet canonical URL, e.g. ``{"dvt": "http://snomed.info/sct?fhir_vs=isa/128053003"}``), the
service runs ``ValueSet/$expand?url=...`` for each at start-up and adds every code of the expansion
to that value set, so a site can use the SNOMED CT hierarchy (all subtypes of DVT) instead of the
verified lists alone. ``$validate-code`` answers whether one code is in a value set
(:meth:`TerminologyServer.validate_code`; ``calf-cds terminology validate`` uses it to check the
bundled SNOMED CT codes against a current edition).

Results are cached in ``<data_dir>/terminology-cache.json`` for ``terminology_cache_days``; a server
that is down at start-up costs nothing but a log line: the cached expansion (however old) or, with
none, the bundled lists are used. Nothing here runs while a hook call is answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fhir_mappings.terminology import SNOMED, CodeEntry, Terminology, listed_terminology

__all__ = [
    "CACHE_FILE",
    "TerminologyServer",
    "TerminologyServerError",
    "extend_terminology",
    "validate_command",
]

log = logging.getLogger("calf_cds.terminology")
CACHE_FILE = "terminology-cache.json"


class TerminologyServerError(Exception):
    """The terminology server did not give a usable answer (``url`` says for what)."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


@dataclass(frozen=True)
class TerminologyServer:
    """``$expand`` and ``$validate-code`` against one FHIR R4 terminology server."""

    base_url: str
    transport: httpx.AsyncBaseTransport | None = None
    timeout: float = 10.0

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url.rstrip("/") + "/",
            transport=self.transport,
            timeout=self.timeout,
            headers={"accept": "application/fhir+json"},
        )

    async def expand(self, valueset_url: str) -> list[tuple[str, str, str]]:
        """(system, code, display) of every code in the expansion of ``valueset_url``."""
        async with self._client() as client:
            response = await client.get("ValueSet/$expand", params={"url": valueset_url, "count": 10000})
        body = _resource(response, "ValueSet", valueset_url)
        contains = (
            body.get("expansion", {}).get("contains", []) if isinstance(body.get("expansion"), dict) else []
        )
        found: list[tuple[str, str, str]] = []
        stack = list(contains) if isinstance(contains, list) else []
        while stack:
            item = stack.pop()
            if not isinstance(item, dict):
                continue
            stack.extend(c for c in item.get("contains", []) if isinstance(c, dict))
            system, code = item.get("system"), item.get("code")
            if isinstance(system, str) and isinstance(code, str) and not item.get("abstract", False):
                found.append((system, code, str(item.get("display", ""))))
        return sorted(set(found))

    async def validate_code(self, valueset_url: str, system: str, code: str) -> bool:
        """Whether the server says ``system|code`` is in ``valueset_url`` (``ValueSet/$validate-code``)."""
        params = {"url": valueset_url, "system": system, "code": code}
        async with self._client() as client:
            response = await client.get("ValueSet/$validate-code", params=params)
        body = _resource(response, "Parameters", valueset_url)
        for parameter in body.get("parameter", []):
            if isinstance(parameter, dict) and parameter.get("name") == "result":
                return parameter.get("valueBoolean") is True
        raise TerminologyServerError("$validate-code answered without a result", url=valueset_url)


def _resource(response: httpx.Response, kind: str, url: str) -> Mapping[str, Any]:
    if response.status_code != 200:
        raise TerminologyServerError(f"HTTP {response.status_code}", url=url)
    try:
        body = response.json()
    except ValueError:
        raise TerminologyServerError("not JSON", url=url) from None
    if not isinstance(body, dict) or body.get("resourceType") != kind:
        raise TerminologyServerError(f"not a {kind}", url=url)
    return body


async def extend_terminology(
    terminology: Terminology,
    *,
    server: TerminologyServer | None,
    expansions: Mapping[str, str],
    cache_dir: Path,
    max_age: timedelta,
    now: datetime,
) -> Terminology:
    """``terminology`` plus the configured expansions (fresh, cached, or none if neither)."""
    if server is None or not expansions:
        return terminology
    terminology.require(expansions, fact="terminology_expansions setting")
    cache_path = cache_dir / CACHE_FILE
    cache = _read_cache(cache_path)
    entries: list[CodeEntry] = []
    for name, url in sorted(expansions.items()):
        key = f"{server.base_url}|{url}"
        cached = cache.get(key)
        fresh = isinstance(cached, dict) and now - datetime.fromisoformat(str(cached["fetched"])) < max_age
        if not fresh:
            try:
                codes = await server.expand(url)
                cached = {"fetched": now.isoformat(), "codes": [list(c) for c in codes]}
                cache[key] = cached
            except (httpx.HTTPError, TerminologyServerError) as error:
                log.warning(
                    "terminology server: $expand of %s failed (%s); using %s",
                    url,
                    error,
                    "the cached expansion" if cached else "the bundled codes only",
                )
        if isinstance(cached, dict):
            entries += [CodeEntry(name, str(s), str(c), str(d)) for s, c, d in cached["codes"]]
            log.info("terminology server: %s + %d codes from %s", name, len(cached["codes"]), url)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True), "utf-8")
    return terminology.extended(entries)


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def validate_command(args: argparse.Namespace) -> int:
    """``calf-cds terminology validate`` as ``service.cli`` parsed it."""
    codes = sorted(
        {e.code for entries in listed_terminology().valuesets.values() for e in entries if e.system == SNOMED}
    )
    server = TerminologyServer(args.server)

    async def check() -> list[str]:
        return [code for code in codes if not await server.validate_code(args.valueset_url, SNOMED, code)]

    try:
        rejected = asyncio.run(check())
    except (httpx.HTTPError, TerminologyServerError) as error:
        print(f"calf-cds: terminology server did not answer: {error}", file=sys.stderr)
        return 2
    for code in rejected:
        print(f"not valid in {args.valueset_url}: {SNOMED}|{code}")
    print(f"{len(codes) - len(rejected)} of {len(codes)} SNOMED CT codes valid")
    return 1 if rejected else 0
