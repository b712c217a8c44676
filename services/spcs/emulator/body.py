"""Request bodies: a JSON object in which ``null`` means "absent" (Java clients send nulls)."""

from __future__ import annotations

from typing import Any

from spcs.emulator.errors import invalid

_MISSING = object()


class Body:
    def __init__(self, data: Any, what: str = "the request body") -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise invalid(f"{what} must be a JSON object")
        self._data = {k: v for k, v in data.items() if v is not None}

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def require(self, key: str) -> Any:
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            raise invalid(f"{key} is required")
        return value
