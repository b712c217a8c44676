"""One behaviour suite, two StorPool clients: `StorPoolApi` against an in-process emulator and
the in-memory `MemoryStorPool`, configured alike (templates, clients, cluster id). Every
parametrized test runs against both and asserts the same observable results, error classes,
StorPool error names and messages, global ids and request counts; that keeps the fake honest.
The emulator is the reference. The tests at the end are for the fake's own test controls.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spcs.common import errors, validate
from spcs.emulator import Bridge, Emulator
from spcs.emulator.errors import ApiError
from spcs.storpool import errors as sp_errors
from spcs.storpool.api import RetryPolicy, StorPoolApi
from spcs.storpool.client import StorPoolClient
from spcs.storpool.memory import MemoryStorPool
from spcs.storpool.records import Attachment, StorPoolSnapshot, StorPoolVolume, TemplateStatus

pytestmark = pytest.mark.fast

TOKEN = "5550123456789"
MiB = 1 << 20
CLUSTER = "emu.a"
TEMPLATES: dict[str, int | None] = {"hybrid": None, "small": 4 * MiB, "full": 0}
CLIENTS = (1, 2)


@dataclass
class Backend:
    """A client under test plus the backend-specific hooks a test needs."""

    kind: str
    api: StorPoolClient
    counts: Callable[[], dict[str, int]]
    reset_counts: Callable[[], None]
    mark_open: Callable[[int, str, bool], None]
    write: Callable[[str, int], None]  # (volume global id, bytes from offset 0)


@contextlib.contextmanager
def _emulator_backend(tmp_path: Path) -> Iterator[Backend]:
    emu = Emulator(
        tmp_path / "data",
        token=TOKEN,
        clients={cid: tmp_path / f"host{cid}" for cid in CLIENTS},
        cluster_id=CLUSTER,
        templates=TEMPLATES,
    )
    emu.start()

    def write(gid: str, nbytes: int) -> None:
        assert emu.cluster is not None
        fd = os.open(emu.cluster.data_path(gid), os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x5a" * nbytes, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def mark_open(client: int, ref: str, snapshot: bool) -> None:
        try:
            emu.mark_open(client, ref, snapshot=snapshot)
        except ApiError as error:  # as the fake's test control answers misuse
            raise ValueError(error.descr) from None

    try:
        yield Backend(
            "emulator",
            StorPoolApi(emu.host, emu.port, TOKEN, retry=RetryPolicy(total_seconds=2)),
            emu.request_counts,
            lambda: emu.reset_request_counts().clear(),  # (returns the counts until now)
            mark_open,
            write,
        )
    finally:
        emu.stop(release_devices=True)


def _memory_backend() -> Backend:
    fake = MemoryStorPool(templates=TEMPLATES, clients=CLIENTS, cluster_id=CLUSTER)
    return Backend(
        "memory",
        fake,
        lambda: dict(sorted(fake.calls.items())),
        fake.calls.clear,
        lambda client, ref, snapshot: fake.mark_open(client, ref, snapshot=snapshot),
        lambda gid, nbytes: fake.write(f"~{gid}", nbytes),
    )


@pytest.fixture(params=["emulator", "memory"])
def sp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        yield _memory_backend()
    else:
        with _emulator_backend(tmp_path) as backend:
            yield backend


@dataclass
class Locations:
    """Two clients of two StorPool locations that know each other: emu (emu.a) and zone2."""

    here: StorPoolClient
    there: StorPoolClient
    wait_recovered: Callable[[str], None]  # (global id in zone2)


@pytest.fixture(params=["emulator", "memory"])
def locations(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Locations]:
    if request.param == "memory":
        registry: dict[str, MemoryStorPool] = {}
        here = MemoryStorPool(templates=TEMPLATES, cluster_id=CLUSTER, locations=registry)
        there = MemoryStorPool(templates=TEMPLATES, cluster_id="zone2.a", locations=registry)
        yield Locations(here, there, lambda gid: None)
        return
    bridge = Bridge()
    emus = [
        Emulator(tmp_path / cid, token=TOKEN, cluster_id=cid, templates=TEMPLATES, bridge=bridge)
        for cid in (CLUSTER, "zone2.a")
    ]
    for emu in emus:
        emu.start()
    clients = [StorPoolApi(e.host, e.port, TOKEN, retry=RetryPolicy(total_seconds=2)) for e in emus]

    def wait_recovered(gid: str) -> None:
        deadline = time.monotonic() + 10
        while clients[1].snapshot(f"~{gid}").recovering:
            assert time.monotonic() < deadline, "the copy did not arrive"
            time.sleep(0.02)

    try:
        yield Locations(clients[0], clients[1], wait_recovered)
    finally:
        for emu in reversed(emus):
            emu.stop(release_devices=True)


def fails(
    cls: type[errors.SpcsError], sp_name: str | None, action: Callable[[], object]
) -> errors.SpcsError:
    """`action` raises `cls`; a StorPool answer (sp_name given) is the typed StorPool error,
    a refusal of the bindings' client-side checks (sp_name None) is not."""
    with pytest.raises(cls) as raised:
        action()
    error = raised.value
    if sp_name is None:
        assert not isinstance(error, sp_errors.StorPoolError), error.message
    else:
        assert isinstance(error, sp_errors.StorPoolError), error.message
        assert error.sp_name == sp_name
        assert isinstance(error, sp_errors.BY_NAME[sp_name])
        assert error.message.endswith(f" ({sp_name})")
        assert error.reason.startswith("STORPOOL_")
    return error


def vol(sp: Backend, name: str = "v1", size: int = MiB, **kw: Any) -> str:
    return sp.api.volume_create(name=name, size=size, template=kw.pop("template", "hybrid"), **kw)


# ---- volumes ---------------------------------------------------------------------------------


def test_create_and_read_a_volume(sp: Backend):
    gid = vol(sp, iops=500, bw=2048, tags={"cs": "volume", "uuid": "u-1"})
    assert gid == "emu.a.1"
    expected = StorPoolVolume(
        name="v1",
        global_id=gid,
        size=MiB,
        parent="",
        template="hybrid",
        iops=500,
        bw=2048,
        tags={"cs": "volume", "uuid": "u-1"},
    )
    assert sp.api.volume("v1") == expected
    assert sp.api.volume(f"~{gid}") == expected
    assert sp.api.volume_or_none("v1") == expected
    assert sp.api.volumes() == [expected]
    assert expected.ref == "~emu.a.1" and not expected.is_snapshot


def test_a_volume_without_template_is_unlimited(sp: Backend):
    gid = sp.api.volume_create(name="plain", size=3 * 512)
    assert sp.api.volume("plain") == StorPoolVolume("plain", gid, 1536, "", "", None, None, {})


def test_global_ids_count_in_base36_and_failures_use_none(sp: Backend):
    gids = [vol(sp, f"v{n}") for n in range(11)]
    fails(errors.AlreadyExists, "objectExists", lambda: vol(sp, "v0"))
    fails(errors.InvalidArgument, "invalidParam", lambda: sp.api.volume_create(name="nosize"))
    gids.append(vol(sp, "last"))
    assert gids == [f"emu.a.{c}" for c in "123456789abc"]
    assert [v.name for v in sp.api.volumes()] == [*(f"v{n}" for n in range(11)), "last"]


def test_a_second_create_with_the_same_name_is_object_exists(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    for name in ("v1", "s1"):  # volumes and snapshots share one namespace
        error = fails(errors.AlreadyExists, "objectExists", lambda name=name: vol(sp, name))
        assert error.message == (
            f"StorPool: create volume {name}: an object named {name} already exists (objectExists)"
        )
    assert [v.name for v in sp.api.volumes()] == ["v1"]


def test_missing_refs_are_not_found(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: sp.api.volume("nope"), "StorPool: volume nope: volume nope does not exist"),
        (
            lambda: sp.api.volume("~emu.a.zz"),
            "StorPool: volume ~emu.a.zz: volume ~emu.a.zz does not exist",
        ),
        (lambda: sp.api.volume("s1"), "StorPool: volume s1: volume s1 does not exist"),
        (lambda: sp.api.snapshot("v1"), "StorPool: snapshot v1: snapshot v1 does not exist"),
        (
            lambda: sp.api.volume_update("nope", size=MiB),
            "StorPool: update volume nope: volume nope does not exist",
        ),
        (
            lambda: sp.api.snapshot_create("nope", name="s2"),
            "StorPool: snapshot volume nope as s2: volume nope does not exist",
        ),
        (
            lambda: sp.api.snapshot_update("nope", tags={"a": "b"}),
            "StorPool: update snapshot nope: snapshot nope does not exist",
        ),
        (
            lambda: sp.api.volume_revert("v1", "nope"),
            "StorPool: revert volume v1 to nope: snapshot nope does not exist",
        ),
        (
            lambda: sp.api.volume_create(name="c", template="nope", size=MiB),
            "StorPool: create volume c: template nope does not exist",
        ),
        (
            lambda: sp.api.volume_create(name="c", parent="nope"),
            "StorPool: create volume c: snapshot nope does not exist",
        ),
        (
            lambda: sp.api.volume_create(name="c", base_on="nope"),
            "StorPool: create volume c: volume nope does not exist",
        ),
        (lambda: sp.api.template("nope"), "StorPool: template nope: template nope does not exist"),
    ]
    for action, message in cases:
        error = fails(errors.NotFound, "objectDoesNotExist", action)
        assert error.message == f"{message} (objectDoesNotExist)"
    assert sp.api.volume_or_none("nope") is None
    assert sp.api.snapshot_or_none("nope") is None
    assert sp.api.volume_delete("nope") is False
    assert sp.api.snapshot_delete("nope") is False


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            lambda api: api.volume_create(name="bad name!", size=MiB),
            'create volume bad name!: VolumeCreateDesc: Invalid VolumeName "bad name!". '
            r"Must match ^\#?[A-Za-z0-9_\-.:]+$",
        ),
        (
            lambda api: api.volume_create(name="list", size=MiB),
            "create volume list: VolumeCreateDesc: VolumeName must not be in ['list', 'status']",
        ),
        (
            lambda api: api.volume_create(name="n" * 200, size=MiB),
            f"create volume {'n' * 200}: VolumeCreateDesc: VolumeName is too long. "
            "Max allowed is 199",
        ),
        (
            lambda api: api.volume_create(name="v", size=1000),
            "create volume v: VolumeCreateDesc: Invalid Size 1000. Must be a multiple of 512",
        ),
        (
            lambda api: api.volume_create(name="v", size=0),
            "create volume v: VolumeCreateDesc: Invalid Size 0. Must be positive",
        ),
        (
            lambda api: api.volume_create(name="v", size=MiB, iops=-1),
            "create volume v: VolumeCreateDesc: Ivalid IOPS. Must be at least 0",
        ),
        (
            lambda api: api.volume_create(name="v", size=MiB, tags={"a b": "x"}),
            "create volume v: VolumeCreateDesc: {VolumeTagName: VolumeTagValue}: Invalid "
            r'VolumeTagName "a b". Must match ^[A-Za-z0-9_\-.:]+$',
        ),
        (
            lambda api: api.volume_create(name="v", size=MiB, template="no pe"),
            'create volume v: VolumeCreateDesc: Invalid VolumeTemplateName "no pe". '
            r"Must match ^[A-Za-z0-9_\-]+$",
        ),
        (
            lambda api: api.volume("no pe"),
            'volume no pe: Invalid VolumeNameOrGlobalId "no pe". '
            r"Must match ^\#?[A-Za-z0-9_\-.:]+$|^~[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$",
        ),
        (
            lambda api: api.volume_update("v1", rename="a b"),
            'update volume v1: VolumeUpdateDesc: Invalid VolumeName "a b". '
            r"Must match ^\#?[A-Za-z0-9_\-.:]+$",
        ),
        (
            lambda api: api.volume_update("v1", sizeAdd=100),
            "update volume v1: VolumeUpdateDesc: Invalid SizeAdd 100. Must be a multiple of 512",
        ),
        (
            lambda api: api.volume_update("v1", replication=5),
            "update volume v1: VolumeUpdateDesc: Invalid Replication. Must be between 1 and 3",
        ),
        (
            lambda api: api.snapshot_create("v1", name="a@b"),
            'snapshot volume v1 as a@b: VolumeSnapshotDesc: Invalid VolumeName "a@b". '
            r"Must match ^\#?[A-Za-z0-9_\-.:]+$",
        ),
        (
            lambda api: api.group_snapshot([("v1", "a b")], {}),
            "group snapshot: GroupSnapshotsSpec: [GroupSnapshotSpec]: GroupSnapshotSpec: "
            r'Invalid SnapshotName "a b". Must match ^\*?[A-Za-z0-9_\-.:@]+$',
        ),
        (
            lambda api: api.attach("v1", 0, read_only=False, snapshot=False, timeout=5),
            "attach volume v1 to client 0: VolumesReassignWaitDesc: [Either(VolumeReassignDesc, "
            "SnapshotReassignDesc)]: The value does not match any type",
        ),
        (
            lambda api: api.template("no pe"),
            'template no pe: Invalid VolumeTemplateName "no pe". Must match ^[A-Za-z0-9_\\-]+$',
        ),
    ],
)
def test_the_bindings_refuse_bad_input_before_sending(
    sp: Backend, action: Callable[[StorPoolClient], object], message: str
):
    vol(sp)
    sp.reset_counts()
    error = fails(errors.InvalidArgument, None, lambda: action(sp.api))
    assert error.message == message
    assert sp.counts() == {}
    assert [v.name for v in sp.api.volumes()] == ["v1"]


def test_sizes_beyond_the_maximum_are_never_sent(sp: Backend):
    vol(sp)
    sp.reset_counts()
    too_big = validate.MAX_SIZE + 512
    for action in (
        lambda: vol(sp, "w", too_big),
        lambda: sp.api.volume_update("v1", size=too_big),
    ):
        error = fails(errors.InvalidArgument, None, action)
        assert str(too_big) in error.message and validate.MAX_SIZE_TEXT in error.message
    assert sp.counts() == {}
    error = fails(
        errors.InvalidArgument, "invalidParam", lambda: sp.api.volume_update("v1", sizeAdd=too_big)
    )
    assert "must be at most" in error.message
    assert sp.api.volume("v1").size == MiB


def test_a_create_needs_a_size_and_one_source(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    error = fails(
        errors.InvalidArgument,
        "invalidParam",
        lambda: sp.api.volume_create(name="c", template="hybrid"),
    )
    assert error.message == (
        "StorPool: create volume c: size is required (no template size or parent to take it "
        "from) (invalidParam)"
    )
    error = fails(
        errors.InvalidArgument,
        "invalidParam",
        lambda: sp.api.volume_create(name="c", parent="s1", base_on="v1"),
    )
    assert "give parent or baseOn, not both" in error.message
    assert [v.name for v in sp.api.volumes()] == ["v1"]


def test_a_full_template_is_insufficient_resources(sp: Backend):
    error = fails(
        errors.ResourceExhausted,
        "insufficientResources",
        lambda: vol(sp, "f", template="full"),
    )
    assert error.message == (
        "StorPool: create volume f: template full is full (0 bytes) (insufficientResources)"
    )
    assert sp.api.volumes() == []


def test_tags_are_merged_and_an_empty_value_removes_one(sp: Backend):
    vol(sp, tags={"keep": "1", "drop": "2", "empty": ""})
    assert sp.api.volume("v1").tags == {"keep": "1", "drop": "2", "empty": ""}
    sp.api.volume_update("v1", tags={"drop": "", "new": "3", "keep": "one"})
    assert sp.api.volume("v1").tags == {"keep": "one", "empty": "", "new": "3"}
    sp.api.volume_update("v1", tags={"absent": ""})
    assert sp.api.volume("v1").tags == {"keep": "one", "empty": "", "new": "3"}


def test_limits_are_set_and_dash_means_unlimited(sp: Backend):
    vol(sp)
    sp.api.volume_update("v1", iops=500, bw=100)
    assert (sp.api.volume("v1").iops, sp.api.volume("v1").bw) == (500, 100)
    sp.api.volume_update("v1", iops="-")
    assert (sp.api.volume("v1").iops, sp.api.volume("v1").bw) == (None, 100)
    sp.api.volume_update("v1", bw="-", iops=0)
    assert (sp.api.volume("v1").iops, sp.api.volume("v1").bw) == (0, None)


def test_resize_grows_and_shrinking_needs_shrink_ok(sp: Backend):
    vol(sp)
    sp.api.volume_update("v1", size=4 * MiB)
    assert sp.api.volume("v1").size == 4 * MiB
    error = fails(
        errors.InvalidArgument, "invalidParam", lambda: sp.api.volume_update("v1", size=2 * MiB)
    )
    assert error.message == (
        f"StorPool: update volume v1: shrinking v1 from {4 * MiB} to {2 * MiB} bytes requires "
        "shrinkOk (invalidParam)"
    )
    assert sp.api.volume("v1").size == 4 * MiB
    sp.api.volume_update("v1", size=2 * MiB, shrinkOk=True)
    assert sp.api.volume("v1").size == 2 * MiB
    sp.api.volume_update("v1", sizeAdd=MiB)
    assert sp.api.volume("v1").size == 3 * MiB
    error = fails(
        errors.InvalidArgument,
        "invalidParam",
        lambda: sp.api.volume_update("v1", size=8 * MiB, sizeAdd=MiB),
    )
    assert "give size or sizeAdd, not both" in error.message


def test_rename_keeps_the_global_id(sp: Backend):
    gid = vol(sp)
    vol(sp, "other")
    sp.api.volume_update("v1", rename="v1")  # the same name: nothing to do
    sp.api.volume_update("v1", rename="renamed")
    assert sp.api.volume_or_none("v1") is None
    assert sp.api.volume("renamed").global_id == gid
    error = fails(
        errors.AlreadyExists,
        "objectExists",
        lambda: sp.api.volume_update("renamed", rename="other"),
    )
    assert error.message == (
        "StorPool: update volume renamed: an object named other already exists (objectExists)"
    )
    assert sp.api.volume(f"~{gid}").name == "renamed"
    vol(sp, "v1")  # the old name is free again


def test_a_refused_update_changes_nothing(sp: Backend):
    vol(sp, tags={"a": "1"})
    fails(
        errors.NotFound,
        "objectDoesNotExist",
        lambda: sp.api.volume_update("v1", tags={"a": "2"}, iops=5, template="nope"),
    )
    fails(
        errors.InvalidArgument,
        "invalidParam",
        lambda: sp.api.volume_update("v1", tags={"a": "2"}, rename="x", size=512),
    )
    assert sp.api.volume("v1") == StorPoolVolume(
        "v1", "emu.a.1", MiB, "", "hybrid", None, None, {"a": "1"}
    )


def test_retemplate_moves_the_volume(sp: Backend):
    vol(sp)
    sp.api.volume_update("v1", template="small")
    assert sp.api.volume("v1").template == "small"
    assert sp.api.template_status("small").volumes == 1
    assert sp.api.template_status("hybrid").volumes == 0


def test_delete_a_volume(sp: Backend):
    vol(sp)
    vol(sp, "v2")
    assert sp.api.volume_delete("v1") is True
    assert sp.api.volume_delete("v1") is False
    assert [v.name for v in sp.api.volumes()] == ["v2"]
    assert sp.api.volume_delete("~emu.a.2") is True
    assert sp.api.volumes() == []


# ---- snapshots -------------------------------------------------------------------------------


def test_snapshot_of_a_volume(sp: Backend):
    vol(sp, iops=300, tags={"cs": "volume"})
    s1 = sp.api.snapshot_create("v1", name="s1", tags={"cs": "snapshot"})
    assert s1 == "emu.a.2"
    expected = StorPoolSnapshot(
        name="s1",
        global_id=s1,
        size=MiB,
        parent="",
        template="hybrid",
        iops=300,
        bw=None,
        tags={"cs": "snapshot"},
        deleted=False,
        on_volume="v1",
    )
    assert sp.api.snapshot("s1") == expected == sp.api.snapshot(f"~{s1}")
    assert sp.api.snapshot_or_none("s1") == expected and expected.is_snapshot
    assert sp.api.volume("v1").parent == "s1"
    s2 = sp.api.snapshot_create("v1", name="s2")
    assert sp.api.snapshot("s2").parent == "s1" and sp.api.snapshot("s2").tags == {}
    assert sp.api.volume("v1").parent == "s2"
    assert [s.global_id for s in sp.api.snapshots()] == [s1, s2]


def test_snapshot_name_rules(sp: Backend):
    vol(sp)
    error = fails(
        errors.InvalidArgument, "invalidParam", lambda: sp.api.snapshot_create("v1", name="#s")
    )
    assert error.message == (
        'StorPool: snapshot volume v1 as #s: invalid snapshot name "#s", a snapshot name can '
        'not start with "#" (invalidParam)'
    )
    error = fails(
        errors.AlreadyExists, "objectExists", lambda: sp.api.snapshot_create("v1", name="v1")
    )
    assert "an object named v1 already exists" in error.message
    assert sp.api.snapshots() == []


def test_clone_from_a_snapshot(sp: Backend):
    vol(sp, size=2 * MiB, iops=700, template="small")
    sp.api.snapshot_create("v1", name="s1")
    gid = sp.api.volume_create(name="c1", parent="s1")
    assert sp.api.volume("c1") == StorPoolVolume("c1", gid, 2 * MiB, "s1", "small", 700, None, {})
    sp.api.volume_create(name="c2", parent="~emu.a.2", size=4 * MiB, template="hybrid", iops=9)
    c2 = sp.api.volume("c2")
    assert (c2.parent, c2.size, c2.template, c2.iops) == ("s1", 4 * MiB, "hybrid", 9)
    error = fails(
        errors.InvalidArgument,
        "invalidParam",
        lambda: sp.api.volume_create(name="c3", parent="s1", size=MiB),
    )
    assert error.message == (
        f"StorPool: create volume c3: size {MiB} is smaller than the size of s1 ({2 * MiB}) "
        "(invalidParam)"
    )


def test_base_on_clones_through_a_transient_snapshot(sp: Backend):
    vol(sp, size=2 * MiB)
    sp.api.snapshot_create("v1", name="s1")
    gid = sp.api.volume_create(name="copy", base_on="v1")
    assert gid == "emu.a.4"  # the transient snapshot took emu.a.3
    copy = sp.api.volume("copy")
    assert (copy.parent, copy.size, copy.template) == ("*v1@3", 2 * MiB, "hybrid")
    transient = sp.api.snapshot("*v1@3")
    assert (transient.global_id, transient.parent, transient.on_volume) == ("emu.a.3", "s1", "v1")
    assert sp.api.volume("v1").parent == "s1"  # the source's chain is left alone
    fails(
        errors.InvalidArgument,
        "invalidParam",
        lambda: sp.api.volume_create(name="c2", parent="*v1@3"),
    )
    assert sp.api.volume_delete("copy")
    assert [s.name for s in sp.api.snapshots()] == ["s1"]


def test_deleting_a_snapshot_with_a_child_marks_it_deleted(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    sp.api.volume_create(name="child", parent="s1")
    assert sp.api.volume_delete("v1")
    assert sp.api.snapshot_delete("s1") is True
    assert sp.api.snapshot("s1").deleted is True
    assert sp.api.snapshot_or_none("s1") is None
    assert [(s.name, s.deleted, s.on_volume) for s in sp.api.snapshots()] == [("s1", True, "-")]
    assert sp.api.volume("child").parent == "s1"
    fails(errors.AlreadyExists, "objectExists", lambda: vol(sp, "s1"))  # it keeps its name
    error = fails(
        errors.InvalidArgument,
        "invalidParam",
        lambda: sp.api.volume_create(name="c2", parent="s1"),
    )
    assert "snapshot s1 is being deleted" in error.message
    assert sp.api.snapshot_delete("s1") is True  # again: still there, still deleted
    assert sp.api.volume_delete("child")
    assert sp.api.snapshots() == []
    assert sp.api.snapshot_delete("s1") is False


def test_a_deleted_chain_goes_away_with_its_last_child(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    sp.api.snapshot_create("v1", name="s2")  # s2's parent is s1, v1's is s2
    assert sp.api.snapshot_delete("s1") and sp.api.snapshot_delete("s2")
    assert [(s.name, s.deleted) for s in sp.api.snapshots()] == [("s1", True), ("s2", True)]
    sp.api.volume_delete("v1")
    assert sp.api.snapshots() == []


def test_snapshot_delete_detaches_it_first(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    sp.api.attach("s1", 1, read_only=True, snapshot=True, timeout=5)
    sp.api.attach("s1", 2, read_only=True, snapshot=True, timeout=5)
    sp.reset_counts()
    assert sp.api.snapshot_delete("s1") is True
    assert sp.counts() == {"SnapshotDelete": 1, "VolumesReassign": 1}
    assert sp.api.attachments() == []
    assert [(s.name, s.deleted) for s in sp.api.snapshots()] == [("s1", True)]  # v1's parent
    sp.api.volume_delete("v1")
    assert sp.api.snapshots() == []


def test_snapshot_update_tags_rename_and_anonymous(sp: Backend):
    vol(sp)
    gid = sp.api.snapshot_create("v1", name="s1", tags={"a": "1", "b": "2"})
    sp.api.snapshot_update("s1", tags={"a": "", "c": "3"}, iops=50)
    snap = sp.api.snapshot("s1")
    assert (snap.tags, snap.iops) == ({"b": "2", "c": "3"}, 50)
    sp.api.snapshot_update("s1", rename="s1-new")
    assert sp.api.snapshot_or_none("s1") is None and sp.api.snapshot("s1-new").global_id == gid
    error = fails(
        errors.InvalidArgument,
        "invalidParam",
        lambda: sp.api.snapshot_update("s1-new", rename="#x"),
    )
    assert 'a snapshot name can not start with "#"' in error.message
    sp.api.snapshot_update("s1-new", rename="")  # anonymous: ~<global id> only
    assert sp.api.snapshot(f"~{gid}").name == f"~{gid}"
    assert sp.api.volume("v1").parent == f"~{gid}"
    assert [s.name for s in sp.api.snapshots()] == [f"~{gid}"]


def test_snapshot_update_refusals(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    error = fails(
        errors.InvalidArgument,
        "invalidParam",
        lambda: sp.api.snapshot_update("s1", targetDeleteDate=1),
    )
    assert error.message == (
        "StorPool: update snapshot s1: targetDeleteDate can not be in the past (invalidParam)"
    )
    error = fails(
        errors.InvalidArgument, "invalidParam", lambda: sp.api.snapshot_update("s1", bw=-1)
    )
    assert (
        error.message
        == 'StorPool: update snapshot s1: bw must be an integer >= 0 or "-" (invalidParam)'
    )
    error = fails(
        errors.NotFound, "objectDoesNotExist", lambda: sp.api.snapshot_update("s1", template="x")
    )
    assert error.message == (
        "StorPool: update snapshot s1: template x does not exist (objectDoesNotExist)"
    )
    sp.api.snapshot_update("s1", template="small", deleteAfter=3600)
    assert sp.api.snapshot("s1").template == "small"


def test_binding_a_childless_snapshot_collects_it(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    sp.api.volume_create(name="c", parent="s1")
    sp.api.volume_delete("v1")
    sp.api.snapshot_update("s1", bind=True)
    assert [s.name for s in sp.api.snapshots()] == ["s1"]  # c is its child
    sp.api.volume_delete("c")
    assert sp.api.snapshots() == []


def test_revert_to_a_snapshot(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    sp.api.snapshot_create("v1", name="s2")
    sp.api.volume_update("v1", size=2 * MiB)
    sp.api.snapshot_delete("s2")  # marked deleted: v1 is its child
    error = fails(errors.InvalidArgument, "invalidParam", lambda: sp.api.volume_revert("v1", "s2"))
    assert "snapshot s2 is being deleted" in error.message
    sp.api.volume_revert("v1", "s1")
    v1 = sp.api.volume("v1")
    assert (v1.parent, v1.size) == ("s1", 2 * MiB)  # the size stays
    assert [s.name for s in sp.api.snapshots()] == ["s1"]  # s2 lost its last child
    sp.api.attach("v1", 1, read_only=False, snapshot=False, timeout=5)
    error = fails(errors.FailedPrecondition, "busy", lambda: sp.api.volume_revert("v1", "s1"))
    assert error.message == (
        "StorPool: revert volume v1 to s1: volume v1 is attached; detach it before reverting (busy)"
    )
    assert sp_errors.is_busy(error)


def test_group_snapshot(sp: Backend):
    vol(sp, "a")
    vol(sp, "b", size=2 * MiB)
    rows = sp.api.group_snapshot([("a", "a@g"), ("~emu.a.2", "b@g")], {"grp": "g1"})
    assert rows == [
        {
            "volume": "a",
            "volumeGlobalId": "emu.a.1",
            "snapshot": "a@g",
            "snapshotGlobalId": "emu.a.3",
            "remoteId": "emu.a.3",
        },
        {
            "volume": "b",
            "volumeGlobalId": "emu.a.2",
            "snapshot": "b@g",
            "snapshotGlobalId": "emu.a.4",
            "remoteId": "emu.a.4",
        },
    ]
    snaps = sp.api.snapshots()
    assert [(s.name, s.size, s.on_volume, s.tags) for s in snaps] == [
        ("a@g", MiB, "a", {"grp": "g1"}),
        ("b@g", 2 * MiB, "b", {"grp": "g1"}),
    ]
    assert (sp.api.volume("a").parent, sp.api.volume("b").parent) == ("a@g", "b@g")


def test_a_refused_group_snapshot_takes_none(sp: Backend):
    vol(sp, "a")
    vol(sp, "b")
    cases: list[tuple[type[errors.SpcsError], str, list[tuple[str, str]], str]] = [
        (errors.InvalidArgument, "invalidParam", [], "volumes must be a non-empty list"),
        (
            errors.NotFound,
            "objectDoesNotExist",
            [("a", "x"), ("c", "y")],
            "volume c does not exist",
        ),
        (
            errors.InvalidArgument,
            "invalidParam",
            [("a", "x"), ("a", "y")],
            "volume a is listed twice",
        ),
        (
            errors.AlreadyExists,
            "objectExists",
            [("a", "x"), ("b", "x")],
            "an object named x already exists",
        ),
        (
            errors.AlreadyExists,
            "objectExists",
            [("a", "x"), ("b", "a")],
            "an object named a already exists",
        ),
    ]
    for cls, name, specs, desc in cases:
        error = fails(cls, name, lambda specs=specs: sp.api.group_snapshot(specs, {}))
        assert error.message == f"StorPool: group snapshot: {desc} ({name})"
    assert sp.api.snapshots() == []
    assert sp.api.snapshot_create("a", name="s") == "emu.a.3"


# ---- attachments -----------------------------------------------------------------------------


def test_attach_and_list_attachments(sp: Backend):
    vol(sp)
    vol(sp, "v2")
    sp.api.snapshot_create("v1", name="s1")
    sp.api.attach("v1", 2, read_only=False, snapshot=False, timeout=5)
    sp.api.attach("v1", 1, read_only=True, snapshot=False, timeout=5)
    sp.api.attach("s1", 1, read_only=False, snapshot=True, timeout=5)  # snapshots: always ro
    sp.api.attach("v2", 1, read_only=False, snapshot=False, timeout=0)
    assert sp.api.attachments() == [
        Attachment("v1", False, 1, "ro", "emu.a.1"),
        Attachment("s1", True, 1, "ro", "emu.a.3"),
        Attachment("v2", False, 1, "rw", "emu.a.2"),
        Attachment("v1", False, 2, "rw", "emu.a.1"),
    ]


def test_attaching_again_changes_the_rights(sp: Backend):
    vol(sp)
    sp.api.attach("v1", 1, read_only=False, snapshot=False, timeout=5)
    sp.api.attach("v1", 1, read_only=True, snapshot=False, timeout=5)
    assert sp.api.attachments() == [Attachment("v1", False, 1, "ro", "emu.a.1")]
    sp.api.attach("~emu.a.1", 1, read_only=False, snapshot=False, timeout=5)
    assert sp.api.attachments() == [Attachment("v1", False, 1, "rw", "emu.a.1")]


def test_attach_refusals(sp: Backend):
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    sp.api.volume_create(name="c", parent="s1")
    sp.api.volume_delete("v1")
    sp.api.snapshot_delete("s1")  # deleted, kept for its child
    cases: list[tuple[type[errors.SpcsError], str, Callable[[], object], str]] = [
        (
            errors.InvalidArgument,
            "invalidParam",
            lambda: sp.api.attach("c", 3, read_only=False, snapshot=False, timeout=5),
            "attach volume c to client 3: No such client registered: 3",
        ),
        (
            errors.InvalidArgument,
            "invalidParam",
            lambda: sp.api.attach("c", 2, read_only=False, snapshot=False, timeout=-1),
            "attach volume c to client 2: attachTimeout must be >= 0",
        ),
        (
            errors.InvalidArgument,
            "invalidParam",
            lambda: sp.api.attach("s1", 1, read_only=True, snapshot=True, timeout=5),
            "attach snapshot s1 to client 1: snapshot s1 can not be attached (deleted or "
            "transient)",
        ),
        (
            errors.NotFound,
            "objectDoesNotExist",
            lambda: sp.api.attach("c", 1, read_only=False, snapshot=True, timeout=5),
            "attach snapshot c to client 1: snapshot c does not exist",
        ),
        (
            errors.InvalidArgument,
            "invalidParam",
            lambda: sp.api.detach("c", 9, snapshot=False, force=False),
            "detach volume c from client 9: No such client registered: 9",
        ),
    ]
    for cls, name, action, message in cases:
        assert fails(cls, name, action).message == f"StorPool: {message} ({name})"
    assert sp.api.attachments() == []


def test_detach_and_detach_all(sp: Backend):
    vol(sp)
    vol(sp, "v2")
    for cid in CLIENTS:
        sp.api.attach("v1", cid, read_only=False, snapshot=False, timeout=5)
    sp.api.attach("v2", 1, read_only=False, snapshot=False, timeout=5)
    sp.api.detach("v1", 1, snapshot=False, force=False)
    sp.api.detach("v1", 1, snapshot=False, force=False)  # not attached there: nothing to do
    assert [(a.volume, a.client) for a in sp.api.attachments()] == [("v2", 1), ("v1", 2)]
    sp.api.attach("v1", 1, read_only=False, snapshot=False, timeout=5)
    sp.api.detach_all("v1", snapshot=False)
    sp.api.detach_all("v1", snapshot=False)
    assert sp.api.attachments() == [Attachment("v2", False, 1, "rw", "emu.a.2")]
    fails(errors.NotFound, "objectDoesNotExist", lambda: sp.api.detach_all("nope", snapshot=False))


def test_detaching_an_open_attachment_is_busy_unless_forced(sp: Backend):
    vol(sp)
    sp.api.attach("v1", 1, read_only=False, snapshot=False, timeout=5)
    sp.api.attach("v1", 2, read_only=False, snapshot=False, timeout=5)
    sp.mark_open(1, "v1", False)
    error = fails(
        errors.FailedPrecondition,
        "busy",
        lambda: sp.api.detach("v1", 1, snapshot=False, force=False),
    )
    assert (
        error.message == "StorPool: detach volume v1 from client 1: 'v1' is open at client 1 (busy)"
    )
    sp.api.detach("v1", 2, snapshot=False, force=False)
    assert [a.client for a in sp.api.attachments()] == [1]
    sp.api.detach("v1", 1, snapshot=False, force=True)
    assert sp.api.attachments() == []


def test_deleting_an_attached_open_volume_detaches_it(sp: Backend):
    vol(sp)
    sp.api.attach("v1", 1, read_only=False, snapshot=False, timeout=5)
    sp.mark_open(1, "v1", False)
    assert sp.api.volume_delete("v1") is True
    assert sp.api.attachments() == [] and sp.api.volumes() == []


def test_attachments_follow_a_rename_and_positions_are_reused(sp: Backend):
    vol(sp)
    vol(sp, "v2")
    sp.api.attach("v1", 1, read_only=False, snapshot=False, timeout=5)
    sp.api.attach("v2", 1, read_only=False, snapshot=False, timeout=5)
    sp.api.volume_update("v1", rename="v1b")
    sp.api.detach("v1b", 1, snapshot=False, force=False)
    sp.api.attach("v1b", 1, read_only=False, snapshot=False, timeout=5)  # back at position 0
    assert [a.volume for a in sp.api.attachments()] == ["v1b", "v2"]


# ---- templates, space, cluster -----------------------------------------------------------------


def test_template_describe(sp: Backend):
    expected = {
        "id": 2,
        "name": "small",
        "parentName": "",
        "placeAll": "default",
        "placeTail": "default",
        "placeHead": "default",
        "replication": 3,
        "size": "-",
        "bw": "-",
        "iops": "-",
    }
    assert sp.api.template("small") == expected
    assert sp.api.template("hybrid")["id"] == 1


def test_template_status(sp: Backend):
    assert sp.api.template_status("small") == TemplateStatus("small", 4 * MiB, 4 * MiB, 0, 0)
    vol(sp, template="small")
    vol(sp, "v2", template="small")
    sp.api.snapshot_create("v1", name="s1")
    sp.api.snapshot_create("v1", name="s2")
    assert sp.api.template_status("small") == TemplateStatus("small", 4 * MiB, 4 * MiB, 2, 2)
    hybrid = sp.api.template_status("hybrid")
    assert (hybrid.volumes, hybrid.snapshots) == (0, 0) and hybrid.capacity > 0
    error = fails(errors.NotFound, None, lambda: sp.api.template_status("nope"))
    assert error.message == f"StorPool template nope does not exist at {sp.api.endpoint}"


def test_written_bytes_fill_a_template(sp: Backend):
    gid = vol(sp, size=2 * MiB, template="small")
    sp.write(gid, MiB)
    assert sp.api.template_status("small").free == 3 * MiB
    sp.api.snapshot_create("v1", name="s1")  # the snapshot holds the same bytes
    assert sp.api.template_status("small").free == 2 * MiB
    sp.api.volume_create(name="c", parent="s1")  # so does a clone
    assert sp.api.template_status("small").free == MiB
    sp.write(gid, 2 * MiB)
    assert sp.api.template_status("small").free == 0
    for action in (
        lambda: vol(sp, "v2", template="small"),
        lambda: sp.api.snapshot_create("v1", name="s2"),
        lambda: sp.api.volume_update("v1", size=4 * MiB),
    ):
        error = fails(errors.ResourceExhausted, "insufficientResources", action)
        assert "template small is full (4194304 bytes)" in error.message
    sp.api.volume_update("v1", size=MiB // 2, shrinkOk=True)  # shrinking frees the tail
    assert sp.api.template_status("small").free == MiB + MiB // 2
    assert sp.api.volumes_space() == {"v1": (MiB // 2, MiB // 2), "c": (2 * MiB, MiB)}


def test_volumes_space(sp: Backend):
    assert sp.api.volumes_space() == {}
    gid = vol(sp, size=4 * MiB)
    vol(sp, "v2", template="small")
    sp.api.snapshot_create("v1", name="s1")  # snapshots are not listed
    sp.write(gid, 2 * MiB)
    assert sp.api.volumes_space() == {"v1": (4 * MiB, 2 * MiB), "v2": (MiB, 0)}
    sp.api.volume_revert("v1", "s1")  # the snapshot's bytes: none
    assert sp.api.volumes_space()["v1"] == (4 * MiB, 0)


def test_the_space_view_follows_this_clients_changes(sp: Backend):
    gids = [vol(sp, f"v{n}", size=(n + 1) * MiB) for n in range(4)]
    sp.reset_counts()
    view = sp.api.space.view(30)
    assert [view.find(f"~{g}").size for g in gids] == [MiB, 2 * MiB, 3 * MiB, 4 * MiB]
    assert view.find("v1").global_id == gids[1] and view.find("nope") is None
    sp.api.volume_update("v0", size=8 * MiB, template="small")
    sp.api.volume_delete("v2")
    sp.api.volume_update("v3", rename="v3b")
    assert sp.api.space.view(30) is view
    assert (view.find("v0").size, view.find("v0").template) == (8 * MiB, "small")
    assert view.find(f"~{gids[2]}") is None and view.find("v3") is None
    assert sp.counts() == {"VolumeDelete": 1, "VolumeUpdate": 2, "VolumesSpace": 1}
    fresh = sp.api.space.view(0)
    assert fresh is not view and fresh.find("v3b").global_id == gids[3]
    assert sorted(r.name for r in fresh.rows()) == ["v0", "v1", "v3b"]


def test_local_cluster_id(sp: Backend):
    assert sp.api.local_cluster_id() is None
    assert sp.counts() == {"SnapshotsList": 1, "VolumesList": 1}
    vol(sp)
    sp.api.snapshot_create("v1", name="s1")
    sp.reset_counts()
    assert sp.api.local_cluster_id() == CLUSTER
    assert sp.counts() == {"VolumesList": 1}
    sp.api.volume_delete("v1")
    assert sp.api.local_cluster_id() == CLUSTER  # from the snapshot


def test_clients_and_probes(sp: Backend):
    assert [sp.api.client_running(c) for c in (1, 2, 3)] == [True, True, False]
    probe = sp.api.for_probes()
    vol(sp)
    assert [v.name for v in probe.volumes()] == ["v1"]
    assert probe.endpoint == sp.api.endpoint


def test_request_counts_per_call(sp: Backend):
    vol(sp)
    sp.api.volume("v1")
    sp.api.volume_or_none("nope")
    sp.api.snapshot_create("v1", name="s1")
    sp.api.snapshot_or_none("s1")
    sp.api.attach("v1", 1, read_only=False, snapshot=False, timeout=5)
    sp.api.detach("v1", 1, snapshot=False, force=True)
    sp.api.group_snapshot([("v1", "g")], {})
    sp.api.template("hybrid")
    sp.api.template_status("hybrid")
    sp.api.attachments()
    sp.api.volumes_space()
    sp.api.snapshot_delete("g")
    sp.api.volume_delete("v1")
    assert sp.counts() == {
        "AttachmentsList": 1,
        "Snapshot": 1,
        "SnapshotDelete": 1,
        "Volume": 2,
        "VolumeCreate": 1,
        "VolumeDelete": 1,
        "VolumeSnapshot": 1,
        "VolumeTemplateDescribe": 1,
        "VolumeTemplatesStatus": 1,
        "VolumesGroupSnapshot": 1,
        "VolumesReassign": 1,
        "VolumesReassignWait": 2,
        "VolumesSpace": 1,
    }


# ---- the fake's own surface ----------------------------------------------------------------------


PROTOCOL_METHODS = [
    name
    for name, member in vars(StorPoolClient).items()
    if callable(member) and not name.startswith("_")
]


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_the_fake_has_the_facades_signatures(name: str):
    fake, real = getattr(MemoryStorPool, name), getattr(StorPoolApi, name)
    fake_sig, real_sig = inspect.signature(fake), inspect.signature(real)
    assert list(fake_sig.parameters.values()) == list(real_sig.parameters.values())
    # for_probes answers the class itself on both sides
    assert fake_sig.return_annotation in (
        real_sig.return_annotation,
        "MemoryStorPool" if real_sig.return_annotation == "StorPoolApi" else None,
    )


def test_fail_next_injects_one_storpool_error():
    fake = MemoryStorPool(templates={"hybrid": None}, clients=[1])
    fake.fail_next("VolumeCreate", "busy", desc="try later")
    error = fails(
        errors.FailedPrecondition,
        "busy",
        lambda: fake.volume_create(name="v", size=MiB, template="hybrid"),
    )
    assert error.message == "StorPool: create volume v: try later (busy)"
    assert fake.volumes() == []
    assert fake.volume_create(name="v", size=MiB, template="hybrid") == "emu.a.1"
    assert fake.calls == {"VolumeCreate": 2, "VolumesList": 1}
    fake.fail_next("Volume", "objectDoesNotExist", times=2)
    assert fake.volume_or_none("v") is None and fake.volume_or_none("v") is None
    assert fake.volume_or_none("v") is not None
    fake.fail_next("VolumesList", "notAuthorized")
    with pytest.raises(sp_errors.StorPoolDenied) as denied:
        fake.volumes()
    assert denied.value.sp_name == "notAuthorized" and "SP_AUTH_TOKEN" in denied.value.message
    fake.fail_next("VolumesSpace", "busy", transient=True)
    with pytest.raises(errors.Unavailable, match="kept answering a transient error"):
        fake.space.view(0)
    with pytest.raises(ValueError, match="unknown command"):
        fake.fail_next("volume_create", "busy")


def test_test_controls_refuse_misuse():
    fake = MemoryStorPool(templates={"hybrid": None}, clients={1: True, 2: False})
    assert (fake.client_running(1), fake.client_running(2)) == (True, False)
    fake.set_client_running(2)
    fake.set_client_running(7, running=False)
    assert [fake.client_running(c) for c in (2, 7)] == [True, False]
    gid = fake.volume_create(name="v", size=MiB, template="hybrid")
    fake.attach("v", 7, read_only=False, snapshot=False, timeout=0)  # configured: enough
    with pytest.raises(ValueError, match="can not write"):
        fake.write("v", 2 * MiB)
    with pytest.raises(ValueError, match="volume nope does not exist"):
        fake.write("nope", 1)
    with pytest.raises(ValueError, match="not attached to client 1"):
        fake.mark_open(1, f"~{gid}")
    with pytest.raises(ValueError):
        fake.set_client_running(0)
    with pytest.raises(ValueError):
        MemoryStorPool(cluster_id="nope")


def test_the_fake_is_thread_safe():
    fake = MemoryStorPool(templates={"hybrid": None}, clients=[1])
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        start.wait()
        try:
            for i in range(25):
                name = f"v{n}-{i}"
                fake.volume_create(name=name, size=MiB, template="hybrid")
                fake.snapshot_create(name, name=f"s{n}-{i}")
                fake.attach(name, 1, read_only=False, snapshot=False, timeout=0)
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    gids = [v.global_id for v in fake.volumes()] + [s.global_id for s in fake.snapshots()]
    assert len(gids) == len(set(gids)) == 400
    assert len(fake.attachments()) == 200
    assert fake.calls["VolumeCreate"] == 200


# ---- both at once: a random workload ---------------------------------------------------------

VOLUMES = ["a", "b", "c", "#d", "e.f", "g:h", "x!y"]
SNAPSHOTS = ["s1", "s2", "s3", "s4", "s5", "a@x", "*t"]
SIZES = [512, MiB, 2 * MiB, 3 * MiB, 1000]
STEPS = 400


Action = Callable[[Backend], Any]


class _Workload:
    """Random API calls, drawn from a small name space so that calls meet each other's
    objects; some refs are `~<gid>` of objects made so far. Each call: (description, action)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.gids: list[str] = []
        self.kinds = [
            (self.volume_create, 6),
            (self.volume_update, 4),
            (self.volume_delete, 1),
            (self.volume_revert, 2),
            (self.snapshot_create, 4),
            (self.snapshot_update, 2),
            (self.snapshot_delete, 1),
            (self.group_snapshot, 2),
            (self.attach, 4),
            (self.detach, 2),
            (self.detach_all, 1),
            (self.mark_open, 1),
            (self.write, 2),
        ]

    def next(self) -> tuple[str, Action]:
        kinds, weights = zip(*self.kinds, strict=True)
        return self.rng.choices(kinds, weights)[0]()

    def ref(self, names: list[str]) -> str:
        if self.gids and self.rng.random() < 0.25:
            return "~" + self.rng.choice(self.gids)
        return self.rng.choice(names)

    def maybe(self, value: Any) -> Any:
        return value if self.rng.random() < 0.5 else None

    def tags(self) -> dict[str, str] | None:
        return self.rng.choice([None, {"k": "1"}, {"k": ""}, {"k": "2", "j": "x"}])

    def volume_create(self) -> tuple[str, Action]:
        source = self.rng.random()
        kw = {
            "name": self.rng.choice(VOLUMES),
            "size": self.rng.choice([*SIZES, None]) if self.rng.random() < 0.3 else MiB,
            "template": self.rng.choice(["hybrid", "hybrid", "small", "full", "nope", None]),
            "parent": self.ref(SNAPSHOTS) if source < 0.3 else None,
            "base_on": self.ref(VOLUMES) if 0.3 <= source < 0.45 else None,
            "iops": self.maybe(self.rng.choice([0, 100, 5000])),
            "tags": self.tags(),
        }
        return f"volume_create({kw})", lambda sp: sp.api.volume_create(**kw)

    def volume_update(self) -> tuple[str, Action]:
        ref = self.ref(VOLUMES)
        changes: dict[str, Any] = {
            "size": self.maybe(self.rng.choice(SIZES)),
            "shrinkOk": self.maybe(True),
            "iops": self.maybe(self.rng.choice([7, "-"])),
            "bw": self.maybe(self.rng.choice([9, "-"])),
            "tags": self.tags(),
            "template": self.rng.choice([None, None, "small", "hybrid", "nope"]),
            "rename": self.rng.choice([None, None, None, *VOLUMES]),
        }
        if self.rng.random() < 0.1:
            changes = {"sizeAdd": 512 * self.rng.randrange(1, 4)}
        return f"volume_update({ref}, {changes})", lambda sp: sp.api.volume_update(ref, **changes)

    def volume_delete(self) -> tuple[str, Action]:
        ref = self.ref(VOLUMES)
        return f"volume_delete({ref})", lambda sp: sp.api.volume_delete(ref)

    def volume_revert(self) -> tuple[str, Action]:
        ref, snap = self.ref(VOLUMES), self.ref(SNAPSHOTS)
        return f"volume_revert({ref}, {snap})", lambda sp: sp.api.volume_revert(ref, snap)

    def snapshot_create(self) -> tuple[str, Action]:
        ref, name, tags = self.ref(VOLUMES), self.rng.choice(SNAPSHOTS[:5]), self.tags()
        return f"snapshot_create({ref}, {name})", lambda sp: sp.api.snapshot_create(
            ref, name=name, tags=tags
        )

    def snapshot_update(self) -> tuple[str, Action]:
        ref = self.ref(SNAPSHOTS)
        changes = {
            "tags": self.tags(),
            "rename": self.rng.choice([None, None, "", *SNAPSHOTS[:5]]),
            "bind": self.maybe(self.rng.random() < 0.5),
            "iops": self.maybe(11),
        }
        return f"snapshot_update({ref}, {changes})", lambda sp: sp.api.snapshot_update(
            ref, **changes
        )

    def snapshot_delete(self) -> tuple[str, Action]:
        ref = self.ref(SNAPSHOTS)
        return f"snapshot_delete({ref})", lambda sp: sp.api.snapshot_delete(ref)

    def group_snapshot(self) -> tuple[str, Action]:
        specs = [
            (self.ref(VOLUMES), self.rng.choice(SNAPSHOTS)) for _ in range(self.rng.randrange(3))
        ]
        return f"group_snapshot({specs})", lambda sp: sp.api.group_snapshot(specs, {"g": "1"})

    def attach(self) -> tuple[str, Action]:
        snapshot = self.rng.random() < 0.3
        ref = self.ref(SNAPSHOTS if snapshot else VOLUMES)
        cid, ro = self.rng.choice([1, 2, 2, 3]), self.rng.random() < 0.5
        return f"attach({ref}, {cid}, {snapshot}, {ro})", lambda sp: sp.api.attach(
            ref, cid, read_only=ro, snapshot=snapshot, timeout=5
        )

    def detach(self) -> tuple[str, Action]:
        snapshot = self.rng.random() < 0.3
        ref = self.ref(SNAPSHOTS if snapshot else VOLUMES)
        cid, force = self.rng.choice([1, 2]), self.rng.random() < 0.5
        return f"detach({ref}, {cid}, {snapshot}, {force})", lambda sp: sp.api.detach(
            ref, cid, snapshot=snapshot, force=force
        )

    def detach_all(self) -> tuple[str, Action]:
        ref = self.ref(VOLUMES)
        return f"detach_all({ref})", lambda sp: sp.api.detach_all(ref, snapshot=False)

    def mark_open(self) -> tuple[str, Action]:
        ref, cid = self.ref(VOLUMES), self.rng.choice([1, 2])
        return f"mark_open({cid}, {ref})", lambda sp: sp.mark_open(cid, ref, False)

    def write(self) -> tuple[str, Action]:
        ref, nbytes = self.ref(VOLUMES), self.rng.choice([4096, MiB, 2 * MiB])

        def write(sp: Backend) -> None:
            volume = sp.api.volume(ref)
            sp.write(volume.global_id, min(nbytes, volume.size))

        return f"write({ref}, {nbytes})", write


def _outcome(sp: Backend, action: Callable[[Backend], Any]) -> Any:
    try:
        return ("ok", action(sp))
    except errors.SpcsError as error:
        return (type(error).__name__, getattr(error, "sp_name", None), error.message)
    except ValueError as error:  # a test control refused
        return ("ValueError", str(error))


def _state(sp: Backend) -> Any:
    return (
        sp.api.volumes(),
        sp.api.snapshots(),
        sp.api.attachments(),
        sp.api.volumes_space(),
        sp.api.template_status("small"),
        [(t.volumes, t.snapshots) for t in [sp.api.template_status("hybrid")]],
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_random_workload_answers_alike(tmp_path: Path, seed: int):
    workload = _Workload(seed)
    with _emulator_backend(tmp_path) as emulated:
        fake = _memory_backend()
        for step in range(STEPS):
            what, action = workload.next()
            expected = _outcome(emulated, action)
            assert _outcome(fake, action) == expected, f"step {step}: {what}"
            if expected[0] == "ok" and isinstance(expected[1], str):
                workload.gids.append(expected[1])
            if step % 10 == 9:
                assert _state(fake) == _state(emulated), f"after step {step}: {what}"
        assert _state(fake) == _state(emulated)
        assert fake.counts() == emulated.counts()


# ---- other locations ------------------------------------------------------------------------


def test_a_snapshot_goes_to_another_location_and_keeps_its_global_id(locations: Locations):
    here, there = locations.here, locations.there
    assert [(loc.id, loc.name) for loc in here.locations()] == [("emu", "emu"), ("zone2", "zone2")]
    assert there.locations() == here.locations()
    here.volume_create(name="v1", size=MiB, template="hybrid")
    gid = here.snapshot_create("v1", name="s1", tags={"cs": "snapshot"})
    fails(
        errors.NotFound,
        "objectDoesNotExist",
        lambda: there.snapshot_from_remote("emu", gid, template="small", tags={}),
    )  # not exported to zone2 yet
    here.snapshot_export("~" + gid, "zone2")
    here.snapshot_export("~" + gid, "zone2")  # twice is harmless
    copied = there.snapshot_from_remote("emu", gid, template="small", tags={"uuid": "u-1"})
    assert copied == gid
    locations.wait_recovered(gid)
    copy = there.snapshot("~" + gid)
    assert (copy.name, copy.size, copy.template, copy.tags) == (
        f"~{gid}",
        MiB,
        "small",
        {"uuid": "u-1"},
    )
    fails(
        errors.AlreadyExists,
        "objectExists",
        lambda: there.snapshot_from_remote("emu", gid, template="small", tags={}),
    )
    there.snapshot_reconcile("~" + gid)  # complete: nothing to do
    error = fails(errors.InvalidArgument, "invalidParam", lambda: here.snapshot_delete("~" + gid))
    assert "still exported" in error.message
    here.snapshot_unexport("~" + gid, "zone2")
    here.snapshot_unexport("~" + gid, "zone2")  # not exported: fine
    assert here.snapshot_delete("~" + gid)
    assert there.snapshot("~" + gid).global_id == gid  # the copy is zone2's own


def test_every_export_goes_at_once_and_other_refusals(locations: Locations):
    here = locations.here
    here.volume_create(name="v1", size=MiB, template="hybrid")
    gid = here.snapshot_create("v1", name="s1")
    fails(errors.NotFound, "objectDoesNotExist", lambda: here.snapshot_export("s1", "nowhere"))
    fails(errors.InvalidArgument, "invalidParam", lambda: here.snapshot_export("s1", "emu"))
    fails(errors.InvalidArgument, "invalidParam", lambda: here.snapshot_reconcile("s1"))
    here.snapshot_export("s1", "zone2")
    here.snapshot_unexport("s1", None)
    assert here.snapshot_delete("~" + gid)
