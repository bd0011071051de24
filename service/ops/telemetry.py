"""What the service tells its operators: structured log lines and Prometheus metrics.

Both are written on every request (the HTTP middleware logs the request and counts it; the hook
route counts the call), so they live together; neither carries patient data.

## Logs

One JSON object per line, carrying the request id of the call being served.

    {"ts": "2026-11-22T09:00:00.123Z", "level": "INFO", "logger": "calf_cds.http",
     "message": "request", "request_id": "…", "method": "POST", "endpoint": "/cds-services/calf-pain",
     "status": 200, "duration_ms": 4.1, "call_id": "…", "cards": 2}

What never goes in a log line: request bodies, header values (other than the request id), query
strings, and exception messages (which may quote the input); patient ids and tokens that a
message would carry are hashed or cut out by ``PrivacyFilter`` (below, under Logs), which every
handler runs. The audit store is where identifiable data lives; a log line links to it through
``call_id``. Exceptions are logged as their type and the code locations of their traceback.

The request id comes from the client's ``X-Request-ID`` header when it is a plain token (letters,
digits, ``._:-``, at most 128 characters), otherwise it is generated; it is echoed back in the
response's ``X-Request-ID`` header (see ``service.http.middleware``).

**No PHI and no secrets in log lines.** A log line may name a patient only by a keyed
hash (`pt-` + 12 hex digits of HMAC-SHA256), which links the lines about one patient without
revealing who it is. The key is `CALF_CDS_LOG_HASH_KEY`, or a random key per process.

`PrivacyFilter` is a `logging.Filter` for handlers. It rewrites each record's final message:

- `Patient/<id>` references (relative or absolute), `patient=<id>` / `patientId: <id>` pairs and a
  `patient_id` attribute given through `extra=` → the hash;
- compact JWS/JWTs (`eyJ….….…`), `Bearer <token>` and `access_token=<value>` → `[redacted]`.

`log_config` puts the filter on the one handler every log line goes through, the process's and
uvicorn's.

## Metrics

What the service counts, and the small API other modules call to count it.

Every metric is named ``calf_cds_*``. Other modules never touch a metric object; they call one of
the functions below, so names, labels and their cardinality are decided here, in one place:

    observe_request(endpoint, method, status, seconds)   the HTTP middleware, every request
    observe_hook_call(service, cards, rule_errors, pack)  the hook route, after each call
    observe_fetch(seconds, outcome)                       the FHIR fetch (``outcome`` "ok" or a reason)
    count_auth_rejection(reason)                          JWT verification (``AuthenticationError.reason``)
    count_fhir_server_refusal(reason)                     a ``fhirServer`` the service will not read
    observe_audit_queue(table, queued, spooled)           an audit writer's thread, every loop
    count_audit_records(table, written=, spooled=, dead_lettered=)   an audit writer, per batch
    set_audit_dead_letters(count)                         the readiness probe, from the database
    set_rule_packs(active, shadows)                       start-up

**Several worker processes.** ``calf-cds serve --workers N`` runs N processes; each counts its own
calls. prometheus-client's multiprocess mode keeps every process's values in memory-mapped files
in ``PROMETHEUS_MULTIPROC_DIR`` and adds them up when ``/metrics`` is scraped, whichever worker
answers. The variable must be set before ``prometheus_client`` is first imported in a process:
:func:`prepare_multiprocess_dir` does that in the parent (``calf-cds serve``) before it starts the
workers, which inherit it. With one worker the values live in the process.

"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import re
import secrets
import shutil
import traceback
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = [
    "AUDIT_DEAD_LETTERS",
    "AUDIT_QUEUE",
    "AUDIT_RECORDS",
    "AUDIT_SPOOL",
    "AUTH_REJECTIONS",
    "CARDS",
    "CONTENT_TYPE",
    "FETCH_FAILURES",
    "FETCH_SECONDS",
    "FHIR_SERVER_REFUSALS",
    "MULTIPROC_ENV",
    "REQUEST_SECONDS",
    "RULE_ERRORS",
    "RULE_PACK",
    "JsonFormatter",
    "PrivacyFilter",
    "count_audit_records",
    "count_auth_rejection",
    "count_fhir_server_refusal",
    "log_config",
    "multiprocess_dir",
    "observe_audit_queue",
    "observe_fetch",
    "observe_hook_call",
    "observe_request",
    "patient_hash",
    "prepare_multiprocess_dir",
    "process_stopping",
    "remove_multiprocess_dir",
    "render",
    "request_id_from",
    "request_id_var",
    "scrub",
    "set_audit_dead_letters",
    "set_rule_packs",
    "worker_gone",
]


# Logs

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Attributes every LogRecord has; anything else on a record came in through ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured duplicate of the message
}


def request_id_from(header: str | None) -> str:
    """The client's request id when it is a plain token, otherwise a fresh one."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def _stack(error: BaseException) -> list[str]:
    """Where an exception went, without its message: ``file:line in function`` per frame."""
    frames = traceback.extract_tb(error.__traceback__)
    return [f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} in {frame.name}" for frame in frames][-12:]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            event["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                event[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            event["exc_type"] = type(error).__name__
            event["stack"] = _stack(error)
        return orjson.dumps(event, default=str).decode()


def log_config(level: str = "INFO", hash_key: str | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the service and uvicorn (given to uvicorn, which applies
    it in every worker process): JSON lines on stderr, through ``service.ops.telemetry``'s filter
    (patient ids hashed with ``hash_key``, tokens cut out, should any message carry one); uvicorn's
    access log is off because ``service.http.middleware`` writes one line per request itself."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"privacy": {"()": "service.ops.telemetry.PrivacyFilter", "key": hash_key}},
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["privacy"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "calf_cds": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # httpx logs every FHIR query at INFO, URL and all: patient ids. Warnings only.
            "httpx": {"level": "WARNING"},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


_PROCESS_KEY = secrets.token_bytes(32)
_ID = r"[A-Za-z0-9\-.]{1,64}"
_PATIENT_REFERENCE = re.compile(rf"(?<![A-Za-z])(Patient/)({_ID})")
_PATIENT_PAIR = re.compile(rf"""(patient(?:[_-]?id)?["']?\s*[:=]\s*["']?)({_ID})""", re.IGNORECASE)
_JWS = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_ACCESS_TOKEN = re.compile(r"""(access_token["']?\s*[:=]\s*["']?)[^"'\s,&}]+""", re.IGNORECASE)
_HASHED = re.compile(r"pt-[0-9a-f]{12}")


def patient_hash(patient_id: str, key: bytes = _PROCESS_KEY) -> str:
    """The log-line name of a patient: `pt-` and 12 hex digits of a keyed hash of the id."""
    digest = hmac.new(key, patient_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return "pt-" + digest[:12]


def scrub(message: str, key: bytes = _PROCESS_KEY) -> str:
    """`message` with patient ids hashed and tokens removed."""

    def hashed(match: re.Match[str]) -> str:
        value = match.group(2)
        return match.group(1) + (value if _HASHED.fullmatch(value) else patient_hash(value, key))

    message = _JWS.sub("[redacted]", message)
    message = _BEARER.sub(r"\1[redacted]", message)
    message = _ACCESS_TOKEN.sub(r"\1[redacted]", message)
    message = _PATIENT_REFERENCE.sub(hashed, message)
    return _PATIENT_PAIR.sub(hashed, message)


class PrivacyFilter(logging.Filter):
    """Rewrites every record it sees so that it carries no patient id and no token."""

    def __init__(self, key: str | None = None) -> None:
        super().__init__()
        self._key = key.encode("utf-8") if key else _PROCESS_KEY

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_calf_cds_scrubbed", False):
            return True
        message = record.getMessage()
        cleaned = scrub(message, self._key)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), self._key)
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text, self._key)
        patient_id = getattr(record, "patient_id", None)
        if isinstance(patient_id, str) and not _HASHED.fullmatch(patient_id):
            record.patient_id = patient_hash(patient_id, self._key)
        record._calf_cds_scrubbed = True
        return True


# Metrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Hook calls take milliseconds; the CDS Hooks budget is 500 ms end to end; FHIR fetches take longer.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.:@/{}-]")

REQUEST_SECONDS = Histogram(
    "calf_cds_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint (a route, with the CDS service id), method and status.",
    ["endpoint", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
CARDS = Counter(
    "calf_cds_cards_total",
    "Cards returned, by CDS service, card topic and indicator.",
    ["service", "topic", "indicator"],
)
RULE_ERRORS = Counter(
    "calf_cds_rule_errors_total",
    "Rules that failed to evaluate (the call still answers), by pack, version and rule id.",
    ["pack", "version", "rule"],
)
FETCH_SECONDS = Histogram(
    "calf_cds_fhir_fetch_duration_seconds",
    "Time to fetch missing prefetch from the EHR's FHIR server, by outcome (ok or a failure reason).",
    ["outcome"],
    buckets=_FETCH_BUCKETS,
)
FETCH_FAILURES = Counter(
    "calf_cds_fhir_fetch_failures_total",
    "FHIR fetches that failed, by reason.",
    ["reason"],
)
AUTH_REJECTIONS = Counter(
    "calf_cds_auth_rejections_total",
    "Requests refused because their JWT did not authenticate, by reason.",
    ["reason"],
)
FHIR_SERVER_REFUSALS = Counter(
    "calf_cds_fhir_server_refusals_total",
    "Calls refused because their fhirServer may not be read (nothing fetched, no token sent), by rule.",
    ["reason"],
)
AUDIT_QUEUE = Gauge(
    "calf_cds_audit_queue_depth",
    "Audit records queued in memory, not yet written or spooled, by table (summed over workers).",
    ["table"],
    multiprocess_mode="livesum",
)
AUDIT_SPOOL = Gauge(
    "calf_cds_audit_spool_depth",
    "Audit records spooled to local disk, waiting for the database, by table (summed over workers).",
    ["table"],
    multiprocess_mode="livesum",
)
AUDIT_RECORDS = Counter(
    "calf_cds_audit_records_total",
    "Audit records by table and where they went: written to the database, spooled to disk, or"
    " dead_lettered (refused by the database, kept in audit_dead_letters with the reason).",
    ["table", "outcome"],
)
AUDIT_DEAD_LETTERS = Gauge(
    "calf_cds_audit_dead_letters",
    "Records in audit_dead_letters (refused by the database, waiting for `calf-cds db dead-letters"
    " redrive`), as last counted by a readiness probe.",
    multiprocess_mode="livemax",
)
RULE_PACK = Gauge(
    "calf_cds_rule_pack_info",
    "The rule packs this process serves (value 1), by role (active or shadow), id, version and hash.",
    ["role", "pack", "version", "hash"],
    multiprocess_mode="livemax",
)


def _label(value: object, limit: int = 64) -> str:
    """A bounded, printable label value: labels are never free text from a request."""
    return _LABEL_VALUE.sub("_", str(value))[:limit] or "_"


# -- the API other modules call ------------------------------------------------------------


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    REQUEST_SECONDS.labels(endpoint, method, str(status)).observe(seconds)


def observe_hook_call(
    service: str,
    cards: Iterable[Mapping[str, Any]],
    rule_errors: Iterable[str],
    pack: tuple[str | None, str | None],
) -> None:
    """Count one call's cards (each a mapping with ``topic`` and ``indicator``) and its rule errors.

    ``rule_errors`` are the evaluator's ``"rule-id: ErrorType"`` strings; ``pack`` is (id, version).
    """
    for card in cards:
        CARDS.labels(_label(service), _label(card.get("topic")), _label(card.get("indicator"))).inc()
    pack_id, version = _label(pack[0]), _label(pack[1])
    for error in rule_errors:
        RULE_ERRORS.labels(pack_id, version, _label(error.partition(":")[0])).inc()


def observe_fetch(seconds: float, outcome: str) -> None:
    """One fetch from a FHIR server: ``outcome`` is ``"ok"`` or a short failure reason.

    Use a small fixed set of reasons (for example ``timeout``, ``http-4xx``, ``http-5xx``,
    ``transport``, ``invalid``, ``budget``): each distinct value is a time series.
    """
    reason = _label(outcome, 32)
    FETCH_SECONDS.labels(reason).observe(seconds)
    if reason != "ok":
        FETCH_FAILURES.labels(reason).inc()


def count_auth_rejection(reason: str) -> None:
    """One request refused by JWT verification; ``reason`` is ``AuthenticationError.reason``."""
    AUTH_REJECTIONS.labels(_label(reason, 32)).inc()


def count_fhir_server_refusal(reason: str) -> None:
    """One ``fhirServer`` refused; ``reason`` is ``FhirServerRefusedError.reason`` (a fixed word)."""
    FHIR_SERVER_REFUSALS.labels(_label(reason, 32)).inc()


def observe_audit_queue(table: str, queued: int, spooled: int) -> None:
    """``table``: the audit table a writer fills (``hook_calls``, ``feedback``)."""
    AUDIT_QUEUE.labels(table).set(queued)
    AUDIT_SPOOL.labels(table).set(spooled)


def count_audit_records(table: str, *, written: int = 0, spooled: int = 0, dead_lettered: int = 0) -> None:
    if dead_lettered:
        AUDIT_RECORDS.labels(table, "dead_lettered").inc(dead_lettered)
    if written:
        AUDIT_RECORDS.labels(table, "written").inc(written)
    if spooled:
        AUDIT_RECORDS.labels(table, "spooled").inc(spooled)


def set_audit_dead_letters(count: int) -> None:
    AUDIT_DEAD_LETTERS.set(count)


def set_rule_packs(active: tuple[str, str, str], shadows: Iterable[tuple[str, str, str]]) -> None:
    """Publish (id, version, hash) of the active pack and each shadow pack (replacing any earlier)."""
    if multiprocess_dir() is None:  # a worker process sets them once; clearing is single-process only
        RULE_PACK.clear()
    RULE_PACK.labels("active", *(_label(part, 80) for part in active)).set(1)
    for shadow in shadows:
        RULE_PACK.labels("shadow", *(_label(part, 80) for part in shadow)).set(1)


# -- exposition and process bookkeeping -----------------------------------------------------


def multiprocess_dir() -> Path | None:
    """The folder shared by worker processes, when running several of them."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir(path: Path) -> None:
    """Create (or empty) ``path`` and point this process and its future children at it.

    Call it in the parent before any worker starts: values left by an earlier run would be added
    to this one's. Only the ``*.db`` files prometheus-client writes are removed.
    """
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)


def remove_multiprocess_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def render() -> bytes:
    """The text exposition of every metric, added up over worker processes when there are several."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def worker_gone(pid: int) -> None:
    """A worker process died without stopping cleanly: drop its live gauges (called by the parent)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def process_stopping() -> None:
    """This worker is about to exit: drop its live gauges so the others' sums stay right."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
