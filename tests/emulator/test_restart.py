"""`spcs emulator` as a process: write-conf, SIGTERM, restart on the same directory, crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confget
import pytest
from storpool import spapi

from spcs.emulator import Emulator, EmulatorError

from .conftest import MiB
from .helpers import TOKEN, raw_call


def _read_conf(path: Path) -> dict[str, dict[str, str]]:
    # exactly how the bindings' SPConfig reads storpool.conf
    return confget.BACKENDS["ini"](confget.Config([], filename=str(path))).read_file()


class Proc:
    """One `python -m spcs.cli emulator` process."""

    def __init__(self, tmp: Path, data: Path, roots: dict[int, Path], tag: str) -> None:
        self.conf = tmp / f"storpool-{tag}.conf"
        self.log = tmp / f"emulator-{tag}.log"
        cmd = [
            sys.executable,
            "-m",
            "spcs.cli",
            "emulator",
            "--data",
            str(data),
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--template",
            "hybrid:1G",
            "--write-conf",
            str(self.conf),
        ]
        for cid, root in roots.items():
            cmd += ["--client", f"{cid}={root}"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.conf.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"emulator did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        shared = _read_conf(self.conf)[""]
        self.port = int(shared["SP_API_HTTP_PORT"])
        self.api = spapi.Api(
            host=shared["SP_API_HTTP_HOST"],
            port=self.port,
            auth=shared["SP_AUTH_TOKEN"],
            multiCluster=True,
            transientRetries=0,
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
        p.proc.wait()


def _world(api: Any) -> dict[str, Any]:
    return {
        "volumes": api.volumesList(returnRawAPIData=True),
        "snapshots": api.snapshotsList(returnRawAPIData=True),
        "attachments": api.attachmentsList(returnRawAPIData=True),
        "templates": api.volumeTemplatesList(returnRawAPIData=True),
    }


def test_write_conf_serves_the_bindings_and_each_client(
    tmp_path: Path, roots: dict[int, Path], procs: list[Proc]
) -> None:
    p = Proc(tmp_path, tmp_path / "data", roots, "a")
    procs.append(p)
    conf = _read_conf(p.conf)
    assert conf[""] == {
        "SP_API_HTTP_HOST": "127.0.0.1",
        "SP_API_HTTP_PORT": str(p.port),
        "SP_AUTH_TOKEN": TOKEN,
        "SP_CLUSTER_ID": "emu.a",
    }
    assert conf["spcs-client-2"]["SP_OURID"] == "2"
    assert conf["spcs-client-2"]["SPCS_EMULATOR_DEVICE_ROOT"] == str(roots[2])
    one = _read_conf(tmp_path / "storpool-a.client-1.conf")[""]
    assert (one["SP_OURID"], one["SP_API_HTTP_PORT"]) == ("1", str(p.port))
    assert oct(os.stat(p.conf).st_mode & 0o777) == "0o600"  # it holds the token
    assert p.api.volumesList() == []
    assert p.stop() == 0
    assert "emulator stopped" in p.log.read_text()


def test_restart_shows_the_same_world(
    tmp_path: Path, roots: dict[int, Path], procs: list[Proc]
) -> None:
    data = tmp_path / "data"
    p = Proc(tmp_path, data, roots, "a")
    procs.append(p)
    api = p.api
    api.volumeTemplateCreate({"name": "gold", "replication": 2, "iops": 100})
    api.volumeCreate({"name": "vol1", "size": 32 * MiB, "template": "gold", "tags": {"cs": "v"}})
    anon = api.volumeCreate({"size": 16 * MiB, "template": "hybrid"}).globalId
    api.volumesReassign([{"volume": "vol1", "rw": [1]}, {"volume": f"~{anon}", "rw": [2]}])
    with open(roots[1] / "storpool" / "vol1", "r+b") as dev:
        dev.seek(MiB)
        dev.write(b"survives restarts")
    api.snapshotCreate("vol1", {"name": "snap1", "tags": {"k": "v"}})
    api.volumeCreate({"name": "clone", "parent": "snap1"})
    api.snapshotDelete("snap1")  # has children: marked deleted
    api.snapshotsList()
    before = _world(api)
    generation = raw_call(p.port, "GET", "/ctrl/1.0/VolumesList")[1]["generation"]
    assert p.stop() == 0

    # a "reboot" wiped client 2's devices; client 1 has a stale link nothing explains
    for entry in (roots[2] / "storpool-byid").iterdir():
        entry.unlink()
    (roots[2] / "sp-0").unlink()
    os.symlink("../sp-9", roots[1] / "storpool" / "ghost")
    # ...and one that is not the emulator's to remove (a root may be a real /dev)
    os.symlink(str(p.conf), roots[1] / "storpool" / "foreign")

    q = Proc(tmp_path, data, roots, "b")
    procs.append(q)
    assert _world(q.api) == before
    assert raw_call(q.port, "GET", "/ctrl/1.0/VolumesList")[1]["generation"] == generation
    assert sorted(os.listdir(roots[2] / "storpool-byid")) == [anon]
    assert not os.path.lexists(roots[1] / "storpool" / "ghost")
    assert os.path.lexists(roots[1] / "storpool" / "foreign")
    with open(roots[1] / "storpool" / "vol1", "rb") as dev:
        dev.seek(MiB)
        assert dev.read(17) == b"survives restarts"
    # and it keeps working: new ids continue, nothing is reused
    new = q.api.volumeCreate({"name": "after", "size": MiB}).globalId
    assert new not in {v["globalId"] for v in before["volumes"] + before["snapshots"]}
    assert q.stop(signal.SIGINT) == 0


def test_killed_emulator_restarts_consistent(
    tmp_path: Path, roots: dict[int, Path], procs: list[Proc]
) -> None:
    data = tmp_path / "data"
    p = Proc(tmp_path, data, roots, "a")
    procs.append(p)
    p.api.volumeCreate({"name": "v", "size": MiB})
    p.stop(signal.SIGKILL)
    # a stray file from a change that never committed is cleaned up
    (data / "objects" / "emu.a.99.raw").write_bytes(b"x")
    q = Proc(tmp_path, data, roots, "b")
    procs.append(q)
    assert [v.name for v in q.api.volumesList()] == ["v"]
    assert sorted(os.listdir(data / "objects")) == ["emu.a.1.raw"]
    # the data directory is taken while an emulator serves it
    with pytest.raises(EmulatorError, match="in use"):
        Emulator(data, token=TOKEN).start()
    assert q.stop() == 0


def test_in_process_stop_and_start_on_the_same_port(tmp_path: Path, roots: dict[int, Path]) -> None:
    emu = Emulator(tmp_path / "data", token=TOKEN, clients=roots).start()
    try:
        api = emu.api(transientRetries=0)
        api.volumeCreate({"name": "v", "size": MiB})
        api.volumesReassign([{"volume": "v", "rw": [1]}])
        port = emu.port
        emu.stop()
        assert emu.port == port  # still known, for a restart on the same address
        with pytest.raises(OSError):
            raw_call(port, "GET", "/ctrl/1.0/VolumesList")
        assert os.path.lexists(roots[1] / "storpool" / "v")  # devices outlive the API
        emu.start(port=port)
        assert [v.name for v in api.volumesList()] == ["v"]
        assert [a.volume for a in api.attachmentsList()] == ["v"]
    finally:
        emu.stop(release_devices=True)
    assert not os.path.lexists(roots[1] / "storpool" / "v")


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    for bad in (["--client", "x=/tmp"], ["--listen", "nowhere"], ["--template", "t:lots"]):
        proc = subprocess.run(
            [sys.executable, "-m", "spcs.cli", "emulator", "--data", str(tmp_path / "d"), *bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "can not start the emulator" in proc.stderr
