"""Fixtures: an in-process emulator with two emulated client hosts, and the official bindings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spcs.emulator import Emulator

from .helpers import TOKEN

MiB = 1 << 20
GiB = 1 << 30


@pytest.fixture
def roots(tmp_path: Path) -> dict[int, Path]:
    return {1: tmp_path / "host1", 2: tmp_path / "host2"}


@pytest.fixture
def emu(tmp_path: Path, roots: dict[int, Path]) -> Iterator[Emulator]:
    emulator = Emulator(
        tmp_path / "data",
        token=TOKEN,
        clients=roots,
        templates={"hybrid": None, "small": 4 * MiB},
    )
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop(release_devices=True)


@pytest.fixture
def api(emu: Emulator) -> Any:
    """spapi.Api(host, port, auth, multiCluster=True), no retries unless a test asks."""
    return emu.api(transientRetries=0)
