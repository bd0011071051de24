"""Structured logs: one JSON object per line, carrying the request id of the call being served.

    {"ts": "2026-11-22T09:00:00.123Z", "level": "INFO", "logger": "calf_cds.http",
     "message": "request", "request_id": "…", "method": "POST", "endpoint": "/cds-services/calf-pain",
     "status": 200, "duration_ms": 4.1, "call_id": "…", "cards": 2}

What never goes in a log line: request bodies, header values (other than the request id), query
strings, and exception messages (which may quote the input); patient ids and tokens that a
message would carry are hashed or cut out by ``PrivacyFilter`` (below), which every
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
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import re
import secrets
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = [
    "JsonFormatter",
    "PrivacyFilter",
    "log_config",
    "patient_hash",
    "request_id_from",
    "request_id_var",
    "scrub",
]

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
    it in every worker process): JSON lines on stderr, through ``service.ops.logs``'s filter
    (patient ids hashed with ``hash_key``, tokens cut out, should any message carry one); uvicorn's
    access log is off because ``service.http.middleware`` writes one line per request itself."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"privacy": {"()": "service.ops.logs.PrivacyFilter", "key": hash_key}},
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
