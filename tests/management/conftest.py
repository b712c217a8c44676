"""A whole spcs stack (emulator with two KVM hosts, management, two nodes) for the management
suite: tests/management/helpers.py's `running_stack` over tests/stacks.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.management.helpers import Mgmt, running_stack


@pytest.fixture(scope="module")
def mgmt(tmp_path_factory) -> Iterator[Mgmt]:
    """One stack for a whole test module (tests use fresh uuids)."""
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Mgmt]:
    """A stack of its own, for tests that kill or restart services."""
    with running_stack(tmp_path) as stack:
        yield stack
