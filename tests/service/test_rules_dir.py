"""Extra rule packs from ``CALF_CDS_RULES_DIR``, laid out as a mounted Kubernetes ConfigMap or plainly."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from rules.errors import PackError
from rules.pack import bundled_pack_files
from service.config import Settings
from service.hooks.packs import PackRegistry, pack_files


def bundled_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(bundled_pack_files()["calf-pain@0.1.0"].read_text("utf-8"))
    return document


def new_version(version: str = "0.1.99") -> dict[str, Any]:
    return bundled_document() | {"version": version}


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def configmap_volume(root: Path, files: dict[str, object]) -> Path:
    """What the kubelet mounts for a ConfigMap: the files live in a timestamped ``..`` folder,
    ``..data`` links to it, and each key is a link through ``..data``."""
    root.mkdir()
    stamped = root / "..2026_11_22_09_00_00.123456789"
    stamped.mkdir()
    for name, document in files.items():
        write(stamped / name, document)
    os.symlink(stamped.name, root / "..data")
    for name in files:
        os.symlink(f"..data/{name}", root / name)
    return root


def test_configmap_volume_packs_are_found_once_by_content(tmp_path: Path) -> None:
    """The ``..data`` and ``..<timestamp>`` entries are skipped; the key's link is read once."""
    rules_dir = configmap_volume(tmp_path / "rules", {"any-name.json": new_version()})
    files = pack_files(rules_dir)
    assert files["calf-pain@0.1.99"] == rules_dir / "any-name.json"
    assert set(files) == set(bundled_pack_files()) | {"calf-pain@0.1.99"}


def test_registry_serves_a_pack_from_a_configmap_volume(tmp_path: Path) -> None:
    """A pack from the mounted folder can be the active one."""
    rules_dir = configmap_volume(tmp_path / "rules", {"calf-pain-0.1.99.json": new_version()})
    settings = Settings(data_dir=tmp_path / "data", rules_dir=rules_dir, active_pack="calf-pain@0.1.99")
    assert PackRegistry.load(settings).active.version == "0.1.99"


def test_an_empty_rules_folder_adds_nothing(tmp_path: Path) -> None:
    """The ConfigMap ships with no data: only the bundled packs are served."""
    rules_dir = configmap_volume(tmp_path / "rules", {})
    assert set(pack_files(rules_dir)) == set(bundled_pack_files())


def test_dot_files_and_other_files_are_skipped(tmp_path: Path) -> None:
    """Hidden files (editor or kubelet leftovers) and non-JSON files are not packs."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    write(rules_dir / ".calf-pain.json", {"not": "a pack"})
    (rules_dir / "README.md").write_text("notes", encoding="utf-8")
    (rules_dir / "folder.json").mkdir()
    assert set(pack_files(rules_dir)) == set(bundled_pack_files())


def test_a_file_name_does_not_name_the_pack(tmp_path: Path) -> None:
    """A file called after 0.1.0 that holds 0.1.99 is 0.1.99."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    write(rules_dir / "calf-pain-0.1.0.json", new_version())
    assert pack_files(rules_dir)["calf-pain@0.1.99"].name == "calf-pain-0.1.0.json"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a readable JSON file"),
        ("[1, 2]", "not a JSON object"),
        ('{"id": "calf-pain"}', "no string 'id' and 'version'"),
    ],
)
def test_a_json_file_that_is_not_a_pack_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    """Start-up stops and names the file, rather than failing with a KeyError."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "broken.json").write_text(content, encoding="utf-8")
    with pytest.raises(PackError, match=message) as raised:
        pack_files(rules_dir)
    assert "broken.json" in str(raised.value)


def test_a_released_version_with_other_content_is_refused(tmp_path: Path) -> None:
    """A folder may not replace a bundled version with different rules; an identical copy is fine."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    write(rules_dir / "copy.json", bundled_document())
    assert "calf-pain@0.1.0" in pack_files(rules_dir)
    edited = bundled_document()
    edited["rules"] = edited["rules"][1:]
    write(rules_dir / "copy.json", edited)
    with pytest.raises(PackError, match="never edited"):
        pack_files(rules_dir)


def test_a_missing_rules_folder_is_an_error(tmp_path: Path) -> None:
    """A configured folder that is not there is a configuration mistake, said at start-up."""
    with pytest.raises(PackError, match="does not exist"):
        pack_files(tmp_path / "nowhere")


def test_a_pack_whose_cards_would_link_nowhere_fails_at_load(tmp_path: Path) -> None:
    """A citation URL the card contract refuses (not absolute) fails at start-up, not at a patient."""
    document = new_version()
    first = next(iter(document["citations"]))
    document["citations"][first]["url"] = "guidelines/pad.html"
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    write(rules_dir / "relative.json", document)
    settings = Settings(data_dir=tmp_path / "data", rules_dir=rules_dir, active_pack="calf-pain@0.1.99")
    with pytest.raises(PackError, match="card contract refuses"):
        PackRegistry.load(settings)
