"""Small validators shared by every config dataclass; each raises ConfigError naming the field."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from MaskMedCore.errors import ConfigError


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} is {value!r}; expected one of {', '.join(repr(c) for c in choices)}")


def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_triplets(name: str, value: Any) -> tuple[tuple[int, int, int], ...]:
    """Normalise a sequence of (D, H, W) integer triplets to a tuple of tuples."""
    try:
        out = tuple(tuple(int(v) for v in t) for t in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of [D, H, W] integer triplets, got {value!r}") from None
    for t in out:
        if len(t) != 3 or any(v <= 0 for v in t):
            raise ConfigError(f"{name} must be a list of positive [D, H, W] triplets, got entry {list(t)}")
    return out  # type: ignore[return-value]


def reject_unknown_keys(data: Mapping[str, Any], cls: type, source: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown}; known fields are {sorted(known)}")
