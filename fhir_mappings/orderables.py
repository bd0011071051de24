"""The order catalogue: the order kinds the order hooks recognise, and their verified codes.

``data/orderables.json`` declares ten kinds (venous duplex, D-dimer, venography, arterial imaging, ABI,
compression, lumbar MRI, rest-and-ice advice, analgesic, anticoagulant), each with its codes (every one
with its evidence, ``data/README.md`` "Order kinds") or the value sets of ``valuesets.json`` it reuses,
and for medications WHO ATC prefixes and ingredient names. A site adds its own catalogue codes with a site
file (:func:`site_catalogue`), checked when it loads: a bad file is an :class:`OrderCatalogueError`
naming the file and the JSON pointer. Each kind is read as two facts of the vocabulary
(``order_<kind>``, ``draft_<kind>``; :meth:`OrderCatalogue.check`). Draft orders are read against a
catalogue by :mod:`fhir_mappings.orders`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from fhir_mappings.errors import OrderCatalogueError
from fhir_mappings.facts import Vocabulary
from fhir_mappings.terminology import Terminology, listed_terminology

__all__ = [
    "ATC",
    "BUNDLED",
    "ORDERABLE_SYSTEM",
    "ORIGIN",
    "OrderCatalogue",
    "OrderKind",
    "Orderable",
    "bundled_catalogue",
    "site_catalogue",
]

ATC = "http://www.whocc.no/atc"
ORDERABLE_SYSTEM = "http://calf-cds.org/fhir/CodeSystem/orderable"
ORIGIN = "draft-orders"
BUNDLED = "fhir_mappings/data/orderables.json"
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Orderable:
    """One code of one order kind."""

    kind: str
    system: str
    code: str
    display: str
    site: str | None = None  # "extremity": the code does not say which limb


@dataclass(frozen=True, slots=True)
class OrderKind:
    name: str
    label: str
    medication: bool = False
    atc: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def fact(self) -> str:
        return f"order_{self.name}"

    @property
    def draft_fact(self) -> str:
        return f"draft_{self.name}"


@dataclass(frozen=True)
class OrderCatalogue:
    """Every order kind and its codes, indexed by (system, code)."""

    version: str
    kinds: Mapping[str, OrderKind]
    index: Mapping[tuple[str, str], tuple[Orderable, ...]]
    sources: tuple[str, ...] = ()

    @classmethod
    def from_json(
        cls, document: Mapping[str, Any], *, terminology: Terminology, path: str = BUNDLED
    ) -> OrderCatalogue:
        raw_kinds = document.get("kinds")
        if not isinstance(raw_kinds, Mapping) or not raw_kinds:
            raise OrderCatalogueError("the catalogue needs a 'kinds' object", path=path, pointer="/kinds")
        kinds: dict[str, OrderKind] = {}
        index: dict[tuple[str, str], list[Orderable]] = {}
        for name, body in raw_kinds.items():
            pointer = f"/kinds/{name}"
            if not isinstance(name, str) or not _KIND.match(name) or not isinstance(body, Mapping):
                raise OrderCatalogueError(
                    "a kind is a lower-case name with an object", path=path, pointer=pointer
                )
            kinds[name] = OrderKind(
                name=name,
                label=str(body.get("label", name)),
                medication=bool(body.get("medication", False)),
                atc=_strings(body.get("atc", []), path, f"{pointer}/atc"),
                names=tuple(n.lower() for n in _strings(body.get("names", []), path, f"{pointer}/names")),
            )
            for valueset in _strings(body.get("valuesets", []), path, f"{pointer}/valuesets"):
                if valueset not in terminology.valuesets:
                    raise OrderCatalogueError(f"unknown value set {valueset!r}", path=path, pointer=pointer)
                for entry in terminology.valuesets[valueset]:
                    _index(index, Orderable(name, entry.system, entry.code, entry.display))
            for orderable in _codes(name, body.get("codes", []), path, f"{pointer}/codes"):
                _index(index, orderable)
        return cls(
            version=str(document.get("version", "")),
            kinds=kinds,
            index={key: tuple(value) for key, value in index.items()},
            sources=(path,),
        )

    def extended(self, document: Mapping[str, Any], *, path: str) -> OrderCatalogue:
        """This catalogue plus a site file: ``{"site": ..., "orderables": {kind: {"codes": [...],
        "atc": [...], "names": [...]}}}`` (only known kinds; ATC and names only for medications)."""
        extra = document.get("orderables")
        if not isinstance(extra, Mapping):
            raise OrderCatalogueError(
                "a site file needs an 'orderables' object", path=path, pointer="/orderables"
            )
        kinds = dict(self.kinds)
        index = {key: list(value) for key, value in self.index.items()}
        for name, body in extra.items():
            pointer = f"/orderables/{name}"
            kind = kinds.get(name) if isinstance(name, str) else None
            if kind is None:
                raise OrderCatalogueError(
                    f"unknown order kind {name!r}: one of {', '.join(sorted(kinds))}",
                    path=path,
                    pointer=pointer,
                )
            if not isinstance(body, Mapping):
                raise OrderCatalogueError("a kind's entry is an object", path=path, pointer=pointer)
            atc = _strings(body.get("atc", []), path, f"{pointer}/atc")
            names = tuple(n.lower() for n in _strings(body.get("names", []), path, f"{pointer}/names"))
            if (atc or names) and not kind.medication:
                raise OrderCatalogueError(
                    "ATC classes and ingredient names are for medication kinds only",
                    path=path,
                    pointer=pointer,
                )
            kinds[name] = OrderKind(
                kind.name, kind.label, kind.medication, kind.atc + atc, kind.names + names
            )
            for orderable in _codes(name, body.get("codes", []), path, f"{pointer}/codes"):
                _index(index, orderable)
        return OrderCatalogue(
            version=self.version,
            kinds=kinds,
            index={key: tuple(value) for key, value in index.items()},
            sources=(*self.sources, path),
        )

    def lookup(self, system: object, code: object) -> tuple[Orderable, ...]:
        if not isinstance(system, str) or not isinstance(code, str):
            return ()
        return self.index.get((system.strip(), code.strip()), ())

    def check(self, vocab: Vocabulary) -> None:
        """Every kind is read as two boolean facts of the vocabulary with origin draft-orders."""
        for kind in self.kinds.values():
            for name in (kind.fact, kind.draft_fact):
                spec = vocab.specs.get(name)
                if spec is None or spec.type != "boolean" or spec.origin != ORIGIN:
                    raise OrderCatalogueError(
                        f"order kind {kind.name!r} needs the boolean fact {name!r} with origin {ORIGIN!r}",
                        path=self.sources[0] if self.sources else BUNDLED,
                        pointer=f"/kinds/{kind.name}",
                    )


def _strings(value: object, path: str, pointer: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise OrderCatalogueError("a list of non-empty strings is expected", path=path, pointer=pointer)
    return tuple(v.strip() for v in value)


def _codes(kind: str, value: object, path: str, pointer: str) -> list[Orderable]:
    if not isinstance(value, list):
        raise OrderCatalogueError("codes is a list", path=path, pointer=pointer)
    found: list[Orderable] = []
    for i, entry in enumerate(value):
        system = entry.get("system") if isinstance(entry, Mapping) else None
        code = entry.get("code") if isinstance(entry, Mapping) else None
        if not isinstance(system, str) or not system.strip() or not isinstance(code, str) or not code.strip():
            raise OrderCatalogueError("a code needs a system and a code", path=path, pointer=f"{pointer}/{i}")
        site = entry.get("site") if isinstance(entry, Mapping) else None
        if site not in (None, "extremity"):
            raise OrderCatalogueError(
                "site is 'extremity' or absent", path=path, pointer=f"{pointer}/{i}/site"
            )
        display = entry.get("display") if isinstance(entry, Mapping) else None
        found.append(Orderable(kind, system.strip(), code.strip(), str(display or code), site))
    return found


def _index(index: dict[tuple[str, str], list[Orderable]], orderable: Orderable) -> None:
    known = index.setdefault((orderable.system, orderable.code), [])
    if all(o.kind != orderable.kind for o in known):
        known.append(orderable)


@cache
def bundled_catalogue() -> OrderCatalogue:
    """The order kinds and codes shipped with the package."""
    document = json.loads(
        resources.files("fhir_mappings").joinpath("data/orderables.json").read_text("utf-8")
    )
    return OrderCatalogue.from_json(document, terminology=listed_terminology())


def site_catalogue(path: Path, base: OrderCatalogue | None = None) -> OrderCatalogue:
    """The bundled catalogue (or ``base``) plus a site's order file; a bad file is an
    :class:`OrderCatalogueError` naming the file and the place, raised at start-up."""
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OrderCatalogueError(
            f"not a readable JSON file: {type(error).__name__}", path=str(path)
        ) from error
    if not isinstance(document, Mapping):
        raise OrderCatalogueError("a site file is a JSON object", path=str(path))
    return (base or bundled_catalogue()).extended(document, path=str(path))
