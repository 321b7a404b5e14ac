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


def check_triplets(name: str, value: Any, dims: tuple[int, ...] = (3,)) -> tuple[tuple[int, ...], ...]:
    """Normalise a sequence of per-axis integer tuples ((D, H, W) triplets, or (H, W) pairs where ``dims``
    allows 2) to a tuple of tuples, all of one length."""
    try:
        out = tuple(tuple(int(v) for v in t) for t in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of [D, H, W] integer triplets, got {value!r}") from None
    what = " or ".join({2: "[H, W] pairs", 3: "[D, H, W] triplets"}[d] for d in dims)
    for t in out:
        if len(t) not in dims or any(v <= 0 for v in t):
            raise ConfigError(f"{name} must be a list of positive {what}, got entry {list(t)}")
    if len({len(t) for t in out}) > 1:
        raise ConfigError(f"{name} mixes entries of different lengths {[list(t) for t in out]}; use one length")
    return out


def reject_unknown_keys(data: Mapping[str, Any], cls: type, source: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {unknown}; known fields are {sorted(known)}")
