"""How fast the calf-pain hook answers, against a bare FastAPI floor, at any chart size (issue 15).

    uv run --frozen --group bench python -m bench.hook_speed            # latency, throughput, CLI
    uv run --frozen --group bench python -m bench.hook_speed --soak 10  # … and a 10-minute soak
    uv run --frozen --group bench python -m bench.hook_speed --quick    # a short smoke run (CI)

The service runs as in production: ``calf-cds serve`` (uvloop, httptools, the collector tuned after
start-up), client authentication on (an ES384 issuer from a trusted-issuer file and a public base
URL, not development mode), the audit trail on, INFO logs to a file. Every hook call carries a
fresh ES384 JWT, signed before the clock starts (``bench/tokens.py``). The only settings raised
are the body and JSON-array limits, so that a 10,000-Observation chart can be sent at all.

The floor (``bench/floor_app.py``) is a bare FastAPI app under the same uvicorn options that
parses the same body with orjson and answers an empty card list. Both get the same bytes. The
*guarded* floor (``bench/floor_app.py --guarded``) is that floor plus only the obligations every
call carries, done the cheapest way this stack offers: the client JWT verified, the replay check,
the JSON limits. Its ratio to the floor is what the obligations cost; the hook's ratio to it is
what the service's own work costs. The latency and throughput modes call all three.

Modes (``--modes``, default ``latency,throughput,cli``; ``--soak MINUTES`` adds the soak):

latency     one worker, SQLite audit. For each chart size (``--sizes``, default 10, 100, 1000 and
            10,000 real Observations plus 20 real Conditions and the findings of a DVT case), the
            hook and the floor in alternation, one call at a time over keep-alive connections.
            Prints p50/p99 of both, the p50 ratio and p99 ÷ floor p50, ms per 1000 resources (all
            of the call, and the marginal cost above the smallest chart), CPU per call of both
            servers, the worker's peak RSS while serving that size, and the machine's load.
throughput  two workers (``--workers``), audit to a PostgreSQL database of its own on
            127.0.0.1:5432 (``--database``, created and dropped), the realistic mix of
            ``bench/workload.py`` (~100 Observations, ~20 Conditions). A closed loop of
            ``--clients`` connections drives the service and the floor in alternating segments;
            prints calls/s of both and their ratio, latency, errors (transport, non-200, wrong
            cards) and audit rows against the calls answered (after the writer flushed and after a
            graceful stop).
soak        one worker, SQLite audit, the same mix at ``--soak-rate`` calls/s for ``--soak``
            minutes; the worker's RSS sampled every ``--soak-interval`` seconds, and its growth.
cli         wall time of ``calf-cds --help`` and ``calf-cds token`` (median of ``--cli-runs``).

A benchmark, not a test: nothing here asserts a timing. ``tests/bench`` runs ``--quick`` to
check that it runs and prints its tables. The machine may be shared: every table says how many
cores other processes used while it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import database, tokens
from bench.cpu import cpu_seconds, generator_cpu, machine_busy
from bench.floor_app import DEFAULT_MAX_ITEMS
from bench.servers import (
    ROOT,
    GuardSettings,
    Server,
    free_port,
    memory_kb,
    reset_peak,
    start_floor,
    start_service_on,
)
from bench.traffic import HOOK_PATH, Connection, Stats, Tokens, closed_loop, open_loop, percentile
from bench.workload import PATTERNS, Body, build_bodies, expected_topics, sized_body

SIZES = (10, 100, 1000, 10_000)
QUICK_SIZES = (10, 100)
DATABASE = "calfcds_hook_speed"
TOKEN_LIFETIME = 3600  # the service's longest accepted exp - iat
# Raised only so that a 10,000-Observation chart (~9 MB, >10,000 array items) can be measured at all;
# with the defaults (5 MB, 10,000 items) such a body is refused or fetched narrowly (README).
LIMITS = {"CALF_CDS_MAX_BODY_BYTES": str(64_000_000), "CALF_CDS_MAX_ARRAY_LENGTH": str(40_000)}


# -- the machine ---------------------------------------------------------------------------------


@dataclass
class Window:
    """CPU used over a stretch of the run: by the servers, by this process and by the whole machine."""

    pids: list[int]
    started: float = field(default_factory=time.perf_counter)
    ours_before: float = 0.0
    busy_before: float = 0.0
    load_before: float = 0.0

    def __post_init__(self) -> None:
        self.ours_before = cpu_seconds(self.pids) + generator_cpu()
        self.busy_before = machine_busy()[0]
        self.load_before = os.getloadavg()[0]

    def close(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        ours = cpu_seconds(self.pids) + generator_cpu() - self.ours_before
        busy = machine_busy()[0] - self.busy_before
        return {
            "seconds": round(elapsed, 1),
            "load_1min_start": round(self.load_before, 2),
            "load_1min_end": round(os.getloadavg()[0], 2),
            "machine_busy_cores": round(busy / elapsed, 2),
            "other_cores": round(max(0.0, busy - ours) / elapsed, 2),
        }


def machine_line(window: dict[str, float]) -> str:
    return (
        f"load average (1 min) {window['load_1min_start']:.2f} → {window['load_1min_end']:.2f}; "
        f"machine busy {window['machine_busy_cores']:.2f} of {os.cpu_count()} cores, "
        f"{window['other_cores']:.2f} of them other processes; {window['seconds']:.0f} s"
    )


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# -- latency -------------------------------------------------------------------------------------

RECONNECTS: dict[str, int] = {}  # calls sent again on a new connection, by server


async def _alternate(
    targets: list[tuple[str, int, list[str] | None]], body: Body, rounds: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """The servers in turn, the order rotated each round, one call at a time, each over its own
    keep-alive connection. ``targets``: (name, port, its JWTs; None: the first target's, unchecked)."""
    connections = {name: Connection(port, lifetime=10**9) for name, port, _ in targets}
    try:
        return await _rounds(targets, connections, body, rounds, warmup)
    finally:
        for connection in connections.values():
            connection.close()


async def _rounds(
    targets: list[tuple[str, int, list[str] | None]],
    connections: dict[str, Connection],
    body: Body,
    rounds: int,
    warmup: int,
) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    timings: dict[str, list[float]] = {name: [] for name, _, _ in targets}
    topics: dict[str, list[str]] = {}
    reconnects = RECONNECTS
    for number in range(warmup + rounds):
        shift = number % len(targets)
        shared = ""
        for name, _, supply in targets[shift:] + targets[:shift]:
            for attempt in (1, 2):
                token = supply.pop() if supply is not None else shared or "not-checked-by-the-floor"
                shared = shared or token
                payload = body.render(str(uuid.uuid4()))
                started = time.perf_counter()
                try:
                    status, answer = await connections[name].post(HOOK_PATH, payload, token)
                except (OSError, asyncio.IncompleteReadError) as error:
                    # uvicorn closes a keep-alive connection idle for 5 s, which a round of 10,000-Observation
                    # calls on a busy machine can reach: open a new one and send the call again (fresh token)
                    connections[name].close()
                    reconnects[name] = reconnects.get(name, 0) + 1
                    if attempt == 2:
                        raise SystemExit(f"{name}: {type(error).__name__} twice in a row") from error
                    continue
                break
            elapsed = time.perf_counter() - started
            if status != 200:
                raise SystemExit(f"{name} answered {status}: {answer[:500]!r}")
            if number >= warmup:
                timings[name].append(elapsed)
            topics[name] = [card["source"]["topic"]["code"] for card in orjson.loads(answer)["cards"]]
    return timings, topics


def _start_pair(
    args: argparse.Namespace, folder: Path, name: str, root: Path, extra: dict[str, str], workers: int
) -> tuple[Server, Path, str]:
    """A service on a free port with its own trusted issuer and data folder; (server, keys, audience)."""
    port = free_port()
    keys = folder / f"keys-{name}"
    env = tokens.prepare_issuer(args.alg, keys, f"http://127.0.0.1:{port}")
    env |= extra | {"CALF_CDS_DATA_DIR": str(folder / f"data-{name}")}
    server = start_service_on(port, env, folder, workers=workers, root=root)
    return server, keys, f"http://127.0.0.1:{port}{HOOK_PATH}"


def _figures(
    prefix: str, timings: list[float], cpu_seconds_per_call: float, floor_p50: float
) -> dict[str, Any]:
    p50, p99 = ms(statistics.median(timings)), ms(percentile(timings, 0.99))
    return {
        f"{prefix}_p50_ms": p50,
        f"{prefix}_p99_ms": p99,
        f"{prefix}_cpu_ms_per_call": ms(cpu_seconds_per_call),
        f"{prefix}_p50_ratio": round(p50 / floor_p50, 2),
        f"{prefix}_p99_over_floor_p50": round(p99 / floor_p50, 2),
    }


def run_latency(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    compare = f"; baseline {args.baseline}" if args.baseline else ""
    print(
        f"\n== latency: one worker, SQLite audit, {args.alg} client JWTs, one call at a time{compare}",
        flush=True,
    )
    service, keys, audience = _start_pair(args, folder, "latency", ROOT, LIMITS, 1)
    servers = {"hook": service}
    if args.baseline:
        servers["base"], base_keys, base_audience = _start_pair(
            args, folder, "base", args.baseline, LIMITS, 1
        )
    floor = servers["floor"] = start_floor(folder, workers=1)
    max_items = int(LIMITS["CALF_CDS_MAX_ARRAY_LENGTH"])
    guard = GuardSettings(tokens.issuers_file(keys), HOOK_PATH, max_items)
    guarded = servers["guarded"] = start_floor(folder, workers=1, guard=guard)
    guarded_audience = guarded.base_url + HOOK_PATH
    rows: list[dict[str, Any]] = []
    peak_resettable = reset_peak(service.workers[0])
    try:
        header = (
            f"{'obs':>6} {'res':>6} {'body kB':>8} {'hook p50':>9} {'hook p99':>9} {'floor p50':>9} "
            f"{'floor p99':>9} {'p50 ×':>6} {'p99/fp50':>8} {'ms/1k res':>9} {'marg/1k':>8} "
            f"{'cpu ms':>7} {'fl cpu':>7} {'RSS MB':>7} {'other':>6}  cards"
        )
        print(header, flush=True)
        for size in args.sizes:
            body, resources = sized_body(size)
            requests = args.requests if size <= 1000 else args.big_requests
            warmup = args.warmup if size <= 1000 else max(2, args.warmup // 4)
            count = requests + warmup + max(20, (requests + warmup) // 5)  # spares for calls sent again
            targets: list[tuple[str, int, list[str] | None]] = [
                ("hook", service.port, tokens.mint(args.alg, keys, audience, count, TOKEN_LIFETIME))
            ]
            if args.baseline:
                base_supply = tokens.mint(args.alg, base_keys, base_audience, count, TOKEN_LIFETIME)
                targets.append(("base", servers["base"].port, base_supply))
            guarded_supply = tokens.mint(args.alg, keys, guarded_audience, count, TOKEN_LIFETIME)
            targets.append(("guarded", guarded.port, guarded_supply))
            targets.append(("floor", floor.port, None))
            for server in servers.values():
                reset_peak(server.workers[0])
            window = Window([pid for server in servers.values() for pid in server.all_pids()])
            cpu_before = {name: cpu_seconds(server.all_pids()) for name, server in servers.items()}
            timings, topics = asyncio.run(_alternate(targets, body, requests, warmup))
            cpu = {
                name: (cpu_seconds(server.all_pids()) - cpu_before[name]) / (requests + warmup)
                for name, server in servers.items()
            }
            machine = window.close()
            memory = {name: memory_kb(server.workers[0]) for name, server in servers.items()}
            floor_p50 = ms(statistics.median(timings["floor"]))
            row: dict[str, Any] = {
                "observations": size,
                "resources": resources,
                "body_kb": round(len(body.template) / 1000),
                "requests": requests,
                "floor_p50_ms": floor_p50,
                "floor_p99_ms": ms(percentile(timings["floor"], 0.99)),
                "floor_cpu_ms_per_call": ms(cpu["floor"]),
                "cards": topics["hook"],
                "machine": machine,
            }
            for name in servers.keys() - {"floor"}:
                row |= _figures(name, timings[name], cpu[name], floor_p50)
                row[f"{name}_rss_peak_mb"] = round(memory[name].get("VmHWM", 0) / 1024, 1)
                row[f"{name}_ms_per_1k_resources"] = round(row[f"{name}_p50_ms"] / resources * 1000, 2)
                if rows:
                    first = rows[0]
                    row[f"{name}_marginal_ms_per_1k_resources"] = round(
                        (row[f"{name}_p50_ms"] - first[f"{name}_p50_ms"])
                        / (resources - first["resources"])
                        * 1000,
                        2,
                    )
            row["rss_peak_mb"], row["rss_mb"] = (
                row["hook_rss_peak_mb"],
                round(memory["hook"].get("VmRSS", 0) / 1024, 1),
            )
            row["p50_ratio"], row["p99_over_floor_p50"] = (
                row["hook_p50_ratio"],
                row["hook_p99_over_floor_p50"],
            )
            for name in servers.keys() - {"floor", "guarded"}:
                row[f"{name}_p50_over_guarded_p50"] = round(row[f"{name}_p50_ms"] / row["guarded_p50_ms"], 2)
                row[f"{name}_p99_over_guarded_p50"] = round(row[f"{name}_p99_ms"] / row["guarded_p50_ms"], 2)
            if args.baseline:
                row["base_cards"] = topics["base"]
            rows.append(row)
            for name in [n for n in ("hook", "base", "guarded") if n in servers]:
                marginal = row.get(f"{name}_marginal_ms_per_1k_resources")
                lead = f"{size:>6} {resources:>6} {row['body_kb']:>8}" if name == "hook" else f"{name:>22}"
                print(
                    f"{lead} {row[f'{name}_p50_ms']:>7.2f}ms {row[f'{name}_p99_ms']:>7.2f}ms "
                    f"{row['floor_p50_ms']:>7.2f}ms {row['floor_p99_ms']:>7.2f}ms {row[f'{name}_p50_ratio']:>6.2f} "
                    f"{row[f'{name}_p99_over_floor_p50']:>8.2f} {row[f'{name}_ms_per_1k_resources']:>9.2f} "
                    f"{'—' if marginal is None else f'{marginal:.2f}':>8} {row[f'{name}_cpu_ms_per_call']:>7.2f} "
                    f"{row['floor_cpu_ms_per_call']:>7.2f} {row[f'{name}_rss_peak_mb']:>7.1f} "
                    f"{machine['other_cores']:>6.2f}  {','.join(topics[name]) or '-'}",
                    flush=True,
                )
        print(
            "obs/res: Observations / all resources in the prefetch; p50 ×: hook p50 ÷ floor p50; p99/fp50:"
            " hook p99 ÷ floor p50; ms/1k res: hook p50 per 1000 resources; marg/1k: (hook p50 − the"
            f" {rows[0]['observations']}-Observation p50) per 1000 more resources; cpu ms / fl cpu: server"
            " CPU per call, hook / floor; RSS MB: the worker's peak RSS while serving that size"
            + ("" if peak_resettable else " (peak since start: clear_refs not allowed)")
            + "; other: cores other processes used meanwhile"
            + (
                "; base: the same figures for the --baseline tree, called in the same rotation"
                if args.baseline
                else ""
            )
            + "; guarded: the floor with the obligations only (client JWT verified, replay check,"
            " JSON limits; bench/floor_app.py --guarded), called in the same rotation"
        )
        print(
            "what the obligations cost (guarded ÷ floor) and what the service's own work costs (÷ guarded), p50:"
        )
        for row in rows:
            shares = "".join(
                f"; {name} ÷ guarded {row[f'{name}_p50_over_guarded_p50']:.2f}"
                f" (p99 ÷ guarded p50 {row[f'{name}_p99_over_guarded_p50']:.2f})"
                for name in ("hook", "base")
                if f"{name}_p50_over_guarded_p50" in row
            )
            print(
                f"  {row['observations']:>6} Observations: guarded ÷ floor {row['guarded_p50_ratio']:.2f}{shares}"
            )
        for row in rows:
            print(f"  {row['observations']:>6} Observations: {machine_line(row['machine'])}")
        print(
            f"service RSS after the run: {rows[-1]['rss_mb']} MB; floor worker "
            f"{round(memory_kb(floor.workers[0]).get('VmRSS', 0) / 1024, 1)} MB"
        )
        if RECONNECTS:
            print(f"calls sent again on a new connection (keep-alive closed by the server): {RECONNECTS}")
        print("targets: p50 × ≤ 2.0 and p99/fp50 ≤ 3 at every size; 10,000 Observations p99 ≤ 250 ms")
    finally:
        for server in servers.values():
            server.stop()
    return {
        "sizes": rows,
        "client_jwt": args.alg,
        "limits": LIMITS,
        "baseline": str(args.baseline or ""),
        "reconnects": dict(RECONNECTS),
    }


# -- throughput ----------------------------------------------------------------------------------


def _by_pattern(bodies: list[Body]) -> dict[str, list[Body]]:
    grouped: dict[str, list[Body]] = {}
    for body in bodies:
        grouped.setdefault(body.pattern, []).append(body)
    return grouped


def _loop(
    server: Server, args: argparse.Namespace, bodies: dict[str, list[Body]], stats: Stats, supply: Tokens, *,
    seconds: float, measured: bool, ramp: float = 0.0,
) -> None:  # fmt: skip
    asyncio.run(
        closed_loop(
            server.port, args.clients, seconds, bodies, stats, supply,
            measured=measured, lifetime=args.lifetime, ramp=ramp,
        )
    )  # fmt: skip


def _summary(stats: Stats, seconds: float) -> dict[str, Any]:
    return {
        "calls": len(stats.latencies),
        "per_s": round(len(stats.latencies) / seconds, 1) if seconds else 0.0,
        "p50_ms": ms(percentile(stats.latencies, 0.5)),
        "p99_ms": ms(percentile(stats.latencies, 0.99)),
        "errors": {
            "transport": stats.transport_errors,
            "non_200": sum(n for status, n in stats.statuses.items() if status != 200),
            "wrong_cards": sum(stats.wrong_cards.values()),
        },
    }


def run_throughput(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    compare = f"; baseline {args.baseline} (database {args.database}_base)" if args.baseline else ""
    print(
        f"\n== throughput: {args.workers} workers each, closed loop of {args.clients} connections, "
        f"service with PostgreSQL audit (database {args.database}) vs the floor{compare}",
        flush=True,
    )
    if not database.reachable(args.pg):
        print("skipped: PostgreSQL is not reachable on 127.0.0.1:5432")
        return {"skipped": "PostgreSQL not reachable"}
    bodies = build_bodies(patients_per_pattern=4 if args.quick else 20)
    by_pattern = _by_pattern(bodies)
    trees = {"service": (ROOT, args.database)}
    if args.baseline:
        trees["baseline"] = (args.baseline, f"{args.database}_base")
    calls = int(args.max_rate * (args.duration + args.throughput_warmup))
    servers: dict[str, Server] = {}
    supplies: dict[str, Tokens] = {}
    stats: dict[str, Stats] = {}
    report: dict[str, Any] = {}
    issuer_keys: dict[str, Path] = {}  # each tree's issuer folder; the guarded floor trusts the service's
    try:
        for name, (root, database_name) in trees.items():
            url = database.create(args.pg, database_name)
            extra = {"CALF_CDS_DATABASE_URL": url}
            servers[name], keys, audience = _start_pair(args, folder, name, root, extra, args.workers)
            issuer_keys[name] = keys
            started = time.perf_counter()
            supplies[name] = Tokens(
                tokens.mint(args.alg, keys, audience, calls, TOKEN_LIFETIME),
                functools.partial(_one_token, args.alg, keys, audience),
            )
            print(
                f"{name}: signed {calls} {args.alg} client JWTs in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            stats[name] = Stats(expected=expected_topics())
        servers["floor"] = start_floor(folder, workers=args.workers)
        supplies["floor"] = Tokens([], lambda: "not-checked-by-the-floor")
        stats["floor"] = Stats(expected=dict.fromkeys(PATTERNS, ()))
        # the floor with the obligations only, the service's default limits; its replay file is one
        # per worker (cheaper than a store the workers share: this floor stays a lower bound)
        guard = GuardSettings(tokens.issuers_file(issuer_keys["service"]), HOOK_PATH, DEFAULT_MAX_ITEMS)
        guarded = servers["guarded"] = start_floor(folder, workers=args.workers, guard=guard)
        guarded_audience = guarded.base_url + HOOK_PATH
        supplies["guarded"] = Tokens(
            tokens.mint(args.alg, issuer_keys["service"], guarded_audience, calls, TOKEN_LIFETIME),
            functools.partial(_one_token, args.alg, issuer_keys["service"], guarded_audience),
        )
        stats["guarded"] = Stats(expected=dict.fromkeys(PATTERNS, ()))
        for name, server in servers.items():
            _loop(server, args, by_pattern, stats[name], supplies[name], seconds=args.throughput_warmup,
                  measured=False, ramp=args.throughput_warmup / 2)  # fmt: skip
        window = Window([pid for server in servers.values() for pid in server.all_pids()])
        postgres = {
            name: database.backends(args.pg, database_name) for name, (_, database_name) in trees.items()
        }
        seconds = dict.fromkeys(servers, 0.0)
        cpu = dict.fromkeys(servers, 0.0)
        cpu_postgres = dict.fromkeys(trees, 0.0)
        segment = args.duration / args.segments
        names = list(servers)
        for number in range(args.segments):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                server = servers[name]
                own_postgres = postgres.get(name, [])
                before = (cpu_seconds(server.all_pids()), cpu_seconds(own_postgres), time.perf_counter())
                _loop(server, args, by_pattern, stats[name], supplies[name], seconds=segment, measured=True)
                seconds[name] += time.perf_counter() - before[2]
                cpu[name] += cpu_seconds(server.all_pids()) - before[0]
                if name in cpu_postgres:
                    cpu_postgres[name] += cpu_seconds(own_postgres) - before[1]
        machine = window.close()
        results = {name: _summary(stats[name], seconds[name]) for name in servers}
        for name in servers:
            results[name]["server_cores"] = round(cpu[name] / seconds[name], 2)
        for name, (_, database_name) in trees.items():
            results[name]["postgres_cores"] = round(cpu_postgres[name] / seconds[name], 2)
            results[name]["audit"] = _audit_check(args, database_name, servers[name], stats[name])
            results[name]["tokens_signed_during_run"] = supplies[name].signed_during_run
        for name in servers.keys() - {"floor"}:
            results[name]["ratio"] = (
                round(results[name]["per_s"] / results["floor"]["per_s"], 2)
                if results["floor"]["per_s"]
                else None
            )
        report = {
            "workers": args.workers,
            "clients": args.clients,
            "seconds_each": round(seconds["service"], 1),
            **results,
            "ratio": results["service"]["ratio"],
            "audit": results["service"]["audit"],
            "machine": machine,
            "body_kb": round(sum(len(b.template) for b in bodies) / len(bodies) / 1000, 1),
        }
        print(f"{'':>8} {'calls/s':>8} {'calls':>7} {'p50':>9} {'p99':>9} {'cores':>6} {'÷ floor':>8}  errors (transport/non-200/wrong cards)")  # fmt: skip
        for name in servers:
            r = results[name]
            e = r["errors"]
            print(
                f"{name:>8} {r['per_s']:>8.1f} {r['calls']:>7} {r['p50_ms']:>7.2f}ms {r['p99_ms']:>7.2f}ms "
                f"{r['server_cores']:>6.2f} {r.get('ratio') or '':>8}  {e['transport']}/{e['non_200']}/{e['wrong_cards']}"
            )
        print(f"ratio    service ÷ floor calls/s = {report['ratio']} (target ≥ 0.5)")
        if results["guarded"]["per_s"]:
            print(
                f"ratio    guarded ÷ floor calls/s = {results['guarded']['ratio']} (the obligations alone: client JWT,"
                f" replay, JSON limits); service ÷ guarded = "
                f"{round(results['service']['per_s'] / results['guarded']['per_s'], 2)}"
            )
        for name in trees:
            audit = results[name]["audit"]
            equal = audit["rows_after_sigterm"] == audit["calls_answered_incl_warmup"]
            print(
                f"audit    {name}: {audit['rows_after_flush']} rows for {audit['calls_answered_incl_warmup']} calls "
                f"answered (after {audit['flush_wait_s']} s); {audit['rows_after_sigterm']} after SIGTERM (exit "
                f"{audit['server_exit_code']}): {'equal' if equal else 'NOT EQUAL'}; PostgreSQL "
                f"{results[name]['postgres_cores']} cores while it ran"
            )
        print(
            f"bodies   ~{report['body_kb']} kB (bench/workload.py: ~100 Observations, ~20 Conditions, 5 patterns)"
        )
        print(f"machine  {machine_line(machine)}")
    finally:
        for server in servers.values():
            server.stop()
        if not args.keep_db:
            for _, database_name in trees.values():
                database.drop(args.pg, database_name)
    return report


def _one_token(algorithm: str, keys: Path, audience: str) -> str:
    return tokens.mint(algorithm, keys, audience, 1, TOKEN_LIFETIME)[0]


def _audit_check(
    args: argparse.Namespace, database_name: str, server: Server, stats: Stats
) -> dict[str, Any]:
    """Audit rows against calls answered: once the writer has flushed, and after a graceful stop."""
    flush_started = time.monotonic()
    rows = database.audit_rows(args.pg, database_name)
    while rows < stats.answered and time.monotonic() - flush_started < 30:
        time.sleep(0.2)
        rows = database.audit_rows(args.pg, database_name)
    flushed_in = time.monotonic() - flush_started
    exit_code = server.stop()
    return {
        "calls_answered_incl_warmup": stats.answered,
        "rows_after_flush": rows,
        "flush_wait_s": round(flushed_in, 2),
        "rows_after_sigterm": database.audit_rows(args.pg, database_name),
        "server_exit_code": exit_code,
    }


# -- soak ----------------------------------------------------------------------------------------


class RssSampler:
    """Every ``interval`` seconds: the RSS of each worker and the calls answered so far."""

    def __init__(self, pids: list[int], interval: float, answered: Callable[[], int]) -> None:
        self.pids, self.interval, self.answered = pids, interval, answered
        self.samples: list[tuple[float, list[int], int]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def _sample(self) -> None:
        rss = [memory_kb(pid).get("VmRSS", 0) for pid in self.pids]
        self.samples.append((time.monotonic() - self.started, rss, self.answered()))

    def _run(self) -> None:
        self._sample()
        while not self.done.wait(self.interval):
            self._sample()
        self._sample()

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return 0.0
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


def run_soak(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    minutes = args.soak
    print(
        f"\n== soak: {args.soak_workers} worker(s), SQLite audit, {args.soak_rate:g} calls/s (open loop, "
        f"the realistic mix) for {minutes:g} min; RSS every {args.soak_interval:g} s",
        flush=True,
    )
    port = free_port()
    audience = f"http://127.0.0.1:{port}{HOOK_PATH}"
    keys = folder / "keys-soak"
    env = tokens.prepare_issuer(args.alg, keys, f"http://127.0.0.1:{port}")
    env |= {"CALF_CDS_DATA_DIR": str(folder / "data-soak")}
    seconds = minutes * 60
    calls = int(args.soak_rate * seconds * 1.02) + 10
    supply = Tokens(
        tokens.mint(args.alg, keys, audience, calls, TOKEN_LIFETIME),
        lambda: tokens.mint(args.alg, keys, audience, 1, TOKEN_LIFETIME)[0],
    )
    by_pattern = _by_pattern(build_bodies(patients_per_pattern=4 if args.quick else 20))
    service = start_service_on(port, env, folder, workers=args.soak_workers)
    stats = Stats(expected=expected_topics())
    try:
        window = Window(service.all_pids())
        with RssSampler(service.workers, args.soak_interval, lambda: stats.answered) as sampler:
            asyncio.run(
                open_loop(port, 8, seconds, args.soak_rate, by_pattern, stats, supply, lifetime=args.lifetime)
            )
        machine = window.close()
    finally:
        service.stop()
    samples = sampler.samples
    print(f"{'min':>6} {'calls':>8}  RSS MB per worker")
    step = max(1, len(samples) // 20)
    for at, rss, answered in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        print(f"{at / 60:>6.2f} {answered:>8}  {' '.join(f'{kb / 1024:7.1f}' for kb in rss)}")
    growth = []
    settled = [s for s in samples if s[0] >= seconds * 0.2] or samples
    for index, pid in enumerate(service.workers):
        first, last = settled[0][1][index], samples[-1][1][index]
        half = [(at / 60, rss[index] / 1024) for at, rss, _ in samples if at >= seconds / 2]
        growth.append(
            {
                "pid": pid,
                "rss_start_mb": round(samples[0][1][index] / 1024, 1),
                "rss_settled_mb": round(first / 1024, 1),
                "rss_end_mb": round(last / 1024, 1),
                "rss_max_mb": round(max(s[1][index] for s in samples) / 1024, 1),
                "slope_second_half_mb_per_min": round(_slope(half), 3),
            }
        )
    summary = _summary(stats, seconds)
    for worker in growth:
        print(
            f"worker {worker['pid']}: {worker['rss_start_mb']} MB at the start, {worker['rss_settled_mb']} MB after "
            f"the first fifth, {worker['rss_end_mb']} MB at the end (max {worker['rss_max_mb']}); second half "
            f"{worker['slope_second_half_mb_per_min']:+.3f} MB/min"
        )
    errors = summary["errors"]
    print(
        f"calls {summary['calls']} ({summary['per_s']}/s), p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
        f"errors {errors['transport']}/{errors['non_200']}/{errors['wrong_cards']}"
    )
    print(f"machine  {machine_line(machine)}")
    return {
        "minutes": minutes,
        "rate": args.soak_rate,
        "workers": growth,
        "calls": summary,
        "machine": machine,
    }


# -- the command line ----------------------------------------------------------------------------


def run_cli(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    print(f"\n== CLI start-up: wall time of {args.cli_runs} runs each (after one unmeasured run)", flush=True)
    from service.auth.dev_issuer import DevIssuer  # `calf-cds token` signs with the development issuer

    data = folder / "data-cli"
    DevIssuer.load_or_create(data)
    executable = shutil.which("calf-cds", path=str(Path(sys.executable).parent)) or "calf-cds"
    commands = {
        "calf-cds --help": [executable, "--help"],
        "calf-cds token": [executable, "token", "--aud", "http://127.0.0.1:8080/cds-services/calf-pain",
                           "--data-dir", str(data)],
    }  # fmt: skip
    results: dict[str, Any] = {}
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    for name, command in commands.items():
        times = []
        for number in range(args.cli_runs + 1):
            started = time.perf_counter()
            subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
            if number:
                times.append(time.perf_counter() - started)
        results[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                         "max_s": round(max(times), 3)}  # fmt: skip
        print(f"{name:<16} median {results[name]['median_s']:.3f} s  (min {results[name]['min_s']:.3f}, "
              f"max {results[name]['max_s']:.3f}); target < 0.3 s")  # fmt: skip
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}")
    return results


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--modes",
        default="latency,throughput,cli",
        help="comma-separated: latency, throughput, cli, soak (default latency,throughput,cli)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run: sizes 10 and 100, few calls, 3 s of throughput, 0.2 min soak",
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        default=None,
        help="Observations per chart (default 10,100,1000,10000)",
    )
    parser.add_argument(
        "--requests", type=int, default=300, help="timed calls per size up to 1000 (default 300)"
    )
    parser.add_argument(
        "--big-requests", type=int, default=150, help="timed calls per larger size (default 150)"
    )
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured rounds per size (default 20)")
    parser.add_argument(
        "--alg", choices=tokens.ALGORITHMS, default="ES384", help="client JWT (default ES384)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="throughput: workers of each server (default 2)"
    )
    parser.add_argument("--clients", type=int, default=32, help="throughput: connections (default 32)")
    parser.add_argument(
        "--duration", type=float, default=60, help="throughput: measured seconds each (default 60)"
    )
    parser.add_argument(
        "--segments", type=int, default=4, help="throughput: alternating segments (default 4)"
    )
    parser.add_argument("--throughput-warmup", type=float, default=5, help="throughput: warm-up seconds")
    parser.add_argument("--max-rate", type=float, default=800, help="throughput: calls/s to sign JWTs for")
    parser.add_argument(
        "--lifetime", type=int, default=100, help="calls per connection before it is reopened"
    )
    parser.add_argument("--pg", default=database.ADMIN, help="PostgreSQL admin connection")
    parser.add_argument(
        "--database", default=DATABASE, help=f"throughput: database to create and drop ({DATABASE})"
    )
    parser.add_argument("--keep-db", action="store_true", help="throughput: keep the database")
    parser.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="MINUTES",
        help="also run the soak for MINUTES (the issue's run: 10)",
    )
    parser.add_argument("--soak-rate", type=float, default=25, help="soak: calls per second (default 25)")
    parser.add_argument("--soak-interval", type=float, default=15, help="soak: seconds between RSS samples")
    parser.add_argument("--soak-workers", type=int, default=1, help="soak: worker processes (default 1)")
    parser.add_argument("--cli-runs", type=int, default=10, help="cli: runs of each command (default 10)")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="another source tree (e.g. `git archive main | tar -x -C DIR`) whose service is called in the "
        "same rotation, for before/after figures under the same load (latency and throughput)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    args = parser.parse_args(argv)  # fmt: skip
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.soak is not None and "soak" not in args.modes:
        args.modes.append("soak")
    unknown = set(args.modes) - {"latency", "throughput", "cli", "soak"}
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    if args.quick:
        args.sizes = args.sizes or QUICK_SIZES
        args.requests, args.big_requests, args.warmup = min(args.requests, 20), min(args.big_requests, 5), 3
        args.duration, args.segments, args.throughput_warmup = min(args.duration, 3), 2, 1
        args.clients, args.max_rate, args.cli_runs = min(args.clients, 4), min(args.max_rate, 300), 2
        args.soak_interval = min(args.soak_interval, 2)
        args.soak_rate = min(args.soak_rate, 20)
        if "soak" in args.modes and args.soak is None:
            args.soak = 0.2
    args.sizes = args.sizes or SIZES
    if "soak" in args.modes and args.soak is None:
        args.soak = 10.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="calf-hook-speed-"))
    print(
        f"hook_speed: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}, python {sys.version.split()[0]}, "
        f"git {_git_head()}, modes {','.join(args.modes)}{' (quick)' if args.quick else ''}",
        flush=True,
    )
    report: dict[str, Any] = {"modes": args.modes, "quick": args.quick, "git": _git_head()}
    runners = {"latency": run_latency, "throughput": run_throughput, "soak": run_soak, "cli": run_cli}
    try:
        for mode in ("latency", "throughput", "soak", "cli"):
            if mode in args.modes:
                report[mode] = runners[mode](args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    failed = report.get("throughput", {}).get("service", {}).get("errors", {})
    return 1 if any(failed.values()) else 0


def _git_head() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "?"
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
