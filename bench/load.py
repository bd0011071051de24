"""Load benchmark: the real service, many concurrent clients over loopback, audit to PostgreSQL.

    python bench/load.py [--workers 2] [--clients 32] [--duration 30] [--rate 300] [--profile DIR]

1. Creates a fresh database ``calfcds_bench`` on the PostgreSQL at 127.0.0.1:5432 (``--pg``) and its
   audit tables; drops it at the end (``--keep-db`` keeps it).
2. Starts ``calf-cds serve --workers N`` on a free loopback port with audit to that database and the
   production log level (one JSON line per call, to a file).
3. Warms up, then drives ``/cds-services/calf-pain`` for ``--duration`` seconds with bodies from
   ``bench/workload.py`` (~100 Observations and ~20 Conditions per chart; a mix of calf-pain patterns).
   Closed loop by default: ``--clients`` connections, each sending its next call when the last is
   answered (finds the maximum throughput). With ``--rate R`` the load is open: R calls per second
   on a fixed schedule, latency counted from the scheduled send time, so a server that falls
   behind shows it in its latency (no coordinated omission).
4. Reports throughput, p50/p95/p99/max latency, errors (transport, non-200, and cards that differ
   from the pattern's expected topics), CPU used by the server, by PostgreSQL and by the load
   generator itself, and audit rows in the database against calls answered, once the writer
   has flushed and again after a graceful shutdown (SIGTERM).

The load generator runs on the same machine and takes CPU from the server: its share is in the
report. It speaks HTTP/1.1 over asyncio streams itself (``bench/traffic.py``) and signs the client
JWTs before the run (``bench/tokens.py``), to cost as little CPU per call as it can while it
measures; ``bench/cpu.py`` accounts for the CPU. ``--profile DIR`` samples the workers with py-spy during the
measured window (``uv run --frozen --group bench python bench/load.py --profile DIR``) and prints where the
time goes (``bench/stacks.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import database, tokens
from bench.cpu import CpuSampler, by_contention, cpu_seconds, generator_cpu, machine_busy
from bench.servers import free_port, start_service_on
from bench.stacks import summarize
from bench.traffic import HOOK_PATH, Stats, Tokens, closed_loop, open_loop, percentile
from bench.workload import Body, build_bodies, expected_topics

DATABASE = "calfcds_bench"


# -- the servers and the database: bench/servers.py, bench/database.py ----------------------------


def start_profilers(
    args: argparse.Namespace, pids: list[int], seconds: float
) -> list[subprocess.Popen[bytes]]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit(
            "--profile needs py-spy: uv run --frozen --group bench python bench/load.py --profile DIR"
        )
    args.profile.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250", "--gil",
             "--format", "raw", "--nonblocking", "--output", str(args.profile / f"worker-{pid}.folded")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]  # fmt: skip


# -- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    bodies = build_bodies()
    by_pattern: dict[str, list[Body]] = {}
    for body in bodies:
        by_pattern.setdefault(body.pattern, []).append(body)
    folder = Path(tempfile.mkdtemp(prefix="calf-load-"))
    url = database.create(args.pg, DATABASE)
    port = free_port()
    audience = f"http://127.0.0.1:{port}{HOOK_PATH}"
    keys = folder / "keys"
    trust = tokens.prepare_issuer(args.alg, keys, f"http://127.0.0.1:{port}")
    calls = int((args.rate or args.max_rate) * args.duration + args.max_rate * args.warmup)
    lifetime = min(3600, int(args.warmup + args.duration) + 900)
    minting = time.perf_counter()
    supply = Tokens(
        tokens.mint(args.alg, keys, audience, calls, lifetime),
        lambda: tokens.mint(args.alg, keys, audience, 1, lifetime)[0],
    )
    print(
        f"signed {calls} {args.alg} client tokens in {time.perf_counter() - minting:.1f} s", file=sys.stderr
    )
    env = trust | {"CALF_CDS_DATABASE_URL": url, "CALF_CDS_DATA_DIR": str(folder / "data")}
    service = start_service_on(port, env, folder, workers=args.workers, log_level=args.log_level)
    server, workers = service.process, service.workers
    stats = Stats(expected=expected_topics())
    report: dict[str, Any] = {}
    try:
        asyncio.run(
            closed_loop(
                port,
                args.clients,
                args.warmup,
                by_pattern,
                stats,
                supply,
                measured=False,
                lifetime=args.lifetime,
                ramp=args.warmup / 2,
            )
        )
        backends = database.backends(args.pg, DATABASE)
        profilers = start_profilers(args, workers, args.duration) if args.profile else []
        per_worker = [cpu_seconds([pid]) for pid in workers]
        before = (cpu_seconds([server.pid, *workers]), cpu_seconds(backends), generator_cpu(), machine_busy())
        started = time.perf_counter()
        sampler = CpuSampler([server.pid, *workers], backends).__enter__()
        if args.rate:
            asyncio.run(
                open_loop(
                    port,
                    args.clients,
                    args.duration,
                    args.rate,
                    by_pattern,
                    stats,
                    supply,
                    lifetime=args.lifetime,
                )
            )
        else:
            asyncio.run(
                closed_loop(
                    port,
                    args.clients,
                    args.duration,
                    by_pattern,
                    stats,
                    supply,
                    measured=True,
                    lifetime=args.lifetime,
                )
            )
        elapsed = time.perf_counter() - started
        sampler.__exit__()
        after = (cpu_seconds([server.pid, *workers]), cpu_seconds(backends), generator_cpu(), machine_busy())
        per_worker = [
            round((cpu_seconds([pid]) - spent) / elapsed, 2)
            for pid, spent in zip(workers, per_worker, strict=True)
        ]
        for profiler in profilers:
            profiler.wait(timeout=60)
        flush_started = time.monotonic()
        rows = database.audit_rows(args.pg, DATABASE)
        while rows < stats.answered and time.monotonic() - flush_started < 30:
            time.sleep(0.1)
            rows = database.audit_rows(args.pg, DATABASE)
        flushed_in = time.monotonic() - flush_started
        exit_code = service.stop()
        rows_after_stop = database.audit_rows(args.pg, DATABASE)
        measured = len(stats.latencies)
        busy, total = after[3][0] - before[3][0], after[3][1] - before[3][1]
        report = {
            "workers": args.workers,
            "clients": args.clients,
            "mode": f"open loop at {args.rate:g}/s" if args.rate else "closed loop",
            "duration_s": round(elapsed, 1),
            "calls": measured,
            "throughput_per_s": round(measured / elapsed, 1),
            "latency_ms": {
                name: round(percentile(stats.latencies, q) * 1000, 1)
                for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            },
            "errors": {
                "transport": stats.transport_errors,
                "non_200": sum(n for status, n in stats.statuses.items() if status != 200),
                "wrong_cards": sum(stats.wrong_cards.values()),
            },
            "patterns": dict(stats.patterns),
            "latency_by_contention": by_contention(sampler, stats),
            "cpu_cores": {
                "server": round((after[0] - before[0]) / elapsed, 2),
                "per_worker": per_worker,
                "postgres_backends": round((after[1] - before[1]) / elapsed, 2),
                "load_generator": round((after[2] - before[2]) / elapsed, 2),
                "other_processes": round(
                    (busy - sum(after[i] - before[i] for i in range(3))) / elapsed,
                    2,  # type: ignore[operator]
                ),
                "machine_busy_share": round(busy / total, 3) if total else None,
                "machine_cores": os.cpu_count(),
            },
            "audit": {
                "calls_answered_incl_warmup": stats.answered,
                "rows_after_flush": rows,
                "flush_wait_s": round(flushed_in, 2),
                "rows_after_sigterm": rows_after_stop,
                "server_exit_code": exit_code,
            },
            "body_kb": round(sum(len(b.template) for b in bodies) / len(bodies) / 1000, 1),
            "client_jwt": args.alg,
            "tokens_signed_during_run": supply.signed_during_run,
        }
        if args.profile:
            report["profile"] = summarize(sorted(args.profile.glob("worker-*.folded")))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if not args.keep_db:
            database.drop(args.pg, DATABASE)
        shutil.rmtree(folder, ignore_errors=True)
    return report


def print_report(report: dict[str, Any]) -> None:
    latency, errors, audit, cpu = report["latency_ms"], report["errors"], report["audit"], report["cpu_cores"]
    print(
        f"workers {report['workers']}, {report['clients']} connections, {report['mode']}, "
        f"{report['duration_s']} s, bodies ~{report['body_kb']} kB, {report['client_jwt']} client JWTs"
        f" ({report['tokens_signed_during_run']} signed during the run)"
    )
    print(f"throughput   {report['throughput_per_s']} calls/s ({report['calls']} calls)")
    print(
        f"latency      p50 {latency['p50']} ms   p95 {latency['p95']} ms   p99 {latency['p99']} ms   "
        f"max {latency['max']} ms"
    )
    print(
        f"errors       transport {errors['transport']}   non-200 {errors['non_200']}   "
        f"wrong cards {errors['wrong_cards']}"
    )
    print(
        f"audit        {audit['rows_after_flush']} rows for {audit['calls_answered_incl_warmup']} answered calls "
        f"(after {audit['flush_wait_s']} s); {audit['rows_after_sigterm']} after SIGTERM "
        f"(exit {audit['server_exit_code']})"
    )
    print(
        f"cpu (cores)  server {cpu['server']} {cpu['per_worker']}   postgres {cpu['postgres_backends']}   "
        f"load generator {cpu['load_generator']}   other processes {cpu['other_processes']}   machine busy {cpu['machine_busy_share']:.0%} "
        f"of {cpu['machine_cores']} cores"
    )
    print(f"patterns     {report['patterns']}")
    print("latency by the CPU everything else on the machine used (one-second windows):")
    for row in report["latency_by_contention"]:
        print(
            f"  other {row['other_cores']:>8} cores: {row['seconds']:>4} s, {row['calls']:>6} calls, "
            f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
        )
    if "profile" in report:
        print(report["profile"]["text"])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--duration", type=float, default=30, help="measured seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds first (default 5)")
    parser.add_argument("--rate", type=float, default=None, help="open loop: calls per second")
    parser.add_argument(
        "--lifetime", type=int, default=100, help="calls per connection before it is reopened (default 100)"
    )
    parser.add_argument("--log-level", default="INFO", help="the server's log level (default INFO)")
    parser.add_argument(
        "--alg", choices=tokens.ALGORITHMS, default="ES384", help="client JWT algorithm (default ES384)"
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=1000,
        help="calls per second to sign tokens for, in a closed loop and the warm-up (default 1000)",
    )
    parser.add_argument("--pg", default=database.ADMIN, help="admin connection")
    parser.add_argument("--keep-db", action="store_true", help=f"keep the {DATABASE} database")
    parser.add_argument("--profile", type=Path, default=None, help="folder for py-spy samples of the workers")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args()
    report = run(args)
    print_report(report)
    if args.json:
        report.pop("profile", None)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not any(report["errors"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
