"""A shape rule no linter checks: no function of the services is longer than 60 lines (the
generated stubs aside). ruff checks complexity (max 10); every handler's `@rpc` declaration is
checked by tests/contract/test_required_fields.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

SERVICES = Path(__file__).resolve().parents[2] / "services" / "spcs"
MAX_LINES = 60


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in sorted(SERVICES.rglob("*.py")):
        if "v1" in path.relative_to(SERVICES).parts:
            continue  # generated
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    where = f"{path.relative_to(SERVICES)}:{node.lineno}"
                    long.append(f"{where} {node.name} ({lines} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)
