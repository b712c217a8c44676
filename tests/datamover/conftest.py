"""Fixtures for the data mover tests: image builders with qemu-img/qemu-io as the judge."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MiB = 1 << 20

requires_qemu = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="qemu-img/qemu-io are the judge of these tests",
)


def qemu_img(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True, text=True)


def qemu_io(path: Path, *commands: str, fmt: str = "qcow2") -> None:
    args = ["qemu-io", "-f", fmt]
    for c in commands:
        args += ["-c", c]
    subprocess.run([*args, str(path)], check=True, capture_output=True, text=True)


def assert_same(a: Path, b: Path) -> None:
    """`qemu-img compare` (strict size check off, like qemu: extra bytes must be zero)."""
    r = subprocess.run(["qemu-img", "compare", str(a), str(b)], capture_output=True, text=True)
    assert r.returncode == 0, f"qemu-img compare {a} {b}: {r.stdout}{r.stderr}"


def assert_clean_qcow2(path: Path) -> dict[str, object]:
    """`qemu-img check`: no corruptions, no leaks, no errors."""
    r = subprocess.run(
        ["qemu-img", "check", "--output=json", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 0, f"qemu-img check {path} exited {r.returncode}: {r.stdout}{r.stderr}"
    doc: dict[str, object] = json.loads(r.stdout)
    for key in ("corruptions", "leaks", "check-errors", "corruptions-fixed", "leaks-fixed"):
        assert not doc.get(key), f"qemu-img check {path}: {key}={doc.get(key)}"
    return doc


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def sha256_of_virtual(path: Path, tmp: Path) -> str:
    """SHA-256 of the virtual disk as qemu-img reads it.

    A raw image's virtual disk is the file itself (byte-exact; qemu would pad an odd-sized
    file to whole sectors), so raw files are hashed directly.
    """
    fmt = json.loads(qemu_img("info", "--output=json", path).stdout)["format"]
    if fmt == "raw":
        return sha256_file(path)
    out = tmp / f"{path.name}.judge.raw"
    qemu_img("convert", "-O", "raw", path, out)
    digest = sha256_file(out)
    out.unlink()
    return digest


def write_pattern(path: Path, size: int, seed: int, holes: bool = True) -> None:
    """A raw image of `size` bytes: hex text, random bytes, written zeros and holes."""
    rng = random.Random(seed)
    with path.open("wb") as f:
        f.truncate(size)
        at = 0
        while at < size:
            run = min(rng.randrange(4096, 400_000), size - at)
            kind = rng.randrange(4)
            if kind == 0:
                f.seek(at)
                f.write(rng.randbytes(run // 2 + 1).hex().encode()[:run])
            elif kind == 1:
                f.seek(at)
                f.write(rng.randbytes(run))
            elif kind == 2 or not holes:
                f.seek(at)
                f.write(bytes(run))
            at += run


@pytest.fixture
def pattern() -> Callable[..., None]:
    return write_pattern


@pytest.fixture
def loop_over() -> Iterator[Callable[[Path], Path]]:
    """Attaches a loop device over a file (what a StorPool volume is on a host); every device
    is detached at the end of the test. Skips without root or losetup."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup")
    devices: list[str] = []

    def attach(backing: Path) -> Path:
        r = subprocess.run(
            ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True
        )
        if r.returncode != 0:
            pytest.skip(f"no loop device: {r.stderr.strip()}")
        devices.append(r.stdout.strip())
        return Path(devices[-1])

    yield attach
    for dev in devices:
        subprocess.run(["losetup", "-d", dev], check=False)
