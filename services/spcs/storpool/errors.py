"""StorPool's error answers as typed domain errors.

A StorPool API error leaves `spcs.storpool.api` as one of these: each is the domain error
(`spcs.common.errors`) whose gRPC status fits the answer, and it also carries StorPool's own
error name and description, so code that must tell "busy" from "objectDoesNotExist" asks
`isinstance(error, StorPoolError)` and reads `error.sp_name` instead of parsing messages.
"""

from __future__ import annotations

from collections.abc import Mapping

from spcs.common import errors


class StorPoolError(errors.SpcsError):
    """An error StorPool answered: its name (`objectExists`, `busy`, ...) and description."""

    def __init__(self, message: str, *, sp_name: str, sp_desc: str) -> None:
        super().__init__(message, reason=f"STORPOOL_{_snake(sp_name)}")
        self.sp_name = sp_name
        self.sp_desc = sp_desc


class StorPoolNotFound(StorPoolError, errors.NotFound):
    pass


class StorPoolExists(StorPoolError, errors.AlreadyExists):
    pass


class StorPoolBusy(StorPoolError, errors.FailedPrecondition):
    pass


class StorPoolInvalid(StorPoolError, errors.InvalidArgument):
    pass


class StorPoolNoSpace(StorPoolError, errors.ResourceExhausted):
    pass


class StorPoolDenied(StorPoolError, errors.PermissionDenied):
    pass


class StorPoolInternal(StorPoolError, errors.Internal):
    pass


# StorPool error name → its class; names not listed are StorPoolInternal.
BY_NAME: Mapping[str, type[StorPoolError]] = {
    "objectDoesNotExist": StorPoolNotFound,
    "objectExists": StorPoolExists,
    "busy": StorPoolBusy,
    "invalidParam": StorPoolInvalid,
    "insufficientResources": StorPoolNoSpace,
    "authFailed": StorPoolDenied,
    "invalidAuth": StorPoolDenied,
    "notAuthorized": StorPoolDenied,
}


def error_class(sp_name: str, http_status: int) -> type[StorPoolError]:
    if http_status in (401, 403):
        return StorPoolDenied
    return BY_NAME.get(sp_name, StorPoolInternal)


def answered(endpoint: str, what: str, name: str, desc: str, http_status: int) -> StorPoolError:
    """StorPool's error answer (`name`, `desc`, over HTTP `http_status`) to the facade's call
    `what` at `endpoint`, as its typed error with the facade's message."""
    cls = error_class(name, http_status)
    if issubclass(cls, errors.PermissionDenied):
        message = (
            f"StorPool API at {endpoint} refused the token for {what} "
            f"({name}: {desc}); check SP_AUTH_TOKEN"
        )
    else:
        message = f"StorPool: {what}: {desc} ({name})"
    return cls(message, sp_name=name, sp_desc=desc)


def kept_transient(endpoint: str, what: str, name: str, desc: str) -> errors.Unavailable:
    """StorPool kept answering the transient error `name`/`desc` until the retries ran out."""
    return errors.Unavailable(
        f"StorPool API at {endpoint} kept answering a transient error for "
        f"{what} ({name}: {desc}); retry later"
    )


def is_busy(error: errors.SpcsError) -> bool:
    """StorPool refused because the object is in use (open on a host, being moved)."""
    return isinstance(error, StorPoolError) and (
        error.sp_name == "busy" or "is open at" in error.sp_desc
    )


def _snake(name: str) -> str:
    out: list[str] = []
    for char in name:
        if char.isupper() and out:
            out.append("_")
        out.append(char.upper())
    return "".join(out) or "UNKNOWN"
