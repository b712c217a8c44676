"""Sizes beyond the maximum, objects the data filesystem can not hold, clean error texts, and
the request counter (``_emulator/requests``)."""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spcs.emulator import Emulator
from spcs.emulator.naming import MAX_SIZE

from .conftest import GiB, MiB
from .helpers import TOKEN, error_of, raw_call

pytestmark = pytest.mark.fast

CREATE = "/ctrl/1.0/MultiCluster/VolumeCreate"
# What a reply must never carry: Python exception names, errno texts, tracebacks, paths.
LEAKS = re.compile(r"Error\b|Errno|errno|Traceback|File exists|File too large|/objects/|\.raw")


def clean(err: dict[str, Any]) -> str:
    descr = err["descr"]
    assert not LEAKS.search(descr), f"exception text in the reply: {descr!r}"
    return descr


def data_files(emu: Emulator) -> list[str]:
    return sorted(os.listdir(Path(emu.data_dir) / "objects"))


@pytest.mark.parametrize("size", [MAX_SIZE + 512, 1 << 60, 1 << 63, 1 << 64, 1 << 70])
def test_create_beyond_the_maximum_is_invalid_param_and_leaves_nothing(emu: Emulator, size: int):
    before = emu.state_snapshot()["state"]
    status, reply = raw_call(emu.port, "POST", CREATE, {"template": "hybrid", "size": size})
    err = error_of(reply)
    assert status != 200 and err["name"] == "invalidParam"
    assert str(MAX_SIZE) in clean(err) and str(size) in err["descr"]
    assert emu.state_snapshot()["state"] == before
    assert data_files(emu) == []
    # the next creates work (no half-made data file in the way, no global id used up)
    for n in (1, 2):
        status, reply = raw_call(emu.port, "POST", CREATE, {"template": "hybrid", "size": MiB})
        assert status == 200, reply
        assert reply["data"]["globalId"] == f"emu.a.{n}"
    assert data_files(emu) == ["emu.a.1.raw", "emu.a.2.raw"]


def test_every_size_field_has_the_maximum(emu: Emulator, api: Any):
    api.volumeCreate({"name": "v", "size": MiB, "template": "hybrid"})
    api.snapshotCreate("v", {"name": "s"})
    too_big = MAX_SIZE + 512
    requests = [
        ("POST", "/ctrl/1.0/VolumeUpdate/v", {"size": too_big}),
        ("POST", "/ctrl/1.0/VolumeUpdate/v", {"size": 1 << 63}),
        ("POST", "/ctrl/1.0/VolumeUpdate/v", {"sizeAdd": MAX_SIZE}),  # MiB + 100 PiB
        ("POST", CREATE, {"name": "w", "parent": "s", "size": 1 << 63}),
        ("POST", CREATE, {"name": "w", "baseOn": "v", "size": too_big}),
        ("POST", "/ctrl/1.0/VolumeTemplateCreate", {"name": "big", "size": too_big}),
        ("POST", "/ctrl/1.0/VolumeTemplateUpdate/hybrid", {"size": 1 << 64}),
    ]
    before = emu.state_snapshot()["state"]
    for method, path, body in requests:
        status, reply = raw_call(emu.port, method, path, body)
        err = error_of(reply)
        assert status != 200 and err["name"] == "invalidParam", (path, body, reply)
        assert str(MAX_SIZE) in clean(err), (path, body, err)
    assert emu.state_snapshot()["state"] == before
    assert api.volumeList("v")[0].size == MiB
    # the maximum itself is a valid size (an update asks the filesystem for nothing new here)
    status, reply = raw_call(
        emu.port, "POST", "/ctrl/1.0/VolumeTemplateUpdate/hybrid", {"size": MAX_SIZE}
    )
    assert status == 200, reply


# ---- a data filesystem that can not hold the file ------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _small_files(limit: int):  # type: ignore[no-untyped-def]
    def limit_file_size() -> None:
        # files of this process may not grow past `limit`: ftruncate beyond it is EFBIG
        # (Python ignores SIGXFSZ), as on a filesystem with a small maximum file size
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size


@pytest.fixture
def small_files_emulator(tmp_path: Path) -> Iterator[int]:
    """An emulator process whose data files can not be larger than 64 MiB."""
    port = _free_port()
    log = (tmp_path / "emulator.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spcs.cli",
            "emulator",
            "--data",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{port}",
            "--token",
            TOKEN,
            "--template",
            "hybrid",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_small_files(64 * MiB),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                raw_call(port, "GET", "/ctrl/1.0/VolumesList")
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "emulator.log").read_text()
                assert time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_an_object_the_filesystem_can_not_hold_is_refused_cleanly(
    small_files_emulator: int, tmp_path: Path
):
    port = small_files_emulator
    objects = tmp_path / "data" / "objects"
    for _ in range(2):  # the second attempt meets no half-made file
        status, reply = raw_call(port, "POST", CREATE, {"template": "hybrid", "size": GiB})
        err = error_of(reply)
        assert status != 200 and err["name"] == "insufficientResources", reply
        assert str(GiB) in clean(err)
        assert os.listdir(objects) == []
    status, reply = raw_call(port, "POST", CREATE, {"name": "v", "template": "hybrid", "size": MiB})
    assert status == 200, reply
    assert reply["data"]["globalId"] == "emu.a.1"
    # growing past what the filesystem holds: refused the same way, the volume unchanged
    status, reply = raw_call(port, "POST", "/ctrl/1.0/VolumeUpdate/v", {"size": GiB})
    err = error_of(reply)
    assert err["name"] == "insufficientResources" and str(GiB) in clean(err)
    status, reply = raw_call(port, "GET", "/ctrl/1.0/Volume/v")
    assert reply["data"][0]["size"] == MiB
    assert (objects / "emu.a.1.raw").stat().st_size == MiB
    assert os.listdir(objects) == ["emu.a.1.raw"]


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"{'a': 1}",
        b"\xff\xfe\x00",
        b"\xc3\x28",
        b"[" * 100000,
        b'{"size": 1' + b"0" * 5000 + b"}",
    ],
)
def test_malformed_bodies_answer_without_exception_text(emu: Emulator, body: bytes):
    status, reply = raw_call(emu.port, "POST", CREATE, body)
    err = error_of(reply)
    assert status != 200 and err["name"] == "invalidParam"
    descr = clean(err)
    assert "JSON" in descr and "codec" not in descr and "recursion" not in descr
    assert "Expecting" not in descr and "digits" not in descr


# ---- the request counter ---------------------------------------------------------------------


def test_requests_are_counted_per_command(emu: Emulator, api: Any):
    admin = "/ctrl/1.0/_emulator/requests"
    status, reply = raw_call(emu.port, "GET", admin)
    assert status == 200 and reply["data"] == {"counts": {}, "total": 0}
    api.volumeCreate({"name": "v", "size": MiB, "template": "hybrid"})
    api.volumesSpace()  # MultiCluster/VolumesSpace
    raw_call(emu.port, "GET", "/ctrl/1.0/VolumesSpace")
    raw_call(emu.port, "GET", "/ctrl/1.0/MultiCluster/AllClusters/VolumesSpace")
    raw_call(emu.port, "GET", "/ctrl/1.0/Volume/nope")  # an error answer counts too
    raw_call(emu.port, "GET", "/ctrl/1.0/NoSuchCommand")  # unknown: not counted
    raw_call(emu.port, "GET", "/ctrl/1.0/VolumesList", token="wrong")  # refused: not counted
    expected = {"Volume": 1, "VolumeCreate": 1, "VolumesSpace": 3}
    assert emu.request_counts() == expected
    status, reply = raw_call(emu.port, "GET", admin)
    assert reply["data"] == {"counts": expected, "total": 5}  # admin requests are not counted
    status, reply = raw_call(emu.port, "POST", admin, {})
    assert status == 200 and reply["data"] == {"counts": expected, "total": 5}
    assert emu.request_counts() == {}
    api.volumesList()
    assert emu.reset_request_counts() == {"VolumesList": 1}
    assert emu.request_counts() == {}
