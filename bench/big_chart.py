"""A 10,000-Observation chart end to end through the HTTP app: prefetch size and latency, before
and after narrowing the Observation template by code.

    python bench/big_chart.py [--observations 10000] [--requests 20]

The chart is the 1,000 real Synthea Observations of ../shared/fhir-data/derived/
observations-1000-searchset.json, repeated with new ids until it has ``--observations`` of them,
re-pointed at one patient, plus a handful of findings the rules read (calf pain, calf tenderness,
pitting oedema, a D-dimer in µg/mL FEU) so that cards come back.

* **before** — the whole chart as the ``observations`` prefetch (what the 1.0 template
  ``Observation?patient=X`` returns). Served with the body and JSON limits raised so that it can be
  measured; with the default limits such a body is refused (413) or, when the request names a
  fhirServer, its prefetch is discarded and fetched narrowly (see README, "Charts of any size").
* **after** — only the Observations the narrowed template (``Observation?patient=X&code=...``,
  service/hooks/discovery.py) selects: the same filter applied here to the same chart.

Prints body size, p50/p90 latency and the cards' topics for both. A benchmark, not a test: no
figure here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import tokens
from bench.servers import free_port, start_service_on
from bench.traffic import percentile
from bench.workload import OBSERVATIONS as DATA
from service.hooks.discovery import PREFETCH_TEMPLATES

PATIENT = "bench"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def findings(now: str) -> list[dict[str, Any]]:
    right_leg = {
        "coding": [{"system": SNOMED, "code": "62175007", "display": "Structure of right lower limb"}]
    }
    shapes: list[tuple[str, str, dict[str, Any]]] = [
        (SNOMED, "300954003", {"valueBoolean": True, "bodySite": right_leg}),
        (SNOMED, "247348008", {"valueBoolean": True, "bodySite": right_leg}),
        (SNOMED, "421605005", {"valueBoolean": True, "bodySite": right_leg}),
        (LOINC, "48065-7", {"valueQuantity": {"value": 1.9, "unit": "ug/mL{FEU}"}}),
    ]
    return [
        {
            "resourceType": "Observation",
            "id": f"bench-finding-{index}",
            "status": "final",
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": f"Patient/{PATIENT}"},
            "effectiveDateTime": now,
            **value,
        }
        for index, (system, code, value) in enumerate(shapes)
    ]


def chart(size: int) -> list[dict[str, Any]]:
    source = [e["resource"] for e in json.loads(DATA.read_text())["entry"]]
    observations: list[dict[str, Any]] = []
    while len(observations) < size:
        for resource in source[: size - len(observations)]:
            copy = dict(resource)
            copy["id"] = f"{resource.get('id', 'obs')}-{len(observations)}"
            copy["subject"] = {"reference": f"Patient/{PATIENT}"}
            observations.append(copy)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return observations + findings(now)


def narrowed(observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ``Observation?patient=X&code=...`` of the discovery document returns from this chart."""
    query = PREFETCH_TEMPLATES["observations"].split("code=", 1)[1]
    wanted = set(query.split(","))
    return [
        o
        for o in observations
        if any(c.get("code") in wanted for c in o.get("code", {}).get("coding", []) if isinstance(c, dict))
    ]


def body(observations: list[dict[str, Any]]) -> bytes:
    def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}

    prefetch: dict[str, Any] = {
        key: bundle([]) for key, template in PREFETCH_TEMPLATES.items() if "?" in template
    }
    prefetch["patient"] = {
        "resourceType": "Patient",
        "id": PATIENT,
        "birthDate": "1950-01-01",
        "gender": "male",
    }
    prefetch["observations"] = bundle(observations)
    return json.dumps(
        {
            "hook": "patient-view",
            "hookInstance": "bench-big-chart",
            "context": {"userId": "Practitioner/bench", "patientId": PATIENT},
            "prefetch": prefetch,
        }
    ).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20, help="timed requests per variant")
    args = parser.parse_args()
    whole = chart(args.observations)
    variants = {"before (whole chart)": body(whole), "after (narrowed by code)": body(narrowed(whole))}
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="calf-bench-big-"))
    base = f"http://127.0.0.1:{port}"
    audience = base + "/cds-services/calf-pain"
    env = tokens.prepare_issuer("ES384", folder / "keys", base) | {
        "CALF_CDS_DATA_DIR": str(folder / "data"),
        # raised only so that the whole chart can be measured at all (defaults: 5 MB, 10,000 items)
        "CALF_CDS_MAX_BODY_BYTES": str(200_000_000),
        "CALF_CDS_MAX_ARRAY_LENGTH": str(args.observations * 2),
    }
    supply = tokens.mint("ES384", folder / "keys", audience, len(variants) * (args.requests + 3), 3600)
    server = start_service_on(port, env, folder, log_level="WARNING")
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            print(
                f"chart: {len(whole)} Observations for one patient ({args.observations} Synthea + findings)"
            )
            print(f"{'variant':<26} {'obs sent':>8} {'body MB':>8} {'p50 ms':>8} {'p90 ms':>8}  topics")
            for name, payload in variants.items():
                timings: list[float] = []
                topics: list[str] = []
                for round_ in range(args.requests + 3):
                    headers = {
                        "content-type": "application/json",
                        "authorization": f"Bearer {supply.pop()}",
                    }
                    started = time.perf_counter()
                    response = client.post("/cds-services/calf-pain", content=payload, headers=headers)
                    elapsed = (time.perf_counter() - started) * 1000
                    response.raise_for_status()
                    topics = [c["source"]["topic"]["code"] for c in response.json()["cards"]]
                    if round_ >= 3:  # warm-up
                        timings.append(elapsed)
                sent = len(json.loads(payload)["prefetch"]["observations"]["entry"])
                print(
                    f"{name:<26} {sent:>8} {len(payload) / 1e6:>8.2f} {statistics.median(timings):>8.1f} "
                    f"{percentile(timings, 0.9):>8.1f}  {','.join(topics)}"
                )
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print("budget: 500 ms end to end (DESIGN.md); defaults refuse the whole-chart body (5 MB, 10,000 items)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
