"""Units of sensor readings: conversion (declared per sensor, e.g. a thermometer that reports °F on a
site that reads °C) and plausible ranges, checked at the edge before a reading is sent. Pure.

Each unit is a linear map onto its dimension's base unit: ``base = value * factor + offset``.
"""

from __future__ import annotations

import math

# name -> (dimension, factor, offset) onto the dimension's base unit
_UNITS: dict[str, tuple[str, float, float]] = {
    "C": ("temperature", 1.0, 273.15),
    "F": ("temperature", 5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0),
    "K": ("temperature", 1.0, 0.0),
    "%": ("ratio", 0.01, 0.0),
    "fraction": ("ratio", 1.0, 0.0),
    "ppm": ("concentration", 1.0, 0.0),
    "ppb": ("concentration", 0.001, 0.0),
    "Pa": ("pressure", 1.0, 0.0),
    "hPa": ("pressure", 100.0, 0.0),
    "mbar": ("pressure", 100.0, 0.0),
    "kPa": ("pressure", 1000.0, 0.0),
    "bar": ("pressure", 100_000.0, 0.0),
    "psi": ("pressure", 6894.757293168, 0.0),
    "W": ("power", 1.0, 0.0),
    "kW": ("power", 1000.0, 0.0),
    "MW": ("power", 1_000_000.0, 0.0),
    "V": ("voltage", 1.0, 0.0),
    "mV": ("voltage", 0.001, 0.0),
    "A": ("current", 1.0, 0.0),
    "mA": ("current", 0.001, 0.0),
    "m": ("length", 1.0, 0.0),
    "cm": ("length", 0.01, 0.0),
    "mm": ("length", 0.001, 0.0),
    "ft": ("length", 0.3048, 0.0),
    "in": ("length", 0.0254, 0.0),
    "m/s": ("speed", 1.0, 0.0),
    "km/h": ("speed", 1 / 3.6, 0.0),
    "mph": ("speed", 0.44704, 0.0),
    "lx": ("illuminance", 1.0, 0.0),
    "dB": ("sound", 1.0, 0.0),
    "s": ("time", 1.0, 0.0),
    "min": ("time", 60.0, 0.0),
    "h": ("time", 3600.0, 0.0),
}
_ALIASES = {"°C": "C", "degC": "C", "celsius": "C", "°F": "F", "degF": "F", "fahrenheit": "F", "kelvin": "K",
            "percent": "%", "%RH": "%", "watt": "W", "lux": "lx"}

# Values outside these (in the unit named) are not physical readings of a security site's sensors.
# A sensor's own min/max narrow them.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "C": (-90.0, 1200.0), "F": (-130.0, 2200.0), "K": (183.0, 1473.0), "%": (0.0, 100.0), "fraction": (0.0, 1.0),
    "ppm": (0.0, 1_000_000.0), "ppb": (0.0, 1e9), "hPa": (0.0, 2000.0), "mbar": (0.0, 2000.0), "Pa": (0.0, 2e7),
    "kPa": (0.0, 20_000.0), "bar": (0.0, 200.0), "psi": (0.0, 3000.0), "W": (-1e9, 1e9), "kW": (-1e6, 1e6),
    "lx": (0.0, 200_000.0), "dB": (-20.0, 250.0),
}


class UnitError(ValueError):
    pass


def canonical_unit(unit: str) -> str:
    """The unit's standard spelling; "" (no unit: counts, switches) stays "". Unknown units are an
    error only where a conversion needs them (a sensor may send any unit as it is)."""
    u = unit.strip()
    return _ALIASES.get(u, u)


def convert(value: float, from_unit: str, to_unit: str) -> float:
    a, b = canonical_unit(from_unit), canonical_unit(to_unit)
    if a == b:
        return value
    if a not in _UNITS or b not in _UNITS:
        unknown = a if a not in _UNITS else b
        raise UnitError(f"cannot convert {from_unit!r} to {to_unit!r}: unknown unit {unknown!r}; "
                        f"known: {', '.join(sorted(_UNITS))}")
    da, fa, oa = _UNITS[a]
    db, fb, ob = _UNITS[b]
    if da != db:
        raise UnitError(f"cannot convert {from_unit!r} ({da}) to {to_unit!r} ({db})")
    return ((value * fa + oa) - ob) / fb


class BadReading(ValueError):
    """A reading refused at the edge; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_value(value: float, unit: str, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` if it is finite and plausible for ``unit`` (and within ``lo``..``hi`` when given)."""
    if not isinstance(value, (int, float)):
        raise BadReading("bad_value", f"{value!r} is not a number")
    v = float(value)
    if not math.isfinite(v):
        raise BadReading("not_finite", f"value {v} is not a finite number")
    plo, phi = PLAUSIBLE.get(canonical_unit(unit), (-math.inf, math.inf))
    lo = plo if lo is None else max(lo, plo)
    hi = phi if hi is None else min(hi, phi)
    if not lo <= v <= hi:
        raise BadReading("out_of_range", f"value {v:g} {unit} is outside the plausible range {lo:g}..{hi:g}")
    return v
