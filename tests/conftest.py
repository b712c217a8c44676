"""Shared fixtures (helpers live in tests/support.py)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stacks import Service


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    """Services started through this list are stopped (and checked to exit) at teardown."""
    started: list[Service] = []
    yield started
    for service in started:
        if service.popen.poll() is None:
            service.popen.send_signal(signal.SIGTERM)
            try:
                service.popen.wait(15)
            except subprocess.TimeoutExpired:
                service.popen.kill()
