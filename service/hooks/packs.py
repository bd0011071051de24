"""The rule packs this process serves: the bundled ones and any from ``settings.rules_dir``.

Every pack is schema-checked and compiled against the fact vocabulary at start-up, every
suggestion's ServiceRequest is validated with ``fhir.resources`` and every link a card can carry
with the card contract (:mod:`cds_hooks.models`) — once, not per request, so that a pack the
contract refuses fails at start-up, not at a patient.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from cds_hooks.models import Link, Source
from fhir_mappings.facts import Vocabulary, vocabulary
from fhir_mappings.mapper import Mapper
from fhir_mappings.orderables import site_catalogue
from fhir_mappings.orders import OrderReader, bundled_reader
from fhir_mappings.terminology import Terminology, bundled_terminology
from rules.errors import PackError
from rules.pack import Rule, RulePack, bundled_pack_files, load_pack
from service.config import Settings
from service.hooks.cards import service_request
from service.hooks.registry import CalfPainService

__all__ = ["PackRegistry", "acute_window", "fact_types", "pack_files", "validate_suggestions"]


def fact_types(vocab: Vocabulary) -> dict[str, str]:
    return {name: kind for name, (kind, _) in vocab.types().items()}


def validate_suggestions(pack: RulePack) -> None:
    """Every draft order a pack can suggest is a valid FHIR ServiceRequest, and every link its cards
    can carry one the card contract takes (:func:`validate_links`)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for rule in pack.rules:
        suggestions = list(rule.suggestions) + [s for v in rule.variants for s in v.suggestions]
        for suggestion in suggestions:
            resource = service_request(suggestion["request"], patient_id="example", authored_on=now)
            try:
                ServiceRequest.model_validate(resource)
            except ValueError as error:
                message = f"suggestion {suggestion['label']!r} is not a valid ServiceRequest: {error}"
                raise _rule_error(pack, rule, message) from error
    validate_links(pack)


def validate_links(pack: RulePack) -> None:
    """Every link a pack's cards can carry (its rules' links and citation URLs) is one the card
    contract takes: a label, and an absolute URL."""
    for rule in pack.rules:
        try:
            Source(label=rule.citation.guideline or "citation", url=rule.citation.url)
            for link in rule.links:
                Link(label=link["label"], url=link["url"], type="absolute")
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = "/".join(str(part) for part in first["loc"])
            message = f"rule {rule.id!r} has a link the card contract refuses ({where}: {first['msg']})"
            raise _rule_error(pack, rule, message) from error


def _rule_error(pack: RulePack, rule: Rule, message: str) -> PackError:
    return PackError(message, pack=pack.id, version=pack.version, pointer=f"/rules/{rule.id}")


def pack_files(rules_dir: Path | None) -> dict[str, Path]:
    """The bundled packs and those in ``rules_dir``, by the ``id@version`` written inside each file.

    A file's name says nothing: a pack is identified by its content. Entries whose name starts
    with a dot are skipped: a mounted Kubernetes ConfigMap keeps ``..data`` and ``..2026_…``
    folders beside its files (the files are links into them). So is anything that is not a
    ``.json`` file. An empty folder adds nothing; a folder that does not exist is an error.
    """
    files = bundled_pack_files()
    if rules_dir is None:
        return files
    if not rules_dir.is_dir():
        raise PackError(f"rules folder {rules_dir} does not exist")
    for path in sorted(rules_dir.iterdir()):
        if path.name.startswith(".") or path.suffix != ".json" or not path.is_file():
            continue
        key = _pack_key(path)
        if key in files and _content(files[key]) != _content(path):
            raise PackError(
                f"{path.name} holds {key}, which {files[key].name} already holds with other content;"
                " a released version is never edited: give the change a new version"
            )
        files[key] = path
    return files


def _content(path: Path) -> object:
    return json.loads(path.read_text("utf-8"))


def _pack_key(path: Path) -> str:
    """``id@version`` of the pack in ``path``; a clear error if it is not a pack."""
    try:
        document = _content(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackError(f"{path.name} is not a readable JSON file: {type(error).__name__}") from error
    if not isinstance(document, dict):
        raise PackError(f"{path.name} is not a rule pack: not a JSON object")
    pack_id, version = document.get("id"), document.get("version")
    if not isinstance(pack_id, str) or not isinstance(version, str):
        raise PackError(f"{path.name} is not a rule pack: it has no string 'id' and 'version'")
    return f"{pack_id}@{version}"


@dataclass(frozen=True)
class PackRegistry:
    vocabulary: Vocabulary
    packs: Mapping[str, RulePack]
    active: RulePack
    shadows: tuple[RulePack, ...]
    orders: OrderReader = field(default_factory=bundled_reader)

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
            # the order catalogue: bundled, plus the site's file (a bad one stops the start-up with an
            # OrderCatalogueError naming the file and the place)
            orders=(
                OrderReader(site_catalogue(settings.site_orderables), vocab)
                if settings.site_orderables is not None
                else bundled_reader()
            ),
        )

    def service(
        self, *, clock: Callable[[], datetime], terminology: Terminology | None = None
    ) -> CalfPainService:
        mapper = Mapper(
            self.vocabulary, terminology or bundled_terminology(), acute_window=acute_window(self.active)
        )
        return CalfPainService(
            mapper=mapper,
            vocabulary=self.vocabulary,
            active=self.active,
            shadows=self.shadows,
            clock=clock,
            orders=self.orders,
        )


def acute_window(pack: RulePack) -> timedelta | None:
    """The acute-diagnosis window a pack asks the mapper for (``mapping.acute_window_days``), if any."""
    mapping = pack.document.get("mapping")
    days = mapping.get("acute_window_days") if isinstance(mapping, Mapping) else None
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 3650:
        return None
    return timedelta(days=float(days))
