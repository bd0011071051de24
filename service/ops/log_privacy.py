"""No PHI and no secrets in log lines: patient ids are hashed, tokens are cut out.

The audit store is where identifiable data lives; a log line may name a patient only by a keyed
hash (`pt-` + 12 hex digits of HMAC-SHA256), which links the lines about one patient without
revealing who it is. The key is `CALF_CDS_LOG_HASH_KEY`, or a random key per process.

`PrivacyFilter` is a `logging.Filter` for handlers. It rewrites each record's final message:

- `Patient/<id>` references (relative or absolute), `patient=<id>` / `patientId: <id>` pairs and a
  `patient_id` attribute given through `extra=` → the hash;
- compact JWS/JWTs (`eyJ….….…`), `Bearer <token>` and `access_token=<value>` → `[redacted]`.

`service.ops.logs.log_config` puts the filter on the one handler every log line goes through, the
process's and uvicorn's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets

__all__ = ["PrivacyFilter", "patient_hash", "scrub"]

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
