"""UCUM unit conversion for the handful of quantities the rules read.

Each unit maps to (dimension, factor to the dimension's base unit). Units we do not know are
refused rather than guessed: an unconvertible value is "not documented", never a wrong number.
"""

from __future__ import annotations

__all__ = ["convert", "known"]

_UNITS: dict[str, tuple[str, float]] = {
    # mass concentration, base ng/mL
    "ng/mL": ("mass-concentration", 1.0),
    "ng/L": ("mass-concentration", 0.001),
    "ug/L": ("mass-concentration", 1.0),
    "µg/L": ("mass-concentration", 1.0),
    "ug/mL": ("mass-concentration", 1000.0),
    "µg/mL": ("mass-concentration", 1000.0),
    "mg/L": ("mass-concentration", 1000.0),
    "mg/dL": ("mass-concentration", 10000.0),
    # length, base cm
    "mm": ("length", 0.1),
    "cm": ("length", 1.0),
    "m": ("length", 100.0),
    "km": ("length", 100000.0),
    "[in_i]": ("length", 2.54),
    # time, base min
    "s": ("time", 1 / 60),
    "min": ("time", 1.0),
    "h": ("time", 60.0),
    "d": ("time", 1440.0),
    "wk": ("time", 10080.0),
    "mo": ("time", 43830.0),
    # ratio, base 1
    "1": ("ratio", 1.0),
    "{ratio}": ("ratio", 1.0),
    "{index}": ("ratio", 1.0),
    # pressure, base mm[Hg]
    "mm[Hg]": ("pressure", 1.0),
    # score, base {score}
    "{score}": ("score", 1.0),
}

_TEMPERATURE = {"Cel", "[degF]"}


def known(unit: str) -> bool:
    """True when ``unit`` (a UCUM code) can be converted."""
    return unit in _UNITS or unit in _TEMPERATURE


def convert(value: float, from_unit: str, to_unit: str) -> float | None:
    """``value`` in ``from_unit`` expressed in ``to_unit``; None when the two are not convertible."""
    if from_unit == to_unit:
        return value
    if from_unit in _TEMPERATURE and to_unit in _TEMPERATURE:
        return (value - 32) * 5 / 9 if from_unit == "[degF]" else value * 9 / 5 + 32
    source, target = _UNITS.get(from_unit), _UNITS.get(to_unit)
    if source is None or target is None or source[0] != target[0]:
        return None
    return value * source[1] / target[1]
