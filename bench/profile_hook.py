"""Where a hook call's time goes, in process: the app of ``calf-cds serve`` driven over ASGI directly.

    uv run --frozen --group bench python -m bench.profile_hook [--sizes 100,1000] [--calls 300]

The app is built as each ``calf-cds serve`` worker builds it (``create_app``, the collector tuned
after start-up, uvloop, JSON log lines at INFO to a file), with client authentication on (an ES384
issuer from a trusted-issuer file, a fresh JWT per call signed beforehand) and the SQLite audit
trail; the bodies are those of ``bench/hook_speed.py`` (real Observations and Conditions plus a DVT
case's findings). The HTTP server itself (uvicorn, httptools) is left out: the floor pays for it too.

For each size, three passes over the same calls:

1. no instrument: the process's CPU per call (every thread: the audit writer and the replay
   check's worker thread included), wall time per call, and the cyclic collector's time
   (``gc.callbacks``);
2. stage timers: the functions that do each stage of a call (``STAGES``, named as on the restructured service (issue 14))
   wrapped with timers: CPU of the calling thread for plain functions, wall time for coroutines
   (which includes what other threads took meanwhile);
3. with ``--py-spy``: py-spy samples whichever thread holds the GIL (1000 Hz); each sample is
   charged to the deepest project function on its stack (``bench/stacks.py``: library code to the
   project function that called it), giving the top functions; ms ≈ share × CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import tokens
from bench.hook_speed import LIMITS
from bench.stacks import summarize
from bench.workload import Body, sized_body

BASE = "http://bench.calf-cds.test"
PATH = "/cds-services/calf-pain"

# (label, module, attribute): the function that does a stage of a call, patched where it is
# looked up (a class attribute, or the name in the module that calls it). Current main's layout.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("whole request: middleware → route → response", "service.http.middleware", "RequestObserver.__call__"),
    ("client JWT: JwtVerifier.verify", "service.auth.verifier", "JwtVerifier.verify"),
    ("  JWT read + header checks: _header (main: parse #1)", "service.auth.verifier", "JwtVerifier._header"),
    (
        "  JWT claims, iss: _unverified_issuer (main: parse #2)",
        "service.auth.verifier",
        "JwtVerifier._unverified_issuer",
    ),
    ("  JWT key: KeyStore.get_key", "service.auth.caches", "KeyStore.get_key"),
    (
        "  JWT ES384 signature + claims: _decode (main: parse #3)",
        "service.auth.verifier",
        "JwtVerifier._decode",
    ),
    (
        "  replay check: await (thread hop included)",
        "service.auth.caches",
        "LayeredReplayCache.check_and_store",
    ),
    (
        "    replay check: SQLite statement, own connection (a try)",
        "service.auth.caches",
        "SqlReplayCache._upsert_sqlite",
    ),
    (
        "    replay check: SQLAlchemy statement (PostgreSQL thread)",
        "service.auth.caches",
        "SqlReplayCache._check_and_store",
    ),
    ("read the body", "service.http.routes.hooks", "read_body"),
    ("the front door: FrontDoor.answer", "service.hooks.pipeline", "FrontDoor.answer"),
    ("  parse the body: orjson.loads", "service.hooks.guards", "orjson.loads"),
    ("  JSON limits walk: check_json_limits", "service.hooks.guards", "check_json_limits"),
    ("  HookRequest.model_validate (pydantic)", "cds_hooks.models", "HookRequest.model_validate"),
    (
        "  prefetch subject check: check_prefetch_subjects",
        "service.hooks.pipeline",
        "check_prefetch_subjects",
    ),
    ("  prefetch → resources: gather_patient_data", "service.hooks.pipeline", "gather_patient_data"),
    ("  mapper: HookKit.facts", "service.hooks.registry", "HookKit.facts"),
    ("  rules: evaluate", "service.hooks.registry", "evaluate"),
    ("  cards: build_cards", "service.hooks.registry", "build_cards"),
    ("  explanations kept: Explanations.keep", "service.hooks.explanation", "Explanations.keep"),
    ("  response: HookResponse.to_json", "cds_hooks.models", "HookResponse.to_json"),
    ("  response check: check_response", "service.hooks.pipeline", "check_response"),
    ("  audit record: CallDraft.record", "service.hooks.pipeline", "CallDraft.record"),
    ("response body: json_response (orjson.dumps)", "service.http.routes.hooks", "json_response"),
    ("audit record: CallRecord.to_json", "service.hooks.pipeline", "CallRecord.to_json"),
    ("audit: AuditWriter.submit", "service.store.writers", "AuditWriter.submit"),
    ("metrics: observe_hook_call", "service.ops.telemetry", "observe_hook_call"),
    ("audit writer thread: AuditWriter.write (batches)", "service.store.writers", "AuditWriter.write"),
    (
        "explanation writer thread: ExplanationStore.save (batches)",
        "service.store.writers",
        "ExplanationStore.save",
    ),
)


# -- the app -------------------------------------------------------------------------------------


def _settings(folder: Path) -> Any:
    from service.config import Settings

    env = tokens.prepare_issuer("ES384", folder / "keys", BASE)
    return Settings(
        data_dir=folder / "data",
        trusted_issuers_file=Path(env["CALF_CDS_TRUSTED_ISSUERS_FILE"]),
        public_base_url=BASE,
        max_body_bytes=int(LIMITS["CALF_CDS_MAX_BODY_BYTES"]),
        max_array_length=int(LIMITS["CALF_CDS_MAX_ARRAY_LENGTH"]),
        log_level="INFO",
    )


def _log_as_served(folder: Path) -> None:
    """The JSON log lines of ``calf-cds serve`` (one per request at INFO), written to a file."""
    import logging.config

    from service.ops.telemetry import log_config

    config = log_config("INFO", "0" * 64)
    handler = dict(config["handlers"]["stderr"], filename=str(folder / "log.jsonl"))
    handler["class"] = "logging.FileHandler"
    handler.pop("stream", None)
    config["handlers"]["stderr"] = handler
    logging.config.dictConfig(config)


class Lifespan:
    """Runs an ASGI app's lifespan: start-up on enter, shutdown on exit."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lifespan:
        async def send(message: dict[str, Any]) -> None:
            if message["type"].endswith(".failed"):
                raise RuntimeError(message.get("message"))
            if message["type"] == "lifespan.startup.complete":
                self.started.set()

        await self.queue.put({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        self.task = asyncio.create_task(self.app(scope, self.queue.get, send))
        await self.started.wait()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.queue.put({"type": "lifespan.shutdown"})
        if self.task is not None:
            await self.task


async def post(app: Any, body: bytes, token: str) -> tuple[int, bytes]:
    """One POST to the hook over ASGI."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
        "headers": [
            (b"host", BASE.split("//")[1].encode()), (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()), (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def run_calls(app: Any, body: Body, supply: list[str], calls: int) -> None:
    for _ in range(calls):
        status, answer = await post(app, body.render(str(uuid.uuid4())), supply.pop())
        if status != 200:
            raise SystemExit(f"the hook answered {status}: {answer[:400]!r}")


# -- instruments ---------------------------------------------------------------------------------


class GcTimer:
    """Time spent in the cyclic collector (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1


class _Proxy:
    """A module whose attributes are another's, but for the ones set on the proxy."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class StageTimers:
    """Wraps each stage's function with a timer (see the module docstring); ``undo`` restores them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.kind: dict[str, str] = {}
        self._undo: list[Callable[[], None]] = []

    def install(self) -> None:
        for label, module_name, attribute in STAGES:
            try:
                self._install(label, module_name, attribute)
            except (AttributeError, ImportError):  # another tree's layout (--baseline): not timed
                print(f"stage not found, not timed: {module_name}:{attribute}", file=sys.stderr)

    def _install(self, label: str, module_name: str, attribute: str) -> None:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            value = getattr(owner, part)
            if inspect.ismodule(value):  # a module attribute (orjson.loads): patch a proxy of it
                proxy = _Proxy(value)
                setattr(owner, part, proxy)
                self._undo.append(functools.partial(setattr, owner, part, value))
                value = proxy
            owner = value
        if isinstance(owner, _Proxy):
            original = getattr(owner, name)  # the proxy itself is undone with its module
        else:
            original = inspect.getattr_static(owner, name)
            self._undo.append(functools.partial(setattr, owner, name, original))
        setattr(owner, name, self._wrap(label, original))

    def undo(self) -> None:
        for step in reversed(self._undo):
            step()
        self._undo.clear()

    def _wrap(self, label: str, original: Any) -> Any:
        binding = type(original) if isinstance(original, staticmethod | classmethod) else None
        function = original.__func__ if binding is not None else original
        seconds, calls = self.seconds, self.calls
        if inspect.iscoroutinefunction(function):
            self.kind[label] = "wall"

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await function(*args, **kwargs)
                finally:
                    seconds[label] += time.perf_counter() - started
                    calls[label] += 1

            wrapped: Any = timed_async
        else:
            self.kind[label] = "cpu"

            def timed(*args: Any, **kwargs: Any) -> Any:
                started = time.thread_time()
                try:
                    return function(*args, **kwargs)
                finally:
                    seconds[label] += time.thread_time() - started
                    calls[label] += 1

            wrapped = timed if inspect.isclass(function) else functools.wraps(function)(timed)
        return binding(wrapped) if binding is not None else wrapped


# -- one size ------------------------------------------------------------------------------------


def profile_size(size: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from service.app import create_app

    body, resources = sized_body(size)
    settings = _settings(folder)
    calls = args.calls if size <= 1000 else max(20, args.calls // 10)
    passes = 3 if args.py_spy else 2
    supply = tokens.mint("ES384", folder / "keys", BASE + PATH, passes * calls + 40, 3600)
    _log_as_served(folder)
    app = create_app(settings)
    app.state.tune_gc = True  # as app_from_env: gc.freeze() and a larger young generation after start-up
    result: dict[str, Any] = {"observations": size, "resources": resources, "calls": calls}

    async def main() -> None:
        async with Lifespan(app):
            if args.gc_threshold:  # an experiment: another young-generation threshold than tune_gc's
                gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
            await run_calls(app, body, supply, 40)  # warm-up
            timer = GcTimer()
            gc.callbacks.append(timer)
            cpu, wall = time.process_time(), time.perf_counter()
            await run_calls(app, body, supply, calls)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            await asyncio.sleep(0.2)  # the audit writer's last batch
            gc.callbacks.remove(timer)
            result.update(cpu_ms=cpu / calls * 1000, wall_ms=wall / calls * 1000)
            result.update(gc_ms=timer.seconds / calls * 1000, gc_collections=timer.collections)
            timers = StageTimers()
            timers.install()
            try:
                await run_calls(app, body, supply, calls)
                await asyncio.sleep(0.2)
            finally:
                timers.undo()
            result["stages"] = [
                (
                    label,
                    timers.kind.get(label, "?"),
                    timers.seconds[label] / calls * 1000,
                    timers.calls[label] / calls,
                )
                for label, _, _ in STAGES
            ]
            if args.py_spy:
                result["py_spy"] = await _sampled(app, body, supply, calls, folder, size)

    _run(main)
    result.update(_memory())
    _print(result, args.top)
    return result


def _memory() -> dict[str, float]:
    """This process's resident set now and at its peak (MB; the peak covers the sizes run before)."""
    status = Path("/proc/self/status")
    if not status.exists():  # pragma: no cover - Linux only
        return {}
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    return {
        name: int(fields[key].split()[0]) / 1024
        for name, key in (("rss_mb", "VmRSS"), ("peak_rss_mb", "VmHWM"))
    }


async def _sampled(app: Any, body: Body, supply: list[str], calls: int, folder: Path, size: int) -> Any:
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--py-spy needs py-spy: uv run --frozen --group bench python -m bench.profile_hook")
    output = folder / f"profile-{size}.folded"
    sampler = subprocess.Popen(
        [py_spy, "record", "--pid", str(os.getpid()), "--rate", "1000", "--format", "raw",
         "--gil", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(1.5)  # py-spy attaches
    await run_calls(app, body, supply, calls)
    await asyncio.sleep(0.2)
    sampler.send_signal(signal.SIGINT)
    sampler.wait(timeout=60)
    return summarize([output], top=30) if output.exists() else None


def _print(result: dict[str, Any], top: int) -> None:
    print(
        f"\n### {result['observations']} Observations ({result['resources']} resources), {result['calls']} calls",
        flush=True,
    )
    print(
        f"no instrument: {result['cpu_ms']:.2f} ms CPU per call (all threads), {result['wall_ms']:.2f} ms wall; "
        f"cyclic gc {result['gc_ms']:.3f} ms per call ({result['gc_collections']} collections)"
    )
    if "rss_mb" in result:
        print(f"memory: RSS {result['rss_mb']:.1f} MB after the passes, peak {result['peak_rss_mb']:.1f} MB")
    print("stage timers (cpu: the calling thread's CPU; wall: a coroutine's elapsed time):")
    for label, kind, milliseconds, count in result["stages"]:
        shown = f"{milliseconds:8.3f} ms {kind:<4}" if count else f"{'—':>11} {'':<4}"
        print(f"  {label:<54} {shown} {f'{count:g}×/call' if count else ''}")
    sampled = result.get("py_spy")
    if sampled:
        print(
            f"py-spy, the thread holding the GIL: {sampled['samples']} samples, charged as in bench/stacks.py "
            "(library code to the project function calling it); ms ≈ share × CPU per call"
        )
        for name, share in sampled["top"][:top]:
            print(f"  {share:6.1%}  ≈{share * result['cpu_ms']:6.2f} ms  {name}")


def _run(main: Callable[[], Awaitable[None]]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())  # type: ignore[arg-type]
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main())  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[100, 1000])
    parser.add_argument(
        "--calls", type=int, default=300, help="calls per pass and size up to 1000 (default 300)"
    )
    parser.add_argument("--top", type=int, default=15, help="functions listed from py-spy (default 15)")
    parser.add_argument("--py-spy", action="store_true", help="also sample with py-spy (bench group)")
    parser.add_argument(
        "--gc-threshold", type=int, default=0, help="young-generation threshold to try (default: tune_gc's)"
    )
    args = parser.parse_args()
    os.environ.pop("CALF_CDS_DEV", None)
    print(
        f"profile_hook: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}, python {sys.version.split()[0]}"
    )
    for size in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix="calf-profile-"))
        try:
            profile_size(size, args, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
