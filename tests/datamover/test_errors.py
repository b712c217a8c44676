"""Bad inputs: each gives a typed error naming the file, never a crash or a stray file."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from spcs import datamover

from .conftest import MiB, qemu_img, requires_qemu, write_pattern

pytestmark = pytest.mark.fast


@pytest.fixture
def good_qcow2(tmp_path: Path) -> Path:
    raw = tmp_path / "base.raw"
    write_pattern(raw, 4 * MiB, seed=8)
    q = tmp_path / "good.qcow2"
    datamover.convert(raw, q, dst_format="qcow2")
    return q


def _patch(path: Path, offset: int, fmt: str, value: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def _expect(exc: type[Exception], src: Path, tmp_path: Path, **kw: object) -> Exception:
    out = tmp_path / "out-dir"
    out.mkdir(exist_ok=True)
    with pytest.raises(exc) as e:
        datamover.convert(src, out / "dst", **kw)  # type: ignore[arg-type]
    assert list(out.iterdir()) == [], "nothing may be left at the destination"
    with pytest.raises(exc):
        datamover.info(src, checksum="sha256")
    return e.value


def test_missing_source(tmp_path: Path) -> None:
    e = _expect(datamover.SourceError, tmp_path / "nope.img", tmp_path)
    assert "nope.img" in str(e)
    assert e.errno == 2  # type: ignore[attr-defined]


def test_directory_source(tmp_path: Path) -> None:
    d = tmp_path / "adir"
    d.mkdir()
    e = _expect(datamover.SourceError, d, tmp_path)
    assert "directory" in str(e)


def test_wrong_magic_when_qcow2_is_asserted(tmp_path: Path) -> None:
    p = tmp_path / "x.img"
    p.write_bytes(b"\0" * 4096)
    with pytest.raises(datamover.FormatError, match="magic"):
        datamover.convert(p, tmp_path / "o", src_format="qcow2")


@pytest.mark.parametrize("keep", [0, 40, 100, 70000])
def test_truncated(good_qcow2: Path, tmp_path: Path, keep: int) -> None:
    with good_qcow2.open("r+b") as f:
        f.truncate(keep)
    if keep < 4:
        # Too short to carry the magic: probes as raw, which is valid.
        datamover.convert(good_qcow2, tmp_path / "o")
        return
    e = _expect(datamover.FormatError, good_qcow2, tmp_path)
    assert str(good_qcow2) in str(e)


def test_l1_offset_past_end(good_qcow2: Path, tmp_path: Path) -> None:
    _patch(good_qcow2, 40, ">Q", 1 << 40)
    e = _expect(datamover.FormatError, good_qcow2, tmp_path)
    assert "L1" in str(e)


def test_l2_offset_past_end(good_qcow2: Path, tmp_path: Path) -> None:
    l1 = struct.unpack(">Q", good_qcow2.read_bytes()[40:48])[0]
    _patch(good_qcow2, l1, ">Q", (1 << 63) | (1 << 40))
    e = _expect(datamover.FormatError, good_qcow2, tmp_path)
    assert "L2" in str(e)


def test_refcount_table_past_end(good_qcow2: Path, tmp_path: Path) -> None:
    _patch(good_qcow2, 48, ">Q", 1 << 40)
    e = _expect(datamover.FormatError, good_qcow2, tmp_path)
    assert "refcount" in str(e)


def test_absurd_virtual_size(good_qcow2: Path, tmp_path: Path) -> None:
    _patch(good_qcow2, 24, ">Q", (1 << 63) - 512)
    _expect(datamover.FormatError, good_qcow2, tmp_path)


def test_huge_l1_size(good_qcow2: Path, tmp_path: Path) -> None:
    _patch(good_qcow2, 36, ">I", 0xFFFFFFFF)
    e = _expect(datamover.FormatError, good_qcow2, tmp_path)
    assert "L1" in str(e)


def test_bad_cluster_bits(good_qcow2: Path, tmp_path: Path) -> None:
    _patch(good_qcow2, 20, ">I", 40)
    _expect(datamover.FormatError, good_qcow2, tmp_path)


def test_unknown_incompatible_feature(good_qcow2: Path, tmp_path: Path) -> None:
    _patch(good_qcow2, 72, ">Q", 1 << 20)
    e = _expect(datamover.FormatError, good_qcow2, tmp_path)
    assert "incompatible" in str(e)


@requires_qemu
def test_backing_cycle(tmp_path: Path) -> None:
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    qemu_img("create", "-f", "qcow2", a, "1M")
    qemu_img("create", "-f", "qcow2", "-b", a.name, "-F", "qcow2", b)
    qemu_img("rebase", "-u", "-f", "qcow2", "-b", b.name, "-F", "qcow2", a)
    e = _expect(datamover.FormatError, b, tmp_path)
    assert "cycle" in str(e)


@requires_qemu
def test_backing_chain_limit(tmp_path: Path) -> None:
    prev = tmp_path / "l0.qcow2"
    qemu_img("create", "-f", "qcow2", prev, "1M")
    for i in range(1, 5):
        cur = tmp_path / f"l{i}.qcow2"
        qemu_img("create", "-f", "qcow2", "-b", prev.name, "-F", "qcow2", cur)
        prev = cur
    datamover.convert(prev, tmp_path / "ok.raw", backing_chain_limit=4)
    with pytest.raises(datamover.FormatError, match="limit of 3"):
        datamover.convert(prev, tmp_path / "no.raw", backing_chain_limit=3)
    assert not (tmp_path / "no.raw").exists()


@requires_qemu
def test_missing_backing_file(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-f", "qcow2", base, "1M")
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", base.name, "-F", "qcow2", top)
    base.unlink()
    e = _expect(datamover.SourceError, top, tmp_path)
    assert "base.qcow2" in str(e) and "backing file of" in str(e)


@requires_qemu
def test_external_data_file_refused(tmp_path: Path) -> None:
    q = tmp_path / "ext.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'ext.data'}", q, "1M")
    e = _expect(datamover.FormatError, q, tmp_path)
    assert "external data file" in str(e)


def test_bad_arguments(good_qcow2: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        datamover.convert(good_qcow2, tmp_path / "o", dst_format="vmdk")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        datamover.convert(good_qcow2, tmp_path / "o", compression="zstd")  # raw output
    with pytest.raises(ValueError):
        datamover.convert(good_qcow2, tmp_path / "o", dst_format="qcow2", cluster_size=3000)
    with pytest.raises(ValueError):
        datamover.convert(good_qcow2, tmp_path / "o", checksum="md5")  # type: ignore[arg-type]
    assert not (tmp_path / "o").exists()


def test_exception_hierarchy() -> None:
    for exc in (
        datamover.SourceError,
        datamover.FormatError,
        datamover.TargetTooSmall,
        datamover.TargetExists,
        datamover.Cancelled,
        datamover.IoError,
    ):
        assert issubclass(exc, datamover.DataMoverError)
    assert issubclass(datamover.NoSpace, datamover.IoError)


def test_no_space(tmp_path: Path) -> None:
    """ENOSPC on a tiny tmpfs becomes NoSpace, and the temporary file is removed."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)])
    if r.returncode != 0:
        pytest.skip("cannot mount tmpfs")
    try:
        src = tmp_path / "big.raw"
        write_pattern(src, 8 * MiB, seed=9, holes=False)
        with pytest.raises(datamover.NoSpace) as e:
            datamover.convert(src, mnt / "x.raw")
        assert str(mnt / "x.raw") in str(e.value)
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
