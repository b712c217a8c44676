"""Destination rules: in place for existing raw targets, temp + rename for new files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from spcs import datamover

from .conftest import MiB, assert_same, qemu_img, requires_qemu, write_pattern

pytestmark = pytest.mark.fast


def _garbage(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.write(b"\xee" * size)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".spcs-partial." in p.name)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    p = tmp_path / "src.raw"
    write_pattern(p, 8 * MiB + 4096, seed=11)
    return p


def test_in_place_file_is_zeroed_where_source_is_zero(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "vol"
    _garbage(dst, 12 * MiB)
    ino = dst.stat().st_ino
    datamover.convert(src, dst)
    assert dst.stat().st_ino == ino, "in-place target must not be replaced"
    assert dst.stat().st_size == 12 * MiB, "in-place target must not be truncated"
    data = dst.read_bytes()
    assert data[: src.stat().st_size] == src.read_bytes()
    assert data[src.stat().st_size :] == b"\xee" * (12 * MiB - src.stat().st_size)


def test_in_place_target_is_zero_leaves_zero_regions_alone(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "vol"
    _garbage(dst, src.stat().st_size)
    datamover.convert(src, dst, target_is_zero=True)
    source, out = src.read_bytes(), dst.read_bytes()
    for i in range(0, len(source), 4096):
        block = source[i : i + 4096]
        if any(block):
            assert out[i : i + 4096] == block
        else:
            assert out[i : i + 4096] == b"\xee" * len(block)


def test_symlink_to_file_is_written_in_place(src: Path, tmp_path: Path) -> None:
    real = tmp_path / "backing-file"
    _garbage(real, 9 * MiB)
    link = tmp_path / "storpool-byid-x"
    link.symlink_to(real)
    datamover.convert(src, link)
    assert link.is_symlink()
    assert real.read_bytes()[: src.stat().st_size] == src.read_bytes()


def test_target_too_small_writes_nothing(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "small"
    _garbage(dst, MiB)
    with pytest.raises(datamover.TargetTooSmall) as e:
        datamover.convert(src, dst)
    assert str(dst) in str(e.value)
    assert e.value.path == str(dst)
    assert not e.value.target_partial
    assert dst.read_bytes() == b"\xee" * MiB


def test_existing_destination_for_qcow2_needs_overwrite(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.qcow2"
    dst.write_bytes(b"keep me")
    with pytest.raises(datamover.TargetExists):
        datamover.convert(src, dst, dst_format="qcow2")
    assert dst.read_bytes() == b"keep me"
    datamover.convert(src, dst, dst_format="qcow2", overwrite=True)
    assert datamover.info(dst).format == "qcow2"
    assert _leftovers(tmp_path) == []


def test_overwrite_through_symlink_keeps_the_link(src: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.qcow2"
    real.write_bytes(b"old")
    link = tmp_path / "link.qcow2"
    link.symlink_to(real)
    datamover.convert(src, link, dst_format="qcow2", overwrite=True)
    assert link.is_symlink()
    assert datamover.info(real).format == "qcow2"


def test_directory_destination(src: Path, tmp_path: Path) -> None:
    with pytest.raises(datamover.TargetExists):
        datamover.convert(src, tmp_path)


def test_same_file_is_refused(src: Path) -> None:
    with pytest.raises(ValueError, match="same file"):
        datamover.convert(src, src)


def test_failed_copy_leaves_nothing(tmp_path: Path) -> None:
    # A qcow2 whose second half points past the end of the file: fails mid-copy.
    bad = tmp_path / "bad.qcow2"
    good = tmp_path / "good.raw"
    write_pattern(good, 16 * MiB, seed=2, holes=False)
    datamover.convert(good, bad, dst_format="qcow2")
    with bad.open("r+b") as f:
        f.truncate(bad.stat().st_size // 2)
    out = tmp_path / "out"
    out.mkdir()
    for fmt in ("raw", "qcow2"):
        with pytest.raises(datamover.FormatError) as e:
            datamover.convert(bad, out / f"x.{fmt}", dst_format=fmt)  # type: ignore[arg-type]
        assert str(bad) in str(e.value)
    assert list(out.iterdir()) == []


def test_missing_destination_directory(src: Path, tmp_path: Path) -> None:
    with pytest.raises(datamover.IoError) as e:
        datamover.convert(src, tmp_path / "nope" / "x.raw")
    assert "nope" in str(e.value)


def test_new_file_destination_is_exact_size(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "new.raw"
    stats = datamover.convert(src, dst)
    assert dst.stat().st_size == src.stat().st_size
    assert dst.read_bytes() == src.read_bytes()
    assert stats.bytes_written + stats.bytes_skipped == stats.virtual_size


@pytest.mark.parametrize("direct", [True, False])
def test_direct_modes(src: Path, tmp_path: Path, direct: bool) -> None:
    dst = tmp_path / f"d{direct}.raw"
    datamover.convert(src, dst, direct=direct)
    assert dst.read_bytes() == src.read_bytes()


# ------------------------------------------------------------------ block devices


@pytest.fixture
def loop_device(tmp_path: Path, loop_over: Callable[[Path], Path]) -> Path:
    backing = tmp_path / "loop-backing"
    _garbage(backing, 12 * MiB)
    return loop_over(backing)


@pytest.mark.root
@requires_qemu
@pytest.mark.parametrize("target_is_zero", [False, True])
def test_block_device_in_place(
    src: Path, tmp_path: Path, loop_device: Path, target_is_zero: bool
) -> None:
    q = tmp_path / "src.qcow2"
    qemu_img("convert", "-O", "qcow2", "-c", src, q)
    link = tmp_path / "byid"
    link.symlink_to(loop_device)
    stats = datamover.convert(q, link, target_is_zero=target_is_zero, checksum="sha256")
    assert link.is_symlink() and loop_device.is_block_device()
    with loop_device.open("rb") as f:
        data = f.read(12 * MiB)
    source = src.read_bytes()
    n = len(source)
    if target_is_zero:
        for i in range(0, n, 4096):
            block = source[i : i + 4096]
            expect = block if any(block) else b"\xee" * len(block)
            assert data[i : i + 4096] == expect
    else:
        assert data[:n] == source
    assert data[n:] == b"\xee" * (12 * MiB - n)
    assert stats.checksum is not None


@pytest.mark.root
def test_block_device_too_small(src: Path, loop_device: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.raw"
    write_pattern(big, 16 * MiB, seed=4)
    with pytest.raises(datamover.TargetTooSmall):
        datamover.convert(big, loop_device)
    with loop_device.open("rb") as f:
        assert f.read(MiB) == b"\xee" * MiB


@pytest.mark.root
@requires_qemu
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_block_device_as_source(
    tmp_path: Path, loop_over: Callable[[Path], Path], cache: str
) -> None:
    """A device read cold goes O_DIRECT, a warm one from the page cache: same bytes either way."""
    backing = tmp_path / "volume"
    _garbage(backing, 12 * MiB)
    dev = loop_over(backing)
    with dev.open("rb") as held:  # the device's page cache lives while it is open
        if cache == "warm":
            while held.read(MiB):
                pass
        else:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("1\n")
        out = tmp_path / "out.qcow2"
        stats = datamover.convert(dev, out, src_format="raw", dst_format="qcow2")
    assert stats.bytes_read == 12 * MiB
    assert_same(backing, out)
