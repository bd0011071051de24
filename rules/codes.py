"""The codes rule packs speak in — card topics, indicators and patterns — each written once, here.

A pack's rules name them (the pack schema takes its enums from these classes when it loads), the
engine's safety invariants use them, and the service builds cards, override reasons, explanation
pages and the governance report from them. Adding a card topic is one :class:`Topic` member, with
its display, plus the pack content that uses it: every table keyed by topic has a default for a
topic it does not list (``tests/service/test_new_topic.py`` adds one and follows it through).

Two copies live where this package may not be imported, each kept equal to these by a test
(``tests/rules/test_codes.py``): the published CodeSystem
``fhir_mappings/data/CodeSystem-recommendation.json`` (its codes are the topics) and the CDS Hooks
protocol's own ``cds_hooks.models.Indicator``.

The members are ``StrEnum`` members: each *is* its code (``Topic.ABI == "abi"``, ``f"{Topic.ABI}"``
is ``abi``), so JSON, SQL and string comparisons see the code itself.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Indicator", "Pattern", "Topic"]


class Topic(StrEnum):
    """What a card recommends: its ``source.topic`` code in ``http://calf-cds.org/fhir/CodeSystem/recommendation``.

    ``display`` is the Coding's display on the card and the topic's name on the explanation page.
    Codes are at most 32 characters (the audit trail's ``topic`` column).
    """

    display: str

    # ``display`` defaults only so that a type checker accepts the by-value lookup ``Topic("abi")``
    # (which never calls this method); every member declares one, and a test checks it.
    def __new__(cls, code: str, display: str = "") -> Topic:
        member = str.__new__(cls, code)
        member._value_ = code
        member.display = display
        return member

    ABI = "abi", "ABI-family physiological testing"
    DUPLEX_DVT = "duplex-dvt", "DVT work-up (ultrasound and/or D-dimer)"
    CONSERVATIVE = "conservative", "Conservative care with a safety net"
    URGENT_REFERRAL = "urgent-referral", "Urgent referral for a red flag"
    LUMBAR_IMAGING = "lumbar-imaging", "Lumbar spine imaging"


class Indicator(StrEnum):
    """How urgent a card is (CDS Hooks ``Card.indicator``), least urgent first."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def urgency(self) -> int:
        """0 for info, 1 for warning, 2 for critical: cards are shown most urgent first."""
        return list(Indicator).index(self)


class Pattern(StrEnum):
    """The clinical pattern a card addresses, and the overall pattern of an assessment."""

    ARTERIAL = "arterial"
    VENOUS = "venous"
    NEUROGENIC = "neurogenic"
    MUSCULOSKELETAL = "musculoskeletal"
    INDETERMINATE = "indeterminate"
