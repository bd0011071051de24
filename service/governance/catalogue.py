"""Every rule pack this installation knows (bundled and ``rules_dir``), loaded on demand.

Commands name a pack as ``id@version``, as a bare version when one id has it, or as a file path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_mappings.facts import Vocabulary, vocabulary
from rules.pack import RulePack, bundled_pack_files, load_pack
from service.governance.errors import PackNotFoundError
from service.governance.manifest import Manifest, load_manifest, version_order
from service.hooks.packs import fact_types, pack_files, validate_suggestions

__all__ = ["Catalogue", "PackSource", "read_source"]


@dataclass(frozen=True)
class PackSource:
    key: str
    path: Path
    document: Mapping[str, Any]
    bundled: bool


def read_source(path: Path, *, bundled: bool = False) -> PackSource:
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PackNotFoundError(f"cannot read {path}: {error}", spec=str(path)) from None
    if not isinstance(document, dict):
        raise PackNotFoundError(f"{path} is not a JSON object", spec=str(path))
    key = f"{document.get('id', '?')}@{document.get('version', '?')}"
    return PackSource(key, path, document, bundled)


@dataclass
class Catalogue:
    sources: dict[str, PackSource]
    manifest: Manifest
    vocabulary: Vocabulary
    _loaded: dict[str, RulePack] = field(default_factory=dict)

    @classmethod
    def discover(cls, rules_dir: Path | None = None, manifest: Manifest | None = None) -> Catalogue:
        bundled = {str(p) for p in bundled_pack_files().values()}
        sources = {
            key: read_source(path, bundled=str(path) in bundled)
            for key, path in pack_files(rules_dir).items()
        }
        return cls(sources, manifest if manifest is not None else load_manifest(), vocabulary())

    @property
    def types(self) -> dict[str, str]:
        return fact_types(self.vocabulary)

    def ordered(self) -> list[str]:
        return sorted(self.sources, key=version_order)

    def add(self, path: Path) -> PackSource:
        source = read_source(path)
        self.sources[source.key] = source
        self._loaded.pop(source.key, None)
        return source

    def load(self, key: str) -> RulePack:
        """The compiled pack (schema-checked, compiled, suggestions validated); raises PackError."""
        if key not in self._loaded:
            pack = load_pack(self.sources[key].document, self.types)
            validate_suggestions(pack)
            self._loaded[key] = pack
        return self._loaded[key]

    def resolve(self, spec: str) -> RulePack:
        """``id@version``, a version, or a pack file."""
        return self.load(self.resolve_key(spec))

    def resolve_key(self, spec: str) -> str:
        if spec in self.sources:
            return spec
        path = Path(spec)
        if spec.endswith(".json") or path.is_file():
            if not path.is_file():
                raise PackNotFoundError(f"no pack file {spec}", spec=spec)
            return self.add(path).key
        matches = [key for key in self.sources if key.partition("@")[2] == spec]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(self.ordered()) or "none"
        if matches:
            raise PackNotFoundError(f"version {spec} is ambiguous: {', '.join(matches)}", spec=spec)
        raise PackNotFoundError(f"no pack {spec!r}; known: {known}", spec=spec)
