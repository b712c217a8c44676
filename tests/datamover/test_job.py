"""Background jobs: progress, wait with timeout, prompt cancellation without leftovers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from spcs import datamover

from .conftest import MiB


@pytest.fixture
def slow_src(tmp_path: Path) -> Path:
    """Incompressible data: zlib tries hard on every cluster, so the copy takes seconds."""
    import os

    p = tmp_path / "random.raw"
    with p.open("wb") as f:
        for _ in range(96):
            f.write(os.urandom(MiB))
    return p


def test_progress_and_wait(slow_src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.qcow2"
    job = datamover.start_convert(slow_src, dst, dst_format="qcow2", compression="zlib", threads=1)
    assert job.wait(timeout=0.05) is None
    assert not job.done
    time.sleep(0.3)
    p = job.progress()
    assert p.total_bytes == 96 * MiB
    assert 0 <= p.done_bytes <= p.total_bytes
    stats = job.wait()
    assert stats is not None and job.done
    assert job.progress().done_bytes == 96 * MiB
    assert stats.virtual_size == 96 * MiB
    # wait() after completion returns the same result again
    again = job.wait(timeout=0)
    assert again is not None and again.bytes_written == stats.bytes_written


@pytest.fixture(scope="module")
def compressed_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zlib-compressed qcow2 of hex text: decompressing it on one thread takes about 1 s."""
    import os

    d = tmp_path_factory.mktemp("job")
    raw = d / "hex.raw"
    with raw.open("wb") as f:
        for _ in range(320):
            f.write(os.urandom(MiB // 2).hex().encode())
    q = d / "hex.qcow2"
    datamover.convert(raw, q, dst_format="qcow2", compression="zlib")
    raw.unlink()
    return q


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_cancel_is_prompt_and_leaves_nothing(
    slow_src: Path, compressed_src: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "x"
    if fmt == "qcow2":
        job = datamover.start_convert(
            slow_src, dst, dst_format="qcow2", compression="zlib", threads=1
        )
    else:
        job = datamover.start_convert(compressed_src, dst, threads=1)
    time.sleep(0.2)
    p = job.progress()
    assert 0 < p.done_bytes < p.total_bytes, "cancel lands mid-copy"
    t = time.monotonic()
    job.cancel()
    with pytest.raises(datamover.Cancelled):
        job.wait(timeout=5)
    assert time.monotonic() - t < 1.0
    assert job.done
    assert list(out.iterdir()) == []


def test_cancel_in_place_reports_partial(slow_src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "vol"
    dst.write_bytes(b"\xee" * (100 * MiB))
    job = datamover.start_convert(slow_src, dst, threads=1)
    job.cancel()
    try:
        job.wait(timeout=5)
    except datamover.Cancelled as e:
        assert e.target_partial
        assert "partial" in str(e)
    assert dst.stat().st_size == 100 * MiB


def test_wait_releases_the_gil(slow_src: Path, tmp_path: Path) -> None:
    job = datamover.start_convert(
        slow_src, tmp_path / "o.qcow2", dst_format="qcow2", compression="zlib", threads=1
    )
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    job.wait()
    stop.set()
    t.join()
    assert ticks > 50


def test_dropping_a_job_cancels_it(slow_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    job = datamover.start_convert(
        slow_src, out / "x.qcow2", dst_format="qcow2", compression="zlib", threads=1
    )
    del job
    deadline = time.monotonic() + 5
    while list(out.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(out.iterdir()) == []
