"""The patient facts an ``order-select`` call mapped, kept briefly for the ``order-sign`` that follows.

The patient facts (what the mapper makes of the patient's record) do not depend on the draft orders,
so the ``order-sign`` of an order session may reuse those an ``order-select`` call of the same session
mapped, instead of mapping the same record again. Reuse is exact or nothing: the key is the calling
client's issuer, the FHIR server, the patient, the encounter, the user and a digest of the data the
mapper read (the prefetch as sent and whatever was fetched), so a different chart, patient, user or
client never shares facts. An entry lives :data:`TTL` on the injected clock; the cache holds at most
``size`` entries (the oldest is dropped first). ``order-sign`` stays authoritative: it always reads
the draft orders afresh, and maps the record itself whenever no entry matches.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_hooks.prefetch_plan import PatientData
from fhir_mappings.facts import Facts

__all__ = ["SIZE", "TTL", "FactsCache", "FactsKey", "data_digest"]

TTL = timedelta(minutes=10)
SIZE = 1024


def data_digest(data: PatientData) -> str:
    """A SHA-256 digest of what the mapper reads (the Patient and the other resources)."""
    document = {"patient": data.patient, "resources": data.resources}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class FactsKey:
    """Everything two calls must share for one to reuse the other's patient facts."""

    issuer: str | None
    fhir_server: str | None
    patient_id: str
    encounter_id: str | None
    user_id: str
    digest: str


@dataclass(frozen=True)
class _Entry:
    facts: Facts
    call_id: str
    stored_at: datetime


class FactsCache:
    """A bounded, expiring map of :class:`FactsKey` → the facts and the call that mapped them."""

    def __init__(self, *, size: int = SIZE, ttl: timedelta = TTL) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[FactsKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: FactsKey, facts: Facts, *, call_id: str, now: datetime) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = _Entry(facts, call_id, now)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def get(self, key: FactsKey, *, now: datetime) -> tuple[Facts, str] | None:
        """The facts stored under exactly ``key`` and the id of the call that mapped them, unless
        expired (or stored "in the future" of ``now``, which a clock set back would give)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if not entry.stored_at <= now < entry.stored_at + self.ttl:
                del self._entries[key]
                return None
            return entry.facts, entry.call_id

    def __len__(self) -> int:
        return len(self._entries)
