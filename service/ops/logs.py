"""Structured logs: one JSON object per line, carrying the request id of the call being served.

    {"ts": "2026-11-22T09:00:00.123Z", "level": "INFO", "logger": "calf_cds.http",
     "message": "request", "request_id": "…", "method": "POST", "endpoint": "/cds-services/calf-pain",
     "status": 200, "duration_ms": 4.1, "call_id": "…", "cards": 2}

What never goes in a log line: request bodies, header values (other than the request id), query
strings, and exception messages (which may quote the input); patient ids and tokens that a
message would carry are hashed or cut out by ``service.ops.log_privacy.PrivacyFilter``, which every
handler runs. The audit store is where identifiable data lives; a log line links to it through
``call_id``. Exceptions are logged as their type and the code locations of their traceback.

The request id comes from the client's ``X-Request-ID`` header when it is a plain token (letters,
digits, ``._:-``, at most 128 characters), otherwise it is generated; it is echoed back in the
response's ``X-Request-ID`` header (see ``service.http.middleware``).
"""

from __future__ import annotations

import contextvars
import logging
import re
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JsonFormatter", "log_config", "request_id_from", "request_id_var"]

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
    it in every worker process): JSON lines on stderr, through ``service.ops.log_privacy``'s filter
    (patient ids hashed with ``hash_key``, tokens cut out, should any message carry one); uvicorn's
    access log is off because ``service.http.middleware`` writes one line per request itself."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"privacy": {"()": "service.ops.log_privacy.PrivacyFilter", "key": hash_key}},
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
