"""The facade: name resolution is final, sizes beyond the maximum never reach StorPool, the
cluster id StorPool shows, and the single-flight volume space cache (against the emulator,
counting its requests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spcs.common import errors, validate
from spcs.emulator import Emulator
from spcs.storpool.api import UNRESOLVABLE_HOST, RetryPolicy, StorPoolApi, cluster_of

pytestmark = pytest.mark.fast

TOKEN = "9876543210"
MIB = 1 << 20


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    (tmp_path / "h1").mkdir()
    with Emulator(
        tmp_path / "emu",
        token=TOKEN,
        clients={1: tmp_path / "h1"},
        cluster_id="emu.b",
        templates={"hybrid": 8 << 30, "other": 8 << 30},
    ) as emulator:
        yield emulator


def api_for(emu: Emulator) -> StorPoolApi:
    return StorPoolApi(emu.host, emu.port, TOKEN, retry=RetryPolicy(total_seconds=30))


def test_an_unresolvable_host_is_final_at_once():
    api = StorPoolApi("spcs-test.invalid", 81, TOKEN, retry=RetryPolicy(total_seconds=30))
    started = time.monotonic()
    with pytest.raises(errors.Unavailable) as failure:
        api.template("hybrid")
    assert time.monotonic() - started < 2, "a name that does not resolve was retried"
    assert failure.value.reason == UNRESOLVABLE_HOST
    message = failure.value.message
    assert "'spcs-test.invalid'" in message and "check the name" in message
    assert "template hybrid" in message
    assert "gaierror" not in message and "Errno" not in message


@pytest.mark.parametrize("size", [validate.MAX_SIZE + 512, 1 << 60, 1 << 63])
def test_sizes_beyond_the_maximum_never_reach_storpool(emu: Emulator, size: int):
    api = api_for(emu)
    api.volume_create(name="v", size=MIB, template="hybrid")
    emu.reset_request_counts()
    with pytest.raises(errors.InvalidArgument) as created:
        api.volume_create(name="w", size=size, template="hybrid")
    assert "create volume w" in created.value.message
    with pytest.raises(errors.InvalidArgument) as updated:
        api.volume_update("v", size=size)
    assert "update volume v" in updated.value.message
    for error in (created.value, updated.value):
        assert str(size) in error.message and validate.MAX_SIZE_TEXT in error.message
    assert emu.request_counts() == {}
    assert api.volume("v").size == MIB


def test_the_cluster_id_storpool_shows(emu: Emulator):
    api = api_for(emu)
    assert cluster_of("emu.b.1z") == "emu.b" and cluster_of("nonsense") is None
    assert api.local_cluster_id() is None  # nothing in the cluster yet
    assert emu.request_counts() == {"SnapshotsList": 1, "VolumesList": 1}
    gid = api.volume_create(name="v", size=MIB, template="hybrid")
    assert gid.startswith("emu.b.")
    assert api.local_cluster_id() == emu.cluster_id == "emu.b"
    # a snapshot alone shows it as well
    api.snapshot_create("v", name="s")
    api.volume_delete("v")
    assert [s.name for s in api.snapshots()] == ["s"]
    assert api.local_cluster_id() == "emu.b"


# ---- the volume space cache ----------------------------------------------------------------


def test_the_space_cache_is_fresh_then_refreshed(emu: Emulator):
    api = api_for(emu)
    gids = [
        api.volume_create(name=f"v{n}", size=(n + 1) * MIB, template="hybrid") for n in range(3)
    ]
    emu.reset_request_counts()
    view = api.space.view(30)
    assert emu.request_counts() == {"VolumesSpace": 1}
    for _ in range(5):
        assert api.space.view(30) is view
    assert emu.request_counts() == {"VolumesSpace": 1}
    assert [view.find(f"~{gid}").size for gid in gids] == [MIB, 2 * MIB, 3 * MIB]
    assert view.find("v1").global_id == gids[1] and view.find("nope") is None
    # this process's changes keep the cached rows true, without a fetch
    api.volume_update("v0", size=8 * MIB, template="other")
    api.volume_delete("v2")
    assert (view.find("v0").size, view.find("v0").template) == (8 * MIB, "other")
    assert view.find(f"~{gids[2]}") is None
    assert emu.request_counts() == {"VolumeDelete": 1, "VolumeUpdate": 1, "VolumesSpace": 1}
    # max_age 0: always a fetch of its own
    emu.reset_request_counts()
    assert api.space.view(0) is not view
    assert emu.request_counts() == {"VolumesSpace": 1}
    time.sleep(0.3)
    api.space.view(0.2)
    assert emu.request_counts() == {"VolumesSpace": 2}


def test_concurrent_callers_share_one_fetch(emu: Emulator):
    api = api_for(emu)
    api.volume_create(name="v", size=MIB, template="hybrid")
    emu.set_faults({"delays": {"VolumesSpace": 0.5}})
    emu.reset_request_counts()
    views, failures = [], []
    start = threading.Barrier(12)

    def caller() -> None:
        start.wait()
        try:
            views.append(api.space.view(30))
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=caller) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert failures == [] and len(views) == 12
    assert len({id(v) for v in views}) == 1
    assert emu.request_counts() == {"VolumesSpace": 1}


def test_a_failed_fetch_fails_every_waiter_and_the_next_call_fetches_again(emu: Emulator):
    api = StorPoolApi(emu.host, emu.port, TOKEN, retry=RetryPolicy(total_seconds=0.2))
    # one transient failure that takes longer than the whole retry budget: no retry
    emu.set_faults({"delays": {"VolumesSpace": 0.4}, "failNext": {"VolumesSpace": 1}})
    emu.reset_request_counts()
    results: list[BaseException | None] = []
    start = threading.Barrier(4)

    def caller() -> None:
        start.wait()
        try:
            api.space.view(30)
            results.append(None)
        except errors.SpcsError as error:
            results.append(error)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 4 and all(isinstance(r, errors.Unavailable) for r in results)
    assert emu.request_counts() == {"VolumesSpace": 1}
    emu.set_faults({})
    api.space.view(30)
    assert emu.request_counts() == {"VolumesSpace": 2}
