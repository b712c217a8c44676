"""The StorPool facade against the emulator: calls, retries and the error translation."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spcs.common import errors
from spcs.emulator import Emulator
from spcs.storpool import names
from spcs.storpool.api import RetryPolicy, StorPoolApi

pytestmark = pytest.mark.fast

TOKEN = "9876543210"


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    (tmp_path / "h1").mkdir()
    with Emulator(
        tmp_path / "emu",
        token=TOKEN,
        clients={1: tmp_path / "h1"},
        cluster_id="emu.a",
        templates={"hybrid": 8 << 30},
    ) as emulator:
        yield emulator


def api_for(emu: Emulator, token: str = TOKEN, seconds: float = 5.0) -> StorPoolApi:
    return StorPoolApi(emu.host, emu.port, token, retry=RetryPolicy(total_seconds=seconds))


def test_volume_and_snapshot_round_trip(emu: Emulator):
    api = api_for(emu)
    gid = api.volume_create(
        name="cs-vol-1",
        size=1 << 30,
        template="hybrid",
        iops=500,
        tags=names.volume_tags("1", vm_uuid="vm-1", device_id=0),
    )
    volume = api.volume(f"~{gid}")
    assert (volume.name, volume.size, volume.template, volume.iops, volume.tags) == (
        "cs-vol-1",
        1 << 30,
        "hybrid",
        500,
        {"uuid": "1", "cs": "volume", "cvm": "vm-1", "disk": "0"},
    )
    snap_gid = api.snapshot_create("cs-vol-1", name="cs-snap-1", tags={"cs": "snapshot"})
    snapshot = api.snapshot(f"~{snap_gid}")
    assert snapshot.is_snapshot and snapshot.on_volume == "cs-vol-1"
    api.volume_update("cs-vol-1", size=2 << 30, tags={"cvm": ""})
    assert api.volume("cs-vol-1").size == 2 << 30 and "cvm" not in api.volume("cs-vol-1").tags
    assert api.volume_delete("cs-vol-1") is True and api.volume_delete("cs-vol-1") is False
    assert api.snapshot_delete("cs-snap-1") is True and api.snapshot_delete("cs-snap-1") is False


@pytest.mark.parametrize(
    ("action", "error", "words"),
    [
        (lambda api: api.volume("nope"), errors.NotFound, "nope"),
        (
            lambda api: api.volume_create(name="cs-vol-dup", size=1 << 20, template="hybrid"),
            errors.AlreadyExists,
            "cs-vol-dup",
        ),
        (
            lambda api: api.volume_create(name="bad name!", size=1 << 20),
            errors.InvalidArgument,
            "bad name",
        ),
        (
            lambda api: api.volume_update("cs-vol-dup", size=1 << 19),
            errors.InvalidArgument,
            "cs-vol-dup",
        ),
        (lambda api: api.template("missing"), errors.NotFound, "missing"),
    ],
)
def test_errors_become_domain_errors(emu: Emulator, action, error, words):
    api = api_for(emu)
    api.volume_create(name="cs-vol-dup", size=1 << 20, template="hybrid")
    with pytest.raises(error) as raised:
        action(api)
    assert words in raised.value.message


def test_wrong_token_is_permission_denied(emu: Emulator):
    with pytest.raises(errors.PermissionDenied) as denied:
        api_for(emu, token="tok-XYZZY-secret").volumes()
    assert "SP_AUTH_TOKEN" in denied.value.message and "XYZZY" not in denied.value.message


def test_transient_errors_are_retried(emu: Emulator):
    api = api_for(emu)
    emu.set_faults({"failNext": {"VolumeCreate": 2, "VolumesList": 3}})
    api.volume_create(name="cs-vol-t", size=1 << 20, template="hybrid")
    assert [v.name for v in api.volumes()] == ["cs-vol-t"]


def test_a_create_that_took_effect_is_seen_on_the_retry(emu: Emulator):
    """The reply was lost after the create happened: the retry meets objectExists, so the
    caller can check the object instead of making a second one."""
    api = api_for(emu)
    emu.set_faults({"failAfter": {"VolumeCreate": 1}})
    with pytest.raises(errors.AlreadyExists):
        api.volume_create(name="cs-vol-once", size=1 << 20, template="hybrid")
    assert [v.name for v in api.volumes()] == ["cs-vol-once"]


def test_unreachable_api_is_unavailable_within_the_retry_window():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = StorPoolApi("127.0.0.1", port, TOKEN, retry=RetryPolicy(total_seconds=1.0))
    started = time.monotonic()
    with pytest.raises(errors.Unavailable) as down:
        api.volumes()
    assert f"127.0.0.1:{port}" in down.value.message and "unreachable" in down.value.message
    assert time.monotonic() - started < 5


def test_always_transient_gives_up_as_unavailable(emu: Emulator):
    emu.set_faults({"transientRate": 1.0})
    with pytest.raises(errors.Unavailable) as down:
        api_for(emu, seconds=1.0).volumes()
    assert "transient" in down.value.message


@pytest.mark.parametrize(
    ("path", "ref"),
    [
        ("/dev/storpool-byid/emu.a.1f", "~emu.a.1f"),
        ("/dev/storpool/cs-vol-1", "cs-vol-1"),
        ("~emu.a.1f", "~emu.a.1f"),
        ("cs-snap-1", "cs-snap-1"),
        ("/dev/storpool-byid/NOPE", None),
        ("/dev/sda", None),
        ("/var/lib/libvirt/images/x", None),
        ("", None),
    ],
)
def test_paths_to_api_refs(path, ref):
    assert names.ref_or_none(path) == ref
    if ref is None:
        with pytest.raises(errors.InvalidArgument):
            names.api_ref(path)


def test_tag_values_are_checked():
    with pytest.raises(errors.InvalidArgument, match="vm uuid with spaces"):
        names.volume_tags("u", vm_uuid="vm uuid with spaces")
    assert names.bandwidth_to_storpool(1) == 1 and names.bandwidth_to_storpool(2048) == 2


@pytest.mark.parametrize("ref", ["a?b", "a/b", "a b", "a#b", "../a"])
def test_a_ref_that_would_change_the_url_is_refused_and_touches_nothing(emu: Emulator, ref: str):
    """VolumeDelete/<ref> and SnapshotUpdate/<ref> put the ref into the URL path: "a?b" would
    delete volume "a", a space would be retried as a network error."""
    api = api_for(emu, seconds=1.0)
    api.volume_create(name="a", size=1 << 20, template="hybrid")
    gid = api.snapshot_create("a", name="a-snap")
    started = time.monotonic()
    with pytest.raises(errors.InvalidArgument, match="not a valid object name"):
        api.volume_delete(ref)
    with pytest.raises(errors.InvalidArgument, match="not a valid object name"):
        api.snapshot_update(ref, tags={"x": "y"})
    assert time.monotonic() - started < 0.5  # refused at once, not retried
    assert api.volume("a").name == "a" and api.snapshot(f"~{gid}").tags == {}
