"""The StorPool error envelope and the error names the emulator answers with.

Defined once in `spcs.storpool.rules` (shared with the in-memory fake,
`spcs.storpool.memory`) and re-exported here under the emulator's names.
"""

from __future__ import annotations

from spcs.storpool.rules import (
    BUSY,
    INSUFFICIENT_RESOURCES,
    INTERNAL_ERROR,
    INVALID_PARAM,
    NOT_AUTHORIZED,
    OBJECT_DOES_NOT_EXIST,
    OBJECT_EXISTS,
    ApiError,
    busy,
    exists,
    invalid,
    no_space,
    not_found,
)

__all__ = [
    "BUSY",
    "INSUFFICIENT_RESOURCES",
    "INTERNAL_ERROR",
    "INVALID_PARAM",
    "NOT_AUTHORIZED",
    "OBJECT_DOES_NOT_EXIST",
    "OBJECT_EXISTS",
    "ApiError",
    "busy",
    "exists",
    "invalid",
    "no_space",
    "not_found",
]
