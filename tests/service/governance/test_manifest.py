"""Released rule packs are immutable: the manifest's hashes are checked here, so an edit fails CI."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from rules.pack import bundled_pack_files, content_hash
from service.cli import main
from service.governance.errors import ManifestError
from service.governance.manifest import Manifest, load_manifest, parse_manifest, release, retire

BUNDLED = bundled_pack_files()
MANIFEST = load_manifest()


def document(key: str = "calf-pain@0.1.0") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(BUNDLED[key].read_text("utf-8"))
    return loaded


@pytest.mark.parametrize("key", sorted(MANIFEST.releases))
def test_released_pack_is_unchanged(key: str) -> None:
    """Every released version's file still has the content hash recorded when it was released."""
    assert key in BUNDLED, f"{key} was released but its pack file is gone"
    pack = json.loads(BUNDLED[key].read_text("utf-8"))
    assert MANIFEST.check(key, pack, content_hash(pack), bundled=True) == []


@pytest.mark.parametrize("key", sorted(BUNDLED))
def test_every_bundled_pack_is_released_or_draft(key: str) -> None:
    """A bundled pack that says 'active' or 'retired' must be in the manifest (`calf-cds rules release`)."""
    pack = json.loads(BUNDLED[key].read_text("utf-8"))
    findings = MANIFEST.check(key, pack, content_hash(pack), bundled=True)
    assert [f.message for f in findings if f.level == "error"] == []


def test_editing_a_released_pack_is_an_error() -> None:
    """One changed threshold in a released version is caught, with what to do about it."""
    edited = document()
    edited["definitions"]["infection"]["all"][0]["any"][1]["cmp"][2] = 38.5
    (finding,) = MANIFEST.check("calf-pain@0.1.0", edited, content_hash(edited), bundled=True)
    assert finding.level == "error"
    assert "never edited" in finding.message
    assert "new version" in finding.message


def test_a_draft_may_change() -> None:
    draft = document() | {"version": "0.9.0", "status": "draft"}
    assert MANIFEST.check("calf-pain@0.9.0", draft, content_hash(draft), bundled=True) == []


def test_an_unreleased_active_pack_is_an_error() -> None:
    active = document() | {"version": "0.9.0"}
    (finding,) = MANIFEST.check("calf-pain@0.9.0", active, content_hash(active), bundled=True)
    assert finding.level == "error"
    assert "calf-cds rules release calf-pain@0.9.0" in finding.message


def test_release_then_retire() -> None:
    """Releasing records the hash; retiring is a manifest entry, and the effective status follows it."""
    manifest = Manifest()
    pack = document() | {"version": "0.9.0"}
    entry = release(manifest, "calf-pain@0.9.0", pack, content_hash(pack), on=date(2026, 12, 1))
    assert manifest.status("calf-pain@0.9.0") == "active"
    assert entry.hash == content_hash(pack)
    retire(manifest, "calf-pain@0.9.0", on=date(2027, 1, 1), reason="superseded by 1.0.0")
    assert manifest.status("calf-pain@0.9.0") == "retired"
    reread = parse_manifest(json.loads(json.dumps(manifest.to_json())))
    assert reread.releases["calf-pain@0.9.0"].retired_reason == "superseded by 1.0.0"
    assert reread.check("calf-pain@0.9.0", pack, content_hash(pack), bundled=True) == []


@pytest.mark.parametrize(
    ("status", "released", "message"),
    [("draft", False, "status is 'draft'"), ("active", True, "already released")],
)
def test_release_refuses(status: str, released: bool, message: str) -> None:
    manifest = Manifest()
    pack = document() | {"version": "0.9.0", "status": status}
    if released:
        release(manifest, "calf-pain@0.9.0", pack, content_hash(pack), on=date(2026, 12, 1))
    with pytest.raises(ManifestError, match=message):
        release(manifest, "calf-pain@0.9.0", pack, content_hash(pack), on=date(2026, 12, 2))


def test_retire_needs_a_released_version_and_a_reason() -> None:
    with pytest.raises(ManifestError, match="only a released version"):
        retire(Manifest(), "calf-pain@9.9.9", on=date(2027, 1, 1), reason="x")
    with pytest.raises(ManifestError, match="needs a reason"):
        retire(MANIFEST, "calf-pain@0.1.0", on=date(2027, 1, 1), reason=" ")


def test_malformed_manifest_is_refused() -> None:
    with pytest.raises(ManifestError, match="sha256"):
        parse_manifest({"packs": {"calf-pain@0.1.0": {"hash": "md5:1", "released": "2026-11-22"}}})
    with pytest.raises(ManifestError, match="not a date"):
        parse_manifest({"packs": {"calf-pain@0.1.0": {"hash": "sha256:1", "released": "soon"}}})


def test_cli_validate_fails_on_an_edited_released_pack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`calf-cds rules validate FILE` exits 1 and says why when a released pack was edited."""
    edited = copy.deepcopy(document())
    edited["rules"][-1]["summary"] = "Edited after release."
    path = tmp_path / "calf-pain-0.1.0.json"
    path.write_text(json.dumps(edited), "utf-8")
    assert main(["rules", "validate", str(path)]) == 1
    assert "a released pack is never edited" in capsys.readouterr().out


def test_cli_validate_passes_on_the_bundled_packs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "validate"]) == 0
    assert "calf-pain@0.1.0: ok" in capsys.readouterr().out


def test_cli_release_and_retire_write_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "released.json"
    manifest.write_text(json.dumps({"description": "test", "packs": {}}), "utf-8")
    assert (
        main(["rules", "release", "calf-pain@0.1.0", "--date", "2026-11-22", "--manifest", str(manifest)])
        == 0
    )
    assert (
        main(["rules", "retire", "calf-pain@0.1.0", "--reason", "superseded", "--manifest", str(manifest)])
        == 0
    )
    assert main(["rules", "release", "calf-pain@0.1.0", "--manifest", str(manifest)]) == 2
    written = json.loads(manifest.read_text("utf-8"))["packs"]["calf-pain@0.1.0"]
    assert written["hash"] == MANIFEST.releases["calf-pain@0.1.0"].hash
    assert written["retired_reason"] == "superseded"
    assert "already released" in capsys.readouterr().err
