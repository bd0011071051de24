"""rules and fhir_mappings meet through the fact vocabulary: every fact a pack reads is produced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_mappings.facts import vocabulary
from rules.pack import bundled_pack_files, load_pack

TYPES = {name: kind for name, (kind, _) in vocabulary().types().items()}


@pytest.mark.parametrize("key", sorted(bundled_pack_files()))
def test_every_fact_a_pack_reads_is_produced_with_its_type(key: str) -> None:
    """Loading compiles every expression against the vocabulary, type by type."""
    path: Path = bundled_pack_files()[key]
    pack = load_pack(json.loads(path.read_text()), TYPES)
    assert pack.fact_names() <= set(TYPES)


def test_every_value_set_a_fact_reads_exists() -> None:
    """Building the mapper checks every source's value set against the bundled terminology."""
    from fhir_mappings.mapper import Mapper
    from fhir_mappings.terminology import bundled_terminology

    Mapper(vocabulary(), bundled_terminology())
