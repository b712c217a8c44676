"""`spcs ctl`: pools, their volumes and snapshots, nodes and operations as the management service
reports them, and cancels.

It calls the management service's public gRPC API (and each node's health service), with the
same TLS files as the services. Tables for people, `--json` for scripts. Exit codes:

- 0: done (for `watch`: every operation watched succeeded);
- 1: the service answered an error (the object does not exist, a bad argument, ...), an
  operation watched failed or was cancelled, or a check of `doctor` failed;
- 2: the command line is wrong;
- 3: the service could not be reached, or did not answer in time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spcs.common.tls import TlsFiles, open_channel
from spcs.ctl import doctor, objects, output
from spcs.ctl.calls import ANSWERED_ERROR, OK, USAGE, Ctl, Refused
from spcs.v1 import hosts_pb2, hosts_pb2_grpc, lifecycle_pb2, lifecycle_pb2_grpc, types_pb2

MANAGEMENT_ENV = "SPCS_MANAGEMENT"
DEFAULT_MANAGEMENT = "127.0.0.1:9710"
STATES = {
    "pending": types_pb2.JOB_STATE_PENDING,
    "running": types_pb2.JOB_STATE_RUNNING,
    "succeeded": types_pb2.JOB_STATE_SUCCEEDED,
    "failed": types_pb2.JOB_STATE_FAILED,
    "cancelled": types_pb2.JOB_STATE_CANCELLED,
}
BAR = 24  # characters of a progress bar


# ---- commands -------------------------------------------------------------------------------


def pools(ctl: Ctl) -> int:
    stub = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(ctl.channel)
    reply = ctl.call(stub.ListPools, lifecycle_pb2.ListPoolsRequest())
    assert isinstance(reply, lifecycle_pb2.ListPoolsResponse)
    if ctl.args.json:
        output.emit_json([output.plain(pool) for pool in reply.pools], ctl.out)
        return OK
    output.table(
        ("UUID", "NAME", "STATE", "TEMPLATE", "CAPACITY", "USED", "HOSTS"),
        [
            (
                p.uuid,
                p.name,
                _pool_state(p.state),
                p.sp_template,
                output.size(p.capacity_bytes),
                output.size(p.used_bytes),
                len(p.connected_host_ids),
            )
            for p in reply.pools
        ],
        ctl.out,
    )
    return OK


def pool(ctl: Ctl) -> int:
    stub = lifecycle_pb2_grpc.PrimaryDataStoreLifeCycleStub(ctl.channel)
    found = ctl.call(stub.GetPool, lifecycle_pb2.PoolRef(pool_uuid=ctl.args.uuid))
    assert isinstance(found, lifecycle_pb2.Pool)
    if ctl.args.json:
        output.emit_json(output.plain(found), ctl.out)
        return OK
    output.table(
        ("FIELD", "VALUE"),
        [
            ("uuid", found.uuid),
            ("name", found.name),
            ("state", _pool_state(found.state)),
            ("zone", found.zone_id),
            ("template", found.sp_template),
            ("api", found.api_endpoint),
            ("capacity", f"{output.size(found.capacity_bytes)} ({found.capacity_bytes} bytes)"),
            ("used", f"{output.size(found.used_bytes)} ({found.used_bytes} bytes)"),
            ("capacity iops", found.capacity_iops or "-"),
            ("tags", ", ".join(found.tags) or "-"),
            ("hosts", ", ".join(found.connected_host_ids) or "-"),
        ],
        ctl.out,
    )
    return OK


def nodes(ctl: Ctl) -> int:
    stub = hosts_pb2_grpc.NodeRegistryStub(ctl.channel)
    reply = ctl.call(stub.ListNodes, hosts_pb2.ListNodesRequest())
    assert isinstance(reply, hosts_pb2.ListNodesResponse)
    serving = {node.host_id: _node_health(ctl, node.address) for node in reply.nodes}
    if ctl.args.json:
        output.emit_json(
            [{**output.plain(n), "serving": serving[n.host_id]} for n in reply.nodes], ctl.out
        )
        return OK
    output.table(
        ("HOST", "ADDRESS", "SERVING", "REGISTRY", "STORPOOL CLIENT", "VERSION", "POOLS"),
        [
            (
                n.host_id,
                n.address,
                serving[n.host_id],
                "healthy" if n.healthy else "unhealthy",
                f"{n.storpool_client_id} ({'running' if n.storpool_client_running else 'down'})",
                n.version or "-",
                len(n.pool_uuids),
            )
            for n in reply.nodes
        ],
        ctl.out,
    )
    return OK


def _node_health(ctl: Ctl, address: str) -> str:
    """The node's own answer to a health check (SERVING, NOT_SERVING), or UNREACHABLE."""
    with open_channel(address, _tls(ctl.args)) as channel:
        try:
            # types-grpcio-health-checking's HealthStub declares no methods
            reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=min(ctl.timeout, 5.0)
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def operations(ctl: Ctl) -> int:
    listed = _list_operations(ctl, ctl.args.state)
    if ctl.args.json:
        output.emit_json([_operation_data(op) for op in listed], ctl.out)
        return OK
    output.table(
        ("NAME", "KIND", "STATE", "PROGRESS", "HOST", "STAGE"),
        [_operation_row(op) for op in listed],
        ctl.out,
    )
    return OK


def operation(ctl: Ctl) -> int:
    stub = operations_pb2_grpc.OperationsStub(ctl.channel)
    found = ctl.call(stub.GetOperation, operations_pb2.GetOperationRequest(name=_name(ctl)))
    assert isinstance(found, operations_pb2.Operation)
    if ctl.args.json:
        output.emit_json(_operation_data(found), ctl.out)
        return OK
    meta = _metadata(found)
    rows: list[tuple[str, object]] = [
        ("name", found.name),
        ("kind", meta.kind),
        ("target", meta.target or "-"),
        ("state", _state(meta)),
        ("stage", meta.stage or "-"),
        ("progress", _progress(meta)),
        ("host", meta.host_id or "-"),
        ("waiting for", meta.waiting_for or "-"),
        ("cancel requested", "yes" if meta.cancel_requested else "no"),
        ("created", meta.create_time.ToJsonString() if meta.HasField("create_time") else "-"),
        ("ended", meta.end_time.ToJsonString() if meta.HasField("end_time") else "-"),
    ]
    if found.HasField("error"):
        rows.append(
            ("error", f"{grpc.StatusCode(_code(found.error.code)).name}: {found.error.message}")
        )
    output.table(("FIELD", "VALUE"), rows, ctl.out)
    return OK


def cancel(ctl: Ctl) -> int:
    stub = operations_pb2_grpc.OperationsStub(ctl.channel)
    for name in ctl.args.names:
        full = _full_name(name)
        ctl.call(stub.CancelOperation, operations_pb2.CancelOperationRequest(name=full))
        if not ctl.args.json:
            ctl.out.write(f"{full}: cancel requested\n")
    if ctl.args.json:
        output.emit_json(
            [{"name": _full_name(n), "cancel_requested": True} for n in ctl.args.names], ctl.out
        )
    return OK


def watch(ctl: Ctl) -> int:
    """Until every operation named (or, with none named, every one running when it started)
    has ended: their progress, redrawn in place on a terminal, a line per change otherwise."""
    stub = operations_pb2_grpc.OperationsStub(ctl.channel)
    names = [_full_name(n) for n in ctl.args.names] or [
        op.name for op in _list_operations(ctl, "active")
    ]
    if not names:
        ctl.out.write("no operation is running\n")
        return OK
    terminal = ctl.out.isatty()
    shown: dict[str, str] = {}
    drawn = 0
    deadline = time.monotonic() + ctl.args.for_seconds if ctl.args.for_seconds else None
    while True:
        current = [
            ctl.call(stub.GetOperation, operations_pb2.GetOperationRequest(name=name))
            for name in names
        ]
        ops = [op for op in current if isinstance(op, operations_pb2.Operation)]
        lines = [_watch_line(op) for op in ops]
        if terminal:
            if drawn:
                ctl.out.write(f"\x1b[{drawn}F")  # back to the first line drawn
            for line in lines:
                ctl.out.write("\x1b[2K" + line + "\n")
            drawn = len(lines)
        else:
            for op, line in zip(ops, lines, strict=True):
                if shown.get(op.name) != line:
                    ctl.out.write(line + "\n")
                    shown[op.name] = line
        ctl.out.flush()
        if all(op.done for op in ops):
            failed = [op for op in ops if op.HasField("error")]
            return ANSWERED_ERROR if failed else OK
        if deadline is not None and time.monotonic() >= deadline:
            return OK
        time.sleep(ctl.args.interval)


# ---- operations helpers -------------------------------------------------------------------


def _list_operations(ctl: Ctl, state: str) -> list[operations_pb2.Operation]:
    """The operations in `state` (a JobState name, "active", "ended" or "all")."""
    stub = operations_pb2_grpc.OperationsStub(ctl.channel)
    server_filter = {"active": "done=false", "ended": "done=true"}.get(state, "")
    found: list[operations_pb2.Operation] = []
    token = ""
    while True:
        reply = ctl.call(
            stub.ListOperations,
            operations_pb2.ListOperationsRequest(
                name="operations", filter=server_filter, page_size=200, page_token=token
            ),
        )
        assert isinstance(reply, operations_pb2.ListOperationsResponse)
        found.extend(reply.operations)
        token = reply.next_page_token
        if not token:
            break
    if state in STATES:
        found = [op for op in found if _metadata(op).state == STATES[state]]
    return found


def _metadata(op: operations_pb2.Operation) -> types_pb2.OperationMetadata:
    meta = types_pb2.OperationMetadata()
    op.metadata.Unpack(meta)
    return meta


def _state(meta: types_pb2.OperationMetadata) -> str:
    return str(types_pb2.JobState.Name(meta.state)).removeprefix("JOB_STATE_").lower()


def _progress(meta: types_pb2.OperationMetadata) -> str:
    if not meta.bytes_total:
        return output.size(meta.bytes_done) if meta.bytes_done else "-"
    percent = 100 * meta.bytes_done / meta.bytes_total
    rate = f" {output.size(meta.rate_bytes_per_second)}/s" if meta.rate_bytes_per_second else ""
    return f"{percent:.0f}% of {output.size(meta.bytes_total)}{rate}"


def _watch_line(op: operations_pb2.Operation) -> str:
    meta = _metadata(op)
    done = meta.bytes_done / meta.bytes_total if meta.bytes_total else (1.0 if op.done else 0.0)
    filled = int(BAR * min(done, 1.0))
    bar = "#" * filled + "." * (BAR - filled)
    tail = meta.stage or ""
    if op.HasField("error"):
        tail = op.error.message
    return f"{op.name}  [{bar}] {_state(meta):9s} {_progress(meta)}  {tail}".rstrip()


def _operation_row(op: operations_pb2.Operation) -> tuple[str, ...]:
    meta = _metadata(op)
    return (op.name, meta.kind, _state(meta), _progress(meta), meta.host_id or "-", meta.stage)


def _operation_data(op: operations_pb2.Operation) -> dict[str, object]:
    data: dict[str, object] = {
        "name": op.name,
        "done": op.done,
        "metadata": output.plain(_metadata(op)),
    }
    if op.HasField("error"):
        data["error"] = {
            "code": grpc.StatusCode(_code(op.error.code)).name,
            "message": op.error.message,
        }
    return data


def _code(number: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    return grpc.StatusCode.UNKNOWN.value


def _full_name(name: str) -> str:
    return name if name.startswith("operations/") else f"operations/{name}"


def _name(ctl: Ctl) -> str:
    return _full_name(str(ctl.args.name))


def _pool_state(state: int) -> str:
    return str(lifecycle_pb2.PoolState.Name(state)).removeprefix("POOL_STATE_").lower()  # type: ignore[arg-type]


# ---- the command line -----------------------------------------------------------------------


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    if not (args.tls_ca or args.tls_cert):
        return None
    return TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[0] if __doc__ else None
    parser.add_argument(
        "--management",
        default=os.environ.get(MANAGEMENT_ENV, DEFAULT_MANAGEMENT),
        metavar="TARGET",
        help=f"the management service: HOST:PORT or dns:///NAME:PORT (env {MANAGEMENT_ENV}; "
        f"default {DEFAULT_MANAGEMENT})",
    )
    parser.add_argument("--tls-ca", type=Path, metavar="PEM", help="CA bundle to verify services")
    parser.add_argument("--tls-cert", type=Path, metavar="PEM", help="client certificate (mTLS)")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="key of --tls-cert")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per call (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="JSON for scripts instead of tables")
    sub = parser.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)
    sub.add_parser("pools", help="list the pools: state, capacity, hosts")
    described = sub.add_parser("pool", help="describe one pool")
    described.add_argument("uuid", metavar="POOL_UUID")
    objects.configure(sub)
    sub.add_parser("nodes", help="list the nodes and whether each answers its health check")
    listed = sub.add_parser("operations", help="list operations")
    listed.add_argument(
        "--state",
        default="all",
        choices=("all", "active", "ended", *STATES),
        help="only these (active: pending or running; ended: finished in any way)",
    )
    one = sub.add_parser("operation", help="describe one operation")
    one.add_argument("name", metavar="NAME", help="operations/ID or ID")
    cancelled = sub.add_parser("cancel", help="cancel operations")
    cancelled.add_argument("names", nargs="+", metavar="NAME")
    checked = sub.add_parser(
        "doctor",
        help="check this host: config files, StorPool, node registration, devices, clocks, "
        "certificates (exit 1 when a check fails)",
    )
    doctor.configure(checked)
    watched = sub.add_parser("watch", help="show the progress of operations until they end")
    watched.add_argument("names", nargs="*", metavar="NAME", help="default: all running now")
    watched.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    watched.add_argument(
        "--for",
        dest="for_seconds",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop after this long even if some are still running",
    )


def doctor_command(ctl: Ctl) -> int:
    checks = doctor.run_checks(ctl.args, _tls(ctl.args))
    if ctl.args.json:
        output.emit_json(
            [{"check": c.name, "result": c.result, "detail": c.detail} for c in checks], ctl.out
        )
    else:
        output.table(
            ("CHECK", "RESULT", "DETAIL"), [(c.name, c.result, c.detail) for c in checks], ctl.out
        )
    return ANSWERED_ERROR if doctor.worst(checks) == doctor.FAIL else OK


COMMANDS: dict[str, Callable[[Ctl], int]] = {
    "doctor": doctor_command,
    "pools": pools,
    "pool": pool,
    "volumes": objects.volumes,
    "snapshots": objects.snapshots,
    "volume": objects.volume,
    "snapshot": objects.snapshot,
    "nodes": nodes,
    "operations": operations,
    "operation": operation,
    "cancel": cancel,
    "watch": watch,
}


@contextmanager
def _channel(args: argparse.Namespace) -> Iterator[grpc.Channel]:
    if args.tls_cert and not args.tls_key:
        raise Refused("--tls-cert needs --tls-key", USAGE)
    for flag in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            raise Refused(f"--{flag.replace('_', '-')} {path}: no such file", USAGE)
    with open_channel(args.management, _tls(args)) as channel:
        yield channel


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        with _channel(args) as channel:
            return COMMANDS[args.ctl_command](Ctl(args, channel, out or sys.stdout))
    except Refused as refused:
        print(f"spcs ctl: {refused}", file=sys.stderr)
        return refused.code


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="spcs ctl")
    configure(parser)
    return run(parser.parse_args(argv))
