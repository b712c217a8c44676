"""Test helpers that start nothing (tests/stacks.py starts services): the checkout, spcs commands
run to completion, service logs, and the bytes tests write and compare."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPCS = [sys.executable, "-m", "spcs.cli"]


def log_containing(path: Path, text: str, timeout: float = 5.0) -> str:
    """A service's log once `text` is in it (or the timeout passed): a service writes its log
    from a queue, up to spcs.common.logs.WRITE_INTERVAL after the line was logged."""
    deadline = time.monotonic() + timeout
    while True:
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.02)


def run_spcs(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SPCS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# ---- data ---------------------------------------------------------------------------------------


def pattern(seed: int, length: int) -> bytes:
    """`length` recognisable bytes, different for every seed (SHA-256 of seed and counter)."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:length])


def patterned_raw(path: Path, size: int, chunks: dict[int, bytes]) -> Path:
    """A sparse raw image of `size` with `chunks` (offset → bytes) written into it."""
    with path.open("wb") as handle:
        handle.truncate(size)
        for offset, data in chunks.items():
            handle.seek(offset)
            handle.write(data)
    return path


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


def same_content(a: Path, b: Path, a_format: str = "raw", b_format: str = "raw") -> bool:
    result = subprocess.run(
        ["qemu-img", "compare", "-f", a_format, "-F", b_format, str(a), str(b)],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0
