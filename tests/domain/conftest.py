"""In-process fixtures for the domain tests: `build_domain` over a `MemoryStorPool` and a
`SqlState` on tmp_path, with a pool in state Up. No gRPC server, no subprocess: each test
runs in milliseconds and asserts on what the StorPool fake and the state store hold afterwards.

`Env` bundles the domain with the fake StorPool and a few helpers (pools, volumes, snapshots,
copies waited for in the operation registry); the test modules import it from here.
"""

from __future__ import annotations

import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from spcs.common import errors
from spcs.common.operations import JobContext
from spcs.demo.stack import TEMPLATE
from spcs.management import servicers
from spcs.management.abandoned import Abandoned
from spcs.management.app import Domain, build_domain
from spcs.management.inventory import Inventory
from spcs.management.sql_state import SqlState
from spcs.management.state import PoolRecord
from spcs.storpool import names
from spcs.storpool.client import StorPoolClient
from spcs.storpool.memory import MemoryStorPool
from spcs.storpool.records import StorPoolSnapshot, StorPoolVolume
from spcs.v1 import driver_pb2, lifecycle_pb2, types_pb2

MIB = 1 << 20
GIB = 1 << 30
ZONE = "zone-1"
TOKEN = "tok-5550123456789"
HOST = "sp.test"
PORT = 81
# The demo stack's template (the main pool) and more, as tests/management's stack has them.
OTHER_TEMPLATE = "spcs-other"
SPARE_TEMPLATE = "spcs-spare"
MISSING_TEMPLATE = "spcs-missing"  # never configured in StorPool
TEMPLATES = {TEMPLATE: 256 * GIB, OTHER_TEMPLATE: 64 * GIB, SPARE_TEMPLATE: 64 * GIB}
CLIENTS = (1, 2)
WAIT_SECONDS = 5.0

T = TypeVar("T")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:10]}"


def pool_url(template: str = TEMPLATE, *, host: str = HOST, token: str = TOKEN) -> str:
    return f"storpool://{token}@{host}:{PORT}/{template}"


def primary(pool_uuid: str) -> types_pb2.DataStore:
    return types_pb2.DataStore(primary=types_pb2.PrimaryStore(pool_uuid=pool_uuid))


def secondary(url: str = "nfs://secondary.test/export") -> types_pb2.DataStore:
    return types_pb2.DataStore(secondary=types_pb2.SecondaryStore(url=url))


def ref_of(path: str) -> str:
    """The API ref of a /dev/storpool-byid path."""
    return names.api_ref(path)


def code_of(op: operations_pb2.Operation) -> grpc.StatusCode:
    assert op.done and op.HasField("error"), op
    return errors.code_of(op.error.code)


@dataclass
class Env:
    """The domain, the StorPool it talks to, the store, and the pool tests work on."""

    domain: Domain
    sp: MemoryStorPool
    store: SqlState
    clusters: dict[str, MemoryStorPool]  # API host → its StorPool (default: `sp`)
    made: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    pool: PoolRecord | None = None

    @property
    def pool_uuid(self) -> str:
        assert self.pool is not None
        return self.pool.uuid

    # ---- servicers (their @rpc contract is checked in-process) ---------------------------

    @property
    def driver(self) -> servicers.DriverServicer:
        d = self.domain
        return servicers.DriverServicer(
            d.pools, d.volumes, d.snapshots, d.templates, d.copies, d.lifecycle
        )

    @property
    def lifecycle(self) -> servicers.LifecycleServicer:
        d = self.domain
        inventory = Inventory(d.pools, d.nodes)
        abandoned = Abandoned(inventory, d.locks, d.registry.is_running)
        return servicers.LifecycleServicer(d.pools, d.lifecycle, d.locks, inventory, abandoned)

    @property
    def strategy(self) -> servicers.SnapshotStrategyServicer:
        d = self.domain
        return servicers.SnapshotStrategyServicer(d.snapshots, d.copies, d.zones)

    @property
    def vm_strategy(self) -> servicers.VMSnapshotStrategyServicer:
        return servicers.VMSnapshotStrategyServicer(self.domain.snapshots)

    # ---- pools ----------------------------------------------------------------------------

    def initialize_request(
        self, template: str, *, uuid: str | None = None, host: str = HOST, **fields: object
    ) -> lifecycle_pb2.InitializePoolRequest:
        pool_uuid = uuid or new_id("pool")
        return lifecycle_pb2.InitializePoolRequest(
            pool_uuid=pool_uuid,
            name=str(fields.pop("name", pool_uuid)),
            url=str(fields.pop("url", pool_url(template, host=host))),
            zone_id=ZONE,
            capacity_bytes=1 << 40,
            **fields,  # type: ignore[arg-type]
        )

    def add_pool(
        self, template: str, *, uuid: str | None = None, host: str = HOST, up: bool = True
    ) -> PoolRecord:
        pools = self.domain.pools
        pool = pools.initialize(self.initialize_request(template, uuid=uuid, host=host))
        if up:
            pool = pools.attach_zone(pool.uuid, ZONE, "KVM")
        return pool

    def ref(self, pool_uuid: str | None = None) -> types_pb2.PrimaryStore:
        return types_pb2.PrimaryStore(pool_uuid=pool_uuid or self.pool_uuid)

    def primary(self, pool_uuid: str | None = None) -> types_pb2.DataStore:
        return primary(pool_uuid or self.pool_uuid)

    # ---- objects --------------------------------------------------------------------------

    def create_volume(
        self, size: int = 8 * MIB, *, pool: str | None = None, **fields: object
    ) -> types_pb2.Volume:
        volume = types_pb2.Volume(
            uuid=str(fields.pop("uuid", new_id("vol"))),
            size_bytes=size,
            **fields,  # type: ignore[arg-type]
        )
        return self.domain.volumes.create(pool or self.pool_uuid, volume)

    def take_snapshot(self, volume: types_pb2.Volume, **fields: object) -> types_pb2.Snapshot:
        snapshot = types_pb2.Snapshot(
            uuid=str(fields.pop("uuid", new_id("snap"))),
            volume_path=volume.path,
            **fields,  # type: ignore[arg-type]
        )
        return self.domain.snapshots.take(self.pool_uuid, snapshot)

    def volume(self, path: str) -> StorPoolVolume:
        return self.sp.volume(ref_of(path))

    def snapshot(self, path: str) -> StorPoolSnapshot:
        return self.sp.snapshot(ref_of(path))

    def storpool_names(self) -> set[str]:
        """Every volume and every live snapshot StorPool holds."""
        return {v.name for v in self.sp.volumes()} | {
            s.name for s in self.sp.snapshots() if not s.deleted
        }

    # ---- copies ---------------------------------------------------------------------------

    def copy_request(
        self,
        source: types_pb2.DataObject,
        destination: types_pb2.DataObject,
        *,
        operation_id: str | None = None,
        **options: object,
    ) -> driver_pb2.CopyDataRequest:
        return driver_pb2.CopyDataRequest(
            operation_id=operation_id or new_id("op"),
            source=source,
            destination=destination,
            options=driver_pb2.CopyOptions(**options),  # type: ignore[arg-type]
        )

    def wait(self, name: str) -> operations_pb2.Operation:
        done = self.domain.registry.wait(name, WAIT_SECONDS)
        assert done.done, f"{name} did not finish within {WAIT_SECONDS} s"
        return done

    def run_copy(self, request: driver_pb2.CopyDataRequest) -> operations_pb2.Operation:
        return self.wait(self.domain.copies.start(request).name)

    def in_job(self, work: Callable[[JobContext], T], operation_id: str = "") -> T:
        """`work(ctx)` inside a job of the registry (as a copy's step runs), its result or its
        exception."""
        out: dict[str, Any] = {}

        def runner(ctx: JobContext) -> empty_pb2.Empty:
            try:
                out["value"] = work(ctx)
            except BaseException as error:
                out["error"] = error
            return empty_pb2.Empty()

        op = self.domain.registry.start(
            operation_id or new_id("op"),
            kind="test/Job",
            fingerprint=new_id("print"),
            target="test",
            runner=runner,
        )
        self.wait(op.name)
        if "error" in out:
            raise out["error"]
        return out["value"]

    def copied(self, request: driver_pb2.CopyDataRequest) -> driver_pb2.CopyDataResult:
        done = self.run_copy(request)
        assert not done.HasField("error"), done.error
        result = driver_pb2.CopyDataResult()
        assert done.response.Unpack(result)
        return result


_PARTS = {
    "volume": types_pb2.Volume,
    "snapshot": types_pb2.Snapshot,
    "template": types_pb2.Template,
}


def data_object(kind: str, store: types_pb2.DataStore, **fields: object) -> types_pb2.DataObject:
    """A DataObject holding a `kind` ("volume", "snapshot", "template") on `store`."""
    part = _PARTS[kind](store=store, **fields)  # type: ignore[arg-type]
    return types_pb2.DataObject(**{kind: part})  # type: ignore[arg-type]


def volume_object(volume: types_pb2.Volume, pool_uuid: str) -> types_pb2.DataObject:
    copy = types_pb2.Volume()
    copy.CopyFrom(volume)
    copy.store.CopyFrom(primary(pool_uuid))
    return types_pb2.DataObject(volume=copy)


def snapshot_object(snapshot: types_pb2.Snapshot, pool_uuid: str) -> types_pb2.DataObject:
    return types_pb2.DataObject(
        snapshot=types_pb2.Snapshot(
            uuid=snapshot.uuid, path=snapshot.path, store=primary(pool_uuid)
        )
    )


def new_volume_object(
    pool_uuid: str, size: int = 8 * MIB, **fields: object
) -> types_pb2.DataObject:
    return types_pb2.DataObject(
        volume=types_pb2.Volume(
            uuid=str(fields.pop("uuid", new_id("vol"))),
            size_bytes=size,
            store=primary(pool_uuid),
            **fields,  # type: ignore[arg-type]
        )
    )


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def sp() -> MemoryStorPool:
    """The StorPool cluster every pool's API endpoint reaches (templates like the demo's)."""
    return MemoryStorPool(templates=TEMPLATES, clients=CLIENTS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlState]:
    state = SqlState(tmp_path / "spcs.db")
    yield state
    state.close()


@pytest.fixture
def bare(sp: MemoryStorPool, store: SqlState) -> Env:
    """The domain with no pool yet."""
    clusters: dict[str, MemoryStorPool] = {}
    made: Counter[tuple[str, int, str]] = Counter()

    def clients(host: str, port: int, token: str) -> StorPoolClient:
        made[host, port, token] += 1
        return clusters.get(host, sp)

    return Env(build_domain(store, clients), sp, store, clusters, made)


@pytest.fixture
def env(bare: Env) -> Env:
    """The domain with one pool in state Up on the demo template; StorPool's call counts
    start at zero."""
    bare.pool = bare.add_pool(TEMPLATE)
    bare.sp.calls.clear()
    return bare
