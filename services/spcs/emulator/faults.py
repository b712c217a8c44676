"""Fault injection for reliability tests; everything is off by default.

A fault configuration, as JSON (the admin endpoint's body) and as `FaultConfig`:

* ``transientRate`` (0..1): that fraction of API calls answers a transient
  error without doing anything;
* ``commands``: restrict ``transientRate`` to these command names (empty = all);
* ``delays``: ``{command: seconds}`` to sleep before handling (``"*"`` = every call);
* ``failNext``: ``{command: n}``: the next n calls answer a transient error
  and change nothing;
* ``failAfter``: ``{command: n}``: the next n calls take effect, then answer a
  transient error (the client cannot tell it worked);
* ``errorName``: the error name of injected faults (default ``busy``);
* ``seed``: seed for the random choice, for repeatable runs.

Injected errors always carry ``"transient": true``, which is what makes the
official bindings retry.

``RemoteTransfer`` is a pseudo-command for the background transfer of a snapshot copied from
another location (`spcs.emulator.transfer`), consulted by the *destination* emulator once per
4 MiB chunk; a fault there stops the transfer (the snapshot stays recovering until a
``SnapshotReconcile``), as a dropped link between the locations would:

* ``failAfter: {"RemoteTransfer": n}``: n more chunks get through (0: none), then the
  transfer stops (the link dropped halfway); the setting is used up then;
* ``failNext: {"RemoteTransfer": n}``: each of the next n transfer attempts stops at its
  first chunk.

``transientRate``, ``commands`` and ``delays`` do not apply to transfers (their pace is the
emulator's ``remote_bandwidth``).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

from spcs.emulator.errors import BUSY, ApiError, invalid

REMOTE_TRANSFER = "RemoteTransfer"  # the pseudo-command of transfers between locations


@dataclass
class FaultConfig:
    transient_rate: float = 0.0
    commands: frozenset[str] = frozenset()
    delays: dict[str, float] = field(default_factory=dict)
    fail_next: dict[str, int] = field(default_factory=dict)
    fail_after: dict[str, int] = field(default_factory=dict)
    error_name: str = BUSY
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "transientRate": self.transient_rate,
            "commands": sorted(self.commands),
            "delays": dict(self.delays),
            "failNext": dict(self.fail_next),
            "failAfter": dict(self.fail_after),
            "errorName": self.error_name,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: Any) -> FaultConfig:
        if not isinstance(data, dict):
            raise invalid("the fault configuration must be a JSON object")
        known = {
            "transientRate",
            "commands",
            "delays",
            "failNext",
            "failAfter",
            "errorName",
            "seed",
        }
        unknown = set(data) - known
        if unknown:
            raise invalid(f"unknown fault settings: {', '.join(sorted(unknown))}")
        rate = data.get("transientRate") or 0.0
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise invalid("transientRate must be a number between 0 and 1")
        commands = data.get("commands") or []
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise invalid("commands must be a list of command names")
        error_name = data.get("errorName") or BUSY
        if not isinstance(error_name, str):
            raise invalid("errorName must be a string")
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise invalid("seed must be an integer")
        return cls(
            transient_rate=float(rate),
            commands=frozenset(commands),
            delays=_number_map(data.get("delays"), "delays", float),
            fail_next=_number_map(data.get("failNext"), "failNext", int),
            fail_after=_number_map(data.get("failAfter"), "failAfter", int),
            error_name=error_name,
            seed=seed,
        )


def _number_map(value: Any, what: str, kind: type) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{what} must be an object of command: number")
    out = {}
    for key, num in value.items():
        if isinstance(num, bool) or not isinstance(num, int | float) or num < 0:
            raise invalid(f"{what}[{key}] must be a number >= 0")
        if kind is int and num != int(num):
            raise invalid(f"{what}[{key}] must be an integer")
        out[key] = kind(num)
    return out


class Faults:
    """The live fault state: counters run down as calls consume them."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._rng = random.Random()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed)

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return self._config

    def delay(self, command: str) -> float:
        cfg = self.config
        return cfg.delays.get(command, cfg.delays.get("*", 0.0))

    def before(self, command: str) -> ApiError | None:
        """A fault to answer instead of running `command`, if one is due."""
        with self._lock:
            cfg = self._config
            if cfg.fail_next.get(command, 0) > 0:
                cfg.fail_next[command] -= 1
                return self._error(command, "before")
            applies = not cfg.commands or command in cfg.commands
            if cfg.transient_rate > 0 and applies and self._rng.random() < cfg.transient_rate:
                return self._error(command, "before")
        return None

    def after(self, command: str) -> ApiError | None:
        """A fault to answer although `command` took effect, if one is due."""
        with self._lock:
            cfg = self._config
            if cfg.fail_after.get(command, 0) > 0:
                cfg.fail_after[command] -= 1
                return self._error(command, "after")
        return None

    def transfer_chunk(self, *, first: bool) -> str | None:
        """Why the transfer must stop at this chunk (a ``RemoteTransfer`` fault), or None."""
        with self._lock:
            cfg = self._config
            if first and cfg.fail_next.get(REMOTE_TRANSFER, 0) > 0:
                cfg.fail_next[REMOTE_TRANSFER] -= 1
                return "injected fault: failNext RemoteTransfer"
            if REMOTE_TRANSFER not in cfg.fail_after:
                return None
            if cfg.fail_after[REMOTE_TRANSFER] > 0:
                cfg.fail_after[REMOTE_TRANSFER] -= 1
                return None
            del cfg.fail_after[REMOTE_TRANSFER]  # fires once: a later attempt gets through
            return "injected fault: failAfter RemoteTransfer (the link dropped)"

    def _error(self, command: str, when: str) -> ApiError:
        what = "changed nothing" if when == "before" else "took effect"
        return ApiError(
            self._config.error_name,
            f"injected transient fault in {command} (the call {what})",
            transient=True,
        )
