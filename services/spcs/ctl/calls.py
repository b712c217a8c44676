"""What every `spcs ctl` command shares: its exit codes, and calls that turn a gRPC error
into a message for the user with the exit code scripts rely on."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import grpc

OK, ANSWERED_ERROR, USAGE, UNREACHABLE = 0, 1, 2, 3
UNREACHABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Refused(Exception):
    """Something to tell the user, and the exit code that goes with it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Ctl:
    args: argparse.Namespace
    channel: grpc.Channel
    out: TextIO

    @property
    def timeout(self) -> float:
        return float(self.args.timeout)

    def call(self, method: Callable[..., object], request: object) -> object:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            details: str = error.details() or ""
            exit_code = UNREACHABLE if code in UNREACHABLE_CODES else ANSWERED_ERROR
            where = f" ({self.args.management})" if exit_code == UNREACHABLE else ""
            raise Refused(f"{code.name}{where}: {details}", exit_code) from None
