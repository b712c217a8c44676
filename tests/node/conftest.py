"""A StorPool emulator with two client hosts and a real `spcs node` process for host 1
(tests/stacks.py's `node_stack`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stacks import NodeStack, node_stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[NodeStack]:
    with node_stack(tmp_path) as running:
        yield running


@pytest.fixture
def node(stack: NodeStack) -> NodeStack:
    stack.start_node()
    return stack
