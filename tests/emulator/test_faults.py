"""Fault injection: transient errors, delays, failures after the fact; admin endpoint and flags."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from storpool import spapi

from spcs.emulator import Emulator, FaultConfig
from spcs.emulator import cli as emulator_cli

from .conftest import MiB
from .helpers import TOKEN, error_of, raw_call

pytestmark = pytest.mark.fast


def _faults(emu: Emulator, config: dict[str, Any]) -> dict[str, Any]:
    status, reply = raw_call(emu.port, "POST", "/ctrl/1.0/_emulator/faults", config)
    assert status == 200, reply
    return reply["data"]


def _retrying(emu: Emulator, retries: int = 5) -> Any:
    return emu.api(transientRetries=retries, transientSleep=lambda retry: 0)


def test_faults_are_off_by_default(emu: Emulator) -> None:
    status, reply = raw_call(emu.port, "GET", "/ctrl/1.0/_emulator/faults")
    assert status == 200
    assert reply["data"]["transientRate"] == 0 and reply["data"]["failNext"] == {}


def test_fail_next_is_transient_and_changes_nothing(emu: Emulator, api: Any) -> None:
    _faults(emu, {"failNext": {"VolumeCreate": 1}})
    _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeCreate", {"name": "v", "size": MiB})
    err = error_of(reply)
    assert err["transient"] is True and err["name"] == "busy"
    assert api.volumesList() == []
    # the bindings retry transient errors by themselves
    _faults(emu, {"failNext": {"VolumeCreate": 2}})
    _retrying(emu).volumeCreate({"name": "v", "size": MiB})
    assert [v.name for v in api.volumesList()] == ["v"]


def test_fail_after_took_effect(emu: Emulator, api: Any) -> None:
    _faults(emu, {"failAfter": {"VolumeCreate": 1}, "errorName": "clusterBusy"})
    with pytest.raises(spapi.ApiError) as caught:
        api.volumeCreate({"name": "v", "size": MiB})
    assert caught.value.transient and caught.value.name == "clusterBusy"
    assert [v.name for v in api.volumesList()] == ["v"]  # it happened anyway
    # a naive retry now meets its own success
    with pytest.raises(spapi.ApiError) as caught:
        _retrying(emu).volumeCreate({"name": "v", "size": MiB})
    assert caught.value.name == "objectExists"


def test_transient_rate_limited_to_commands(emu: Emulator, api: Any) -> None:
    _faults(emu, {"transientRate": 1.0, "commands": ["VolumesList"]})
    api.volumeCreate({"name": "v", "size": MiB})
    with pytest.raises(spapi.ApiError) as caught:
        _retrying(emu, retries=2).volumesList()
    assert caught.value.transient
    assert [s.name for s in api.snapshotsList()] == []


def test_random_transient_errors_are_survivable(emu: Emulator, api: Any) -> None:
    _faults(emu, {"transientRate": 0.3, "seed": 7})
    outcomes = [raw_call(emu.port, "GET", "/ctrl/1.0/VolumesList")[0] for _ in range(40)]
    assert 0 < outcomes.count(500) < 40 and outcomes.count(200) > 0
    client = _retrying(emu, retries=10)
    for i in range(10):
        client.volumeCreate({"name": f"v{i}", "size": MiB})
    _faults(emu, {})
    assert len(api.volumesList()) == 10


def test_delays_do_not_hold_the_lock(emu: Emulator, api: Any) -> None:
    _faults(emu, {"delays": {"VolumesList": 0.6}})
    done: list[float] = []
    started = time.monotonic()
    slow = threading.Thread(target=lambda: done.append(len(api.volumesList())))
    slow.start()
    time.sleep(0.1)
    api.volumeCreate({"name": "fast", "size": MiB})
    fast_at = time.monotonic() - started
    slow.join()
    assert fast_at < 0.5
    assert time.monotonic() - started >= 0.6


def test_stop_cuts_delays_short(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "d", token=TOKEN, faults=FaultConfig(delays={"*": 30.0}))
    emu.start()
    result: list[int] = []
    t = threading.Thread(
        target=lambda: result.append(raw_call(emu.port, "GET", "/ctrl/1.0/VolumesList")[0])
    )
    t.start()
    time.sleep(0.2)
    started = time.monotonic()
    emu.stop()
    t.join(10)
    assert time.monotonic() - started < 5
    assert not t.is_alive()


@pytest.mark.parametrize(
    "config",
    [
        {"transientRate": 2},
        {"transientRate": "x"},
        {"failNext": {"VolumeCreate": -1}},
        {"failNext": {"VolumeCreate": 1.5}},
        {"delays": []},
        {"commands": "VolumeCreate"},
        {"bogus": 1},
        [1],
    ],
)
def test_bad_fault_config_is_rejected(emu: Emulator, config: Any) -> None:
    _, reply = raw_call(emu.port, "POST", "/ctrl/1.0/_emulator/faults", config)
    assert error_of(reply)["name"] == "invalidParam"
    assert raw_call(emu.port, "GET", "/ctrl/1.0/_emulator/faults")[1]["data"]["transientRate"] == 0


def test_fault_flags(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    emulator_cli.configure(parser)
    args = parser.parse_args(
        [
            "--data",
            str(tmp_path),
            "--transient-rate",
            "0.25",
            "--fault-command",
            "VolumeCreate",
            "--delay",
            "VolumesList=1.5",
            "--fail-next",
            "VolumeDelete",
            "--fail-after",
            "VolumeSnapshot=3",
            "--fault-seed",
            "4",
        ]
    )
    config = emulator_cli.fault_config(args)
    assert config.to_json() == {
        "transientRate": 0.25,
        "commands": ["VolumeCreate"],
        "delays": {"VolumesList": 1.5},
        "failNext": {"VolumeDelete": 1},
        "failAfter": {"VolumeSnapshot": 3},
        "errorName": "busy",
        "seed": 4,
    }
    assert emulator_cli.parse_size("10G") == 10 << 30
    assert emulator_cli.parse_listen("[::1]:81") == ("::1", 81)
    assert emulator_cli.parse_clients(["1", "2=/x"]) == {1: "/dev", 2: "/x"}
