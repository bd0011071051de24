"""Errors raised by rule packs and their evaluator.

::

    RuleError
    └── PackError           a pack fails its schema or its checks at load (carries pack, version, pointer)
        └── UnknownFactError    a rule reads a fact the vocabulary does not produce, or with the wrong type

Packs are checked when they load so that a bad rule fails there, never at a patient. Evaluation
raises nothing: a rule that fails on a patient's facts is recorded in the assessment's ``errors``
(and a failing red-flag rule still gives a critical card; ``rules.engine``).
"""

from __future__ import annotations

__all__ = ["PackError", "RuleError", "UnknownFactError"]


class RuleError(Exception):
    """Base of every error this package raises."""


class PackError(RuleError):
    """A rule pack is invalid; ``pointer`` is a JSON pointer into the pack."""

    def __init__(self, message: str, *, pack: str = "", version: str = "", pointer: str = "") -> None:
        where = f"{pack}@{version}{pointer and ' at ' + pointer}" if pack else pointer
        super().__init__(f"{message} ({where})" if where else message)
        self.pack = pack
        self.version = version
        self.pointer = pointer


class UnknownFactError(PackError):
    """A rule reads a fact that is not in the declared vocabulary, or reads it as the wrong type."""

    def __init__(self, message: str, *, fact: str, pointer: str = "") -> None:
        super().__init__(message, pointer=pointer)
        self.fact = fact
