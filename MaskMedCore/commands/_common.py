"""Helpers shared by subcommands."""

from __future__ import annotations

import json

from MaskMedCore.errors import ConfigError


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with value parsed as JSON when possible (``head=pointwise``, ``bridge_layers=2``)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def parse_overrides(items: list[str] | None) -> dict[str, object]:
    return dict(parse_override(t) for t in items or [])
