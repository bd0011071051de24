"""The rule packs this process serves: the bundled ones and any from ``settings.rules_dir``.

Every pack is schema-checked and compiled against the fact vocabulary at start-up, and every
suggestion's ServiceRequest is validated with ``fhir.resources`` — once, not per request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fhir.resources.R4B.servicerequest import ServiceRequest

from fhir_mappings.facts import Vocabulary, vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.terminology import bundled_terminology
from rules.errors import PackError
from rules.pack import RulePack, bundled_pack_files, load_pack
from service.cards import service_request
from service.config import Settings
from service.pipeline import CalfPainService


def fact_types(vocab: Vocabulary) -> dict[str, str]:
    return {name: kind for name, (kind, _) in vocab.types().items()}


def validate_suggestions(pack: RulePack) -> None:
    """Every draft order a pack can suggest is a valid FHIR ServiceRequest."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for rule in pack.rules:
        suggestions = list(rule.suggestions) + [s for v in rule.variants for s in v.suggestions]
        for suggestion in suggestions:
            resource = service_request(suggestion["request"], patient_id="example", authored_on=now)
            try:
                ServiceRequest.model_validate(resource)
            except ValueError as error:
                raise PackError(
                    f"suggestion {suggestion['label']!r} is not a valid ServiceRequest: {error}",
                    pack=pack.id,
                    version=pack.version,
                    pointer=f"/rules/{rule.id}",
                ) from error


def pack_files(rules_dir: Path | None) -> dict[str, Path]:
    files = bundled_pack_files()
    if rules_dir is not None:
        for path in sorted(rules_dir.glob("*.json")):
            document = json.loads(path.read_text("utf-8"))
            files[f"{document['id']}@{document['version']}"] = path
    return files


@dataclass(frozen=True)
class PackRegistry:
    vocabulary: Vocabulary
    packs: Mapping[str, RulePack]
    active: RulePack
    shadows: tuple[RulePack, ...]

    @classmethod
    def load(cls, settings: Settings) -> PackRegistry:
        vocab = vocabulary()
        types = fact_types(vocab)
        packs: dict[str, RulePack] = {}
        for key, path in pack_files(settings.rules_dir).items():
            pack = load_pack(json.loads(path.read_text("utf-8")), types)
            validate_suggestions(pack)
            packs[key] = pack
        missing = [k for k in (settings.active_pack, *settings.shadow_packs) if k not in packs]
        if missing:
            raise PackError(f"configured pack(s) not found: {', '.join(missing)}; have {sorted(packs)}")
        return cls(
            vocabulary=vocab,
            packs=packs,
            active=packs[settings.active_pack],
            shadows=tuple(packs[k] for k in settings.shadow_packs),
        )

    def service(self, *, clock: Callable[[], datetime]) -> CalfPainService:
        mapper = Mapper(self.vocabulary, bundled_terminology())
        return CalfPainService(
            mapper=mapper,
            vocabulary=self.vocabulary,
            active=self.active,
            shadows=self.shadows,
            clock=clock,
        )
