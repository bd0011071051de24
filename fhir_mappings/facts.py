"""Facts: what the rules may read about a patient, each with the evidence it came from.

A fact is three-valued where it matters: ``value is None`` means *not documented*, which is never
the same as ``False`` (looked for and absent). The vocabulary — every fact's name, type and unit —
is declared in ``data/facts.json`` and shared with ``rules`` through :func:`vocabulary`.

Most facts come from the patient's record (:mod:`fhir_mappings.mapper`); those with
``"origin": "draft-orders"`` come from an order hook's draft orders (:mod:`fhir_mappings.orders`)
and are added to the patient's facts with :meth:`Facts.with_facts`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from importlib import resources
from typing import Any, Literal

from fhir_mappings.errors import VocabularyError

__all__ = [
    "LEGS",
    "Evidence",
    "Fact",
    "FactSpec",
    "FactType",
    "FactValue",
    "Facts",
    "Vocabulary",
    "vocabulary",
    "vocabulary_from_json",
]

FactType = Literal["boolean", "number", "code"]
FactValue = bool | float | str | None
LEGS = ("left", "right")


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where a fact came from: one resource, its date, its value as read, and its laterality."""

    reference: str
    label: str
    value: str
    when: datetime | None = None
    laterality: str | None = None
    status: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "label": self.label,
            "value": self.value,
            "when": self.when.isoformat() if self.when else None,
            "laterality": self.laterality,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class Fact:
    """One named fact about the patient with the evidence behind its value."""

    name: str
    value: FactValue
    evidence: tuple[Evidence, ...] = ()
    when: datetime | None = None

    @property
    def documented(self) -> bool:
        return self.value is not None


@dataclass(frozen=True, slots=True)
class FactSpec:
    """A fact as declared in the vocabulary."""

    name: str
    type: FactType
    label: str
    unit: str | None = None
    per_leg: bool = False
    window_hours: float | None = None
    sources: tuple[Mapping[str, Any], ...] = ()
    round_to: int | None = None
    answers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Observation statuses this fact reads as results; None = the default (final, amended,
    # corrected, plus preliminary rule-in). ``("preliminary",)`` gives the preliminary view of a test.
    statuses: frozenset[str] | None = None
    # Fail-safe reading (see fhir_mappings.reading): the concern an unreadable record of this fact
    # is reported under ("dvt" → unreadable_dvt_finding, "red_flag" → unreadable_red_flag_finding),
    # and the fact that says a record of it was unclear (d_dimer_unclear, venous_imaging_unclear).
    concern: str | None = None
    unclear: str | None = None
    # Per-leg findings: "both" puts an unsided True on both legs, "none" on neither; either way
    # ``<name>_side_unrecorded`` says the side was not recorded. ``leg_only``: ignored when the body
    # site says elsewhere (an arm). ``basis``: FEU or DDU, the D-dimer basis the unit must not contradict.
    unsided: str | None = None
    leg_only: bool = False
    basis: str | None = None
    positivity: str | None = None
    # Where the value comes from when not from the patient's record: "draft-orders" (order hooks).
    origin: str | None = None

    def names(self) -> tuple[str, ...]:
        """The fact names this spec produces: per-leg facts add ``_left`` and ``_right``; a fact
        with an ``unsided`` rule adds ``_side_unrecorded``."""
        extra = (f"{self.name}_side_unrecorded",) if self.unsided else ()
        if self.per_leg:
            return (self.name, *(f"{self.name}_{leg}" for leg in LEGS), *extra)
        return (self.name, *extra)


@cache
def _undocumented(name: str) -> Fact:
    """The fact ``name`` with no value: one immutable instance per declared name, made once."""
    return Fact(name=name, value=None)


@dataclass(frozen=True)
class Facts(Mapping[str, Fact]):
    """The facts of one patient at one moment. Reading an undeclared name is a programming error."""

    by_name: Mapping[str, Fact]
    declared: frozenset[str]
    notes: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> Fact:
        if name not in self.declared:
            raise KeyError(name)
        return self.by_name.get(name) or _undocumented(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def with_facts(self, extra: Iterable[Fact], *, notes: Iterable[str] = ()) -> Facts:
        """These facts plus ``extra`` (a fact of the same name is replaced) and more ``notes``.

        Every added fact must be declared: an undeclared name is a :class:`VocabularyError`, as a
        rule reading it would be at load.
        """
        added = {fact.name: fact for fact in extra}
        for name in added:
            if name not in self.declared:
                raise VocabularyError("fact is not in the vocabulary", fact=name)
        return Facts(by_name={**self.by_name, **added}, declared=self.declared, notes=(*self.notes, *notes))

    def to_json(self) -> dict[str, Any]:
        """The documented facts with their evidence, for the audit trail."""
        return {
            name: {
                "value": fact.value,
                "evidence": [evidence.to_json() for evidence in fact.evidence],
            }
            for name, fact in sorted(self.by_name.items())
            if fact.documented
        }


@dataclass(frozen=True)
class Vocabulary:
    """Every fact the mappings produce, by name, with its type and unit."""

    version: str
    specs: Mapping[str, FactSpec]
    acute_window_days: float = 30.0

    def types(self) -> dict[str, tuple[FactType, str | None]]:
        """Every producible fact name → (type, unit): what ``rules`` checks its packs against."""
        produced: dict[str, tuple[FactType, str | None]] = {}
        for spec in self.specs.values():
            for name in spec.names():
                side_flag = name.endswith("_side_unrecorded") and name != spec.name
                produced[name] = ("boolean", None) if side_flag else (spec.type, spec.unit)
        return produced

    @cached_property
    def _labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        for spec in self.specs.values():
            labels[spec.name] = spec.label
            labels.update({f"{spec.name}_{leg}": f"{spec.label} ({leg})" for leg in LEGS})
            labels[f"{spec.name}_side_unrecorded"] = f"{spec.label}: side not recorded"
        return labels

    def label(self, name: str) -> str:
        """A clinician-readable label for a (possibly per-leg) fact name."""
        return self._labels.get(name) or name.replace("_", " ")


def _spec(entry: Mapping[str, Any]) -> FactSpec:
    name = str(entry["name"])
    kind = entry["type"]
    if kind not in ("boolean", "number", "code"):
        raise VocabularyError(f"unknown fact type {kind!r}", fact=name)
    window = entry.get("window")
    statuses = entry.get("statuses")
    window_hours = None
    if window is not None:
        window_hours = float(window.get("hours", 0)) + 24 * float(window.get("days", 0))
    return FactSpec(
        name=name,
        type=kind,
        label=str(entry.get("label", name)),
        unit=entry.get("unit"),
        per_leg=bool(entry.get("per_leg", False)),
        window_hours=window_hours,
        sources=tuple(entry.get("sources", ())),
        round_to=entry.get("round"),
        answers=entry.get("answers", {}),
        statuses=frozenset(map(str, statuses)) if statuses is not None else None,
        concern=entry.get("concern"),
        unclear=entry.get("unclear"),
        unsided=entry.get("unsided"),
        leg_only=bool(entry.get("leg_only", False)),
        basis=entry.get("basis"),
        positivity=entry.get("positivity"),
        origin=entry.get("origin"),
    )


def vocabulary_from_json(document: Mapping[str, Any]) -> Vocabulary:
    specs: dict[str, FactSpec] = {}
    for entry in document["facts"]:
        spec = _spec(entry)
        if spec.name in specs:
            raise VocabularyError("fact declared twice", fact=spec.name)
        specs[spec.name] = spec
    for spec in specs.values():
        for target in (spec.unclear, f"unreadable_{spec.concern}_finding" if spec.concern else None):
            if target is not None and target not in specs:
                raise VocabularyError(
                    f"reports unreadable records to undeclared fact {target!r}", fact=spec.name
                )
    window = document.get("acute_window", {"days": 30})
    return Vocabulary(
        version=str(document.get("version", "")),
        specs=specs,
        acute_window_days=float(window.get("days", 30)),
    )


@cache
def vocabulary() -> Vocabulary:
    """The bundled fact vocabulary."""
    text = resources.files("fhir_mappings").joinpath("data/facts.json").read_text("utf-8")
    return vocabulary_from_json(json.loads(text))
