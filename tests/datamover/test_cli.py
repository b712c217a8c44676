"""`spcs convert` and `spcs info` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from spcs import datamover

from .conftest import MiB, assert_clean_qcow2, assert_same, requires_qemu, write_pattern

SPCS = [sys.executable, "-m", "spcs.cli"]


def spcs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SPCS, *map(str, args)], capture_output=True, text=True)


@requires_qemu
def test_convert_and_info(tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    write_pattern(src, 5 * MiB, seed=21)
    q = tmp_path / "out.qcow2"
    r = spcs("convert", "-p", "-O", "qcow2", "-c", "--compression", "zstd", src, q)
    assert r.returncode == 0, r.stderr
    assert "100.00%" in r.stderr
    assert_clean_qcow2(q)
    assert_same(src, q)

    r = spcs("info", "--json", "--checksum", "sha256", q)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "qcow2"
    assert doc["compression"] == "zstd"
    assert doc["virtual_size"] == 5 * MiB
    assert doc["checksum"] == datamover.info(src, checksum="sha256").checksum

    r = spcs("info", q)
    assert "file format: qcow2" in r.stdout and "cluster_size: 65536" in r.stdout

    back = tmp_path / "back.raw"
    r = spcs("convert", "-f", "qcow2", "-O", "raw", "--json", "--checksum", "sha256", q, back)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["virtual_size"] == 5 * MiB and stats["checksum"] == doc["checksum"]
    assert back.read_bytes() == src.read_bytes()


def test_qemu_style_options(tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    write_pattern(src, 2 * MiB, seed=22)
    q = tmp_path / "o.qcow2"
    r = spcs("convert", "-O", "qcow2", "-c", "-o", "cluster_size=4k,compression_type=zstd", src, q)
    assert r.returncode == 0, r.stderr
    i = datamover.info(q)
    assert i.cluster_size == 4096 and i.compression == "zstd"


def test_errors_exit_nonzero(tmp_path: Path) -> None:
    r = spcs("convert", tmp_path / "missing", tmp_path / "x")
    assert r.returncode == 1
    assert "missing" in r.stderr and "error" in r.stderr
    r = spcs("info", tmp_path)
    assert r.returncode == 1 and "directory" in r.stderr
    r = spcs("convert", "-o", "bogus=1", tmp_path / "missing", tmp_path / "x")
    assert r.returncode == 1 and "bogus" in r.stderr
