"""JSON round trip shared by every config dataclass: unknown keys rejected by name, errors prefixed
with the source (file or field) they came from, tuples written as JSON lists."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from MaskMedCore.config.validation import reject_unknown_keys
from MaskMedCore.errors import ConfigError

C = TypeVar("C", bound="JsonConfig")


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class JsonConfig:
    """Mixin for frozen config dataclasses (``config_name`` names them in error messages)."""

    config_name: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], source: str | None = None) -> C:
        """Build from a dict (e.g. parsed JSON); unknown keys are rejected by name."""
        source = source or cls.config_name
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        reject_unknown_keys(data, cls, source)
        try:
            return cls(**data)
        except TypeError as exc:  # a missing required field
            raise ConfigError(f"{source}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls: type[C], text: str, source: str | None = None) -> C:
        source = source or cls.config_name
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source)

    def replace(self: C, **changes: Any) -> C:
        reject_unknown_keys(changes, type(self), f"{type(self).__name__}.replace")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
