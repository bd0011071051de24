"""The manifest of released rule-pack versions: ``rules/released.json``.

A version is *released* when the manifest holds its content hash. From then on it is immutable:
``calf-cds rules validate`` and the test suite fail when its file no longer has that hash, so
editing a released pack fails CI; a change is a new version. A *draft* (not in the manifest)
may change freely.

How the pack's own ``status`` field and the manifest relate:

* a draft pack says ``"status": "draft"``; to release it, set ``"active"`` (with its approvals
  and changelog entry), then ``calf-cds rules release id@version`` records its hash and date;
* a released pack says ``"active"`` for ever, because its file can no longer change;
* retiring a version is a manifest entry (``calf-cds rules retire``: date and reason), never an
  edit of the pack — the file keeps saying ``"active"``, the manifest wins.

So the *effective* status is: ``retired`` if the manifest says so, ``active`` if released,
``draft`` otherwise. Which released version answers patients is configuration
(``CALF_CDS_ACTIVE_PACK``), not a status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from service.governance.errors import ManifestError

__all__ = [
    "Finding",
    "Level",
    "Manifest",
    "Release",
    "bundled_manifest_path",
    "load_manifest",
    "parse_manifest",
    "release",
    "retire",
    "save_manifest",
    "version_order",
]

Level = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Release:
    key: str
    hash: str
    released: date
    retired: date | None = None
    retired_reason: str | None = None

    def to_json(self) -> dict[str, str]:
        body = {"hash": self.hash, "released": self.released.isoformat()}
        if self.retired is not None:
            body["retired"] = self.retired.isoformat()
            body["retired_reason"] = self.retired_reason or ""
        return body


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of a governance check: an error fails ``rules validate``, a warning does not."""

    level: Level
    message: str


@dataclass
class Manifest:
    releases: dict[str, Release] = field(default_factory=dict)
    description: str = ""

    def status(self, key: str) -> Literal["draft", "active", "retired"]:
        release = self.releases.get(key)
        if release is None:
            return "draft"
        return "retired" if release.retired else "active"

    def check(
        self, key: str, document: Mapping[str, Any], content_hash: str, *, bundled: bool
    ) -> list[Finding]:
        """The manifest rules for one pack file (see the module docstring)."""
        release = self.releases.get(key)
        declared = document.get("status")
        if release is not None:
            if release.hash != content_hash:
                return [
                    Finding(
                        "error",
                        f"{key} was released on {release.released} with hash {release.hash}, but its file "
                        f"now hashes to {content_hash}: a released pack is never edited — restore it "
                        "and make the change in a new version",
                    )
                ]
            return []
        if declared != "draft":
            message = (
                f"{key} says status {declared!r} but was never released: release it with "
                f"`calf-cds rules release {key}` or mark it 'draft'"
            )
            return [Finding("error" if bundled else "warning", message)]
        return []

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "packs": {key: self.releases[key].to_json() for key in sorted(self.releases, key=version_order)},
        }


def version_order(key: str) -> tuple[str, tuple[int, ...]]:
    pack_id, _, version = key.partition("@")
    try:
        return pack_id, tuple(int(part) for part in version.split("."))
    except ValueError:
        return pack_id, ()


def _date(value: object, key: str, name: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ManifestError(f"{name} {value!r} is not a date (YYYY-MM-DD)", key=key) from None


def parse_manifest(document: Mapping[str, Any]) -> Manifest:
    packs = document.get("packs")
    if not isinstance(packs, dict):
        raise ManifestError("the manifest needs a 'packs' object")
    releases: dict[str, Release] = {}
    for key, entry in packs.items():
        if "@" not in key or not isinstance(entry, dict):
            raise ManifestError("an entry is 'id@version': {hash, released}", key=key)
        digest = entry.get("hash")
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise ManifestError("hash must be 'sha256:…'", key=key)
        retired = entry.get("retired")
        releases[key] = Release(
            key=key,
            hash=digest,
            released=_date(entry.get("released"), key, "released"),
            retired=None if retired is None else _date(retired, key, "retired"),
            retired_reason=entry.get("retired_reason"),
        )
    return Manifest(releases, str(document.get("description", "")))


def bundled_manifest_path() -> Path:
    return Path(str(resources.files("rules").joinpath("released.json")))


def load_manifest(path: Path | None = None) -> Manifest:
    """The manifest at ``path`` (default: the one shipped in the ``rules`` package)."""
    path = path or bundled_manifest_path()
    if not path.exists():
        return Manifest()
    try:
        document = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path} is not JSON: {error}") from None
    return parse_manifest(document)


def save_manifest(manifest: Manifest, path: Path | None = None) -> Path:
    path = path or bundled_manifest_path()
    path.write_text(json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    return path


def release(
    manifest: Manifest, key: str, document: Mapping[str, Any], content_hash: str, *, on: date
) -> Release:
    """Record ``key`` as released; refuses drafts and a second release of the same version."""
    if key in manifest.releases:
        raise ManifestError(f"already released on {manifest.releases[key].released}", key=key)
    if document.get("status") != "active":
        raise ManifestError(
            f"status is {document.get('status')!r}: set it to 'active' (with approvals and a "
            "changelog entry) before releasing",
            key=key,
        )
    entry = Release(key=key, hash=content_hash, released=on)
    manifest.releases[key] = entry
    return entry


def retire(manifest: Manifest, key: str, *, on: date, reason: str) -> Release:
    """Record that a released version is retired (the pack file is not touched)."""
    current = manifest.releases.get(key)
    if current is None:
        raise ManifestError("only a released version can be retired", key=key)
    if not reason.strip():
        raise ManifestError("retiring a version needs a reason", key=key)
    entry = Release(key, current.hash, current.released, on, reason.strip())
    manifest.releases[key] = entry
    return entry
