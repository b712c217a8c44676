"""`spcs ctl volumes|snapshots|volume|snapshot`: what a pool holds in StorPool, from the
management service's ListPoolObjects and GetPoolObject."""

from __future__ import annotations

import argparse
import time

from spcs.ctl import output
from spcs.ctl.calls import ANSWERED_ERROR, OK, Ctl, Refused
from spcs.v1 import lifecycle_pb2, lifecycle_pb2_grpc

PAGE = 1000
KINDS = {
    "volume": lifecycle_pb2.POOL_OBJECT_KIND_VOLUME,
    "snapshot": lifecycle_pb2.POOL_OBJECT_KIND_SNAPSHOT,
}


def volumes(ctl: Ctl) -> int:
    listed = _list(ctl, "volume")
    if ctl.args.json:
        output.emit_json([output.plain(o) for o in listed], ctl.out)
        return OK
    output.table(
        ("PATH", "NAME", "CS", "UUID", "VM", "SIZE", "USED", "ATTACHED", "CREATED"),
        [
            (
                o.path,
                o.name,
                o.cloudstack_kind or "-",
                o.uuid or "-",
                o.vm_uuid or "-",
                output.size(o.size_bytes),
                output.size(o.used_bytes) if o.HasField("used_bytes") else "-",
                _attached(o),
                _created(o),
            )
            for o in listed
        ],
        ctl.out,
    )
    return OK


def snapshots(ctl: Ctl) -> int:
    listed = _list(ctl, "snapshot")
    if ctl.args.json:
        output.emit_json([output.plain(o) for o in listed], ctl.out)
        return OK
    output.table(
        ("PATH", "NAME", "CS", "UUID", "SIZE", "OF VOLUME", "DELETED", "ATTACHED", "CREATED"),
        [
            (
                o.path,
                o.name,
                o.cloudstack_kind or "-",
                o.uuid or "-",
                output.size(o.size_bytes),
                o.on_volume or "-",
                "yes" if o.deleted else "no",
                _attached(o),
                _created(o),
            )
            for o in listed
        ],
        ctl.out,
    )
    return OK


def volume(ctl: Ctl) -> int:
    return _describe(ctl, "volume")


def snapshot(ctl: Ctl) -> int:
    return _describe(ctl, "snapshot")


def configure(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for word in KINDS:
        listed = sub.add_parser(
            f"{word}s",
            help=f"list the StorPool {word}s of a pool: CloudStack tags, size, hosts attached",
        )
        listed.add_argument("pool", metavar="POOL_UUID")
        described = sub.add_parser(f"{word}", help=f"describe one {word} of a pool")
        described.add_argument("pool", metavar="POOL_UUID")
        described.add_argument(
            "ref", metavar="REF", help="its path, StorPool name or CloudStack uuid"
        )


def _list(ctl: Ctl, word: str) -> list[lifecycle_pb2.PoolObject]:
    stub = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(ctl.channel)
    found: list[lifecycle_pb2.PoolObject] = []
    token = ""
    while True:
        reply = ctl.call(
            stub.ListPoolObjects,
            lifecycle_pb2.ListPoolObjectsRequest(
                pool_uuid=ctl.args.pool, kind=KINDS[word], page_size=PAGE, page_token=token
            ),
        )
        assert isinstance(reply, lifecycle_pb2.ListPoolObjectsResponse)
        found.extend(reply.objects)
        token = reply.next_page_token
        if not token:
            return found


def _describe(ctl: Ctl, word: str) -> int:
    stub = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(ctl.channel)
    found = ctl.call(
        stub.GetPoolObject,
        lifecycle_pb2.GetPoolObjectRequest(pool_uuid=ctl.args.pool, ref=ctl.args.ref),
    )
    assert isinstance(found, lifecycle_pb2.PoolObject)
    if found.kind != KINDS[word]:
        other = next(w for w, k in KINDS.items() if k == found.kind)
        raise Refused(
            f"{ctl.args.ref} is a {other} of pool {ctl.args.pool}, not a {word}: use "
            f"`spcs ctl {other} {ctl.args.pool} {ctl.args.ref}`",
            ANSWERED_ERROR,
        )
    if ctl.args.json:
        output.emit_json(output.plain(found), ctl.out)
        return OK
    rows: list[tuple[str, object]] = [
        ("path", found.path),
        ("name", found.name),
        ("cloudstack kind", found.cloudstack_kind or "- (no cs tag: not CloudStack's)"),
        ("uuid", found.uuid or "-"),
        ("vm", found.vm_uuid or "-"),
        ("size", f"{output.size(found.size_bytes)} ({found.size_bytes} bytes)"),
    ]
    if found.HasField("used_bytes"):
        rows.append(("used", f"{output.size(found.used_bytes)} ({found.used_bytes} bytes)"))
    if found.kind == lifecycle_pb2.POOL_OBJECT_KIND_SNAPSHOT:
        rows += [
            ("of volume", found.on_volume or "-"),
            ("deleted", "yes" if found.deleted else "no"),
        ]
    rows += [
        ("parent", found.parent or "-"),
        ("template", found.sp_template),
        ("max iops", found.max_iops or "-"),
        (
            "max bandwidth",
            f"{output.size(found.max_bandwidth_bytes_per_second)}/s"
            if found.max_bandwidth_bytes_per_second
            else "-",
        ),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(found.tags.items())) or "-"),
        ("created", _created(found)),
        ("attached", _attached(found)),
    ]
    if found.HasField("delete_time"):
        rows.append(("deleted by StorPool at", _when(found.delete_time.seconds)))
    output.table(("FIELD", "VALUE"), rows, ctl.out)
    return OK


def _attached(obj: lifecycle_pb2.PoolObject) -> str:
    """`host-1 (rw), client 7 (ro)`: hosts by their CloudStack id, others by client id."""
    shown = [
        f"{a.host_id or f'client {a.client_id}'} ({'ro' if a.read_only else 'rw'})"
        for a in obj.attachments
    ]
    return ", ".join(shown) or "-"


def _created(obj: lifecycle_pb2.PoolObject) -> str:
    return _when(obj.create_time.seconds) if obj.HasField("create_time") else "-"


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
