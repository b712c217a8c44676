"""The StorPool error envelope and the error names the emulator answers with.

The real API answers errors as ``{"error": {"name", "descr", "transient"}}``.
The names below are the ones real clients branch on (storpool-api.md §1.6);
``notAuthorized`` and ``internalError`` are emulator-specific, because the
material does not say what the real server answers for a bad token or a bug.
"""

from __future__ import annotations

from typing import Any

OBJECT_DOES_NOT_EXIST = "objectDoesNotExist"
OBJECT_EXISTS = "objectExists"
BUSY = "busy"
INVALID_PARAM = "invalidParam"
INSUFFICIENT_RESOURCES = "insufficientResources"
# Emulator-specific names (no source documents the real ones).
NOT_AUTHORIZED = "notAuthorized"
INTERNAL_ERROR = "internalError"


class ApiError(Exception):
    """An error that becomes a StorPool error envelope on the wire."""

    def __init__(self, name: str, descr: str, *, transient: bool = False) -> None:
        super().__init__(f"{name}: {descr}")
        self.name = name
        self.descr = descr
        self.transient = transient

    def envelope(self) -> dict[str, Any]:
        return {"error": {"name": self.name, "descr": self.descr, "transient": self.transient}}


def not_found(what: str) -> ApiError:
    return ApiError(OBJECT_DOES_NOT_EXIST, f"{what} does not exist")


def exists(what: str) -> ApiError:
    return ApiError(OBJECT_EXISTS, f"{what} already exists")


def busy(descr: str) -> ApiError:
    return ApiError(BUSY, descr)


def invalid(descr: str) -> ApiError:
    return ApiError(INVALID_PARAM, descr)


def no_space(descr: str) -> ApiError:
    return ApiError(INSUFFICIENT_RESOURCES, descr)
