"""A stand-in for Slicer's application settings (``slicer.app.settings()``, a Qt ``QSettings``).

It keeps what ``QSettings`` does that callers must cope with: ``value`` of a missing key is None, and a
list of one string is read back as that plain string (QSettings' INI format stores no one-element list).
"""

from __future__ import annotations


class MemorySettings:
    def __init__(self, values: dict | None = None) -> None:
        self.values = dict(values or {})

    def value(self, key: str, default=None):
        stored = self.values.get(key, default)
        if isinstance(stored, list) and len(stored) == 1:
            return stored[0]
        return stored

    def setValue(self, key: str, value) -> None:  # noqa: N802 - Qt's name
        self.values[key] = list(value) if isinstance(value, (list, tuple)) else value
