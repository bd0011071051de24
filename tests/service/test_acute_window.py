"""A rule pack may ask the mapper for its own acute-diagnosis window (``mapping.acute_window_days``)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from rules.pack import RulePack
from service.hooks.packs import acute_window


def pack_with(document: dict[str, Any]) -> RulePack:
    return cast(RulePack, SimpleNamespace(document=document))


def test_a_pack_sets_the_acute_window() -> None:
    """`mapping.acute_window_days: 45` gives the mapper a 45-day acute window."""
    assert acute_window(pack_with({"mapping": {"acute_window_days": 45}})) == timedelta(days=45)


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"mapping": {}},
        {"mapping": {"acute_window_days": 0}},
        {"mapping": {"acute_window_days": True}},
        {"mapping": {"acute_window_days": "30"}},
        {"mapping": "30"},
    ],
)
def test_no_or_a_nonsense_window_leaves_the_vocabulary_default(document: dict[str, Any]) -> None:
    """Without a usable number the vocabulary's window (30 days) applies."""
    assert acute_window(pack_with(document)) is None
