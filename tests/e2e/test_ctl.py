"""`spcs ctl` as an operator runs it, against a running stack: pools, one pool, nodes with their
health, operations (listed, described, watched, cancelled), tables and --json, and the exit
codes scripts rely on (0 done, 1 the service said no or an operation failed, 2 a wrong command
line, 3 the service unreachable)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from spcs.storpool import names
from spcs.v1 import driver_pb2, lifecycle_pb2, types_pb2
from tests.management.helpers import (
    MIB,
    OTHER_TEMPLATE,
    TEMPLATE,
    Mgmt,
    new_id,
    running_stack,
)
from tests.support import SPCS


def ctl(
    mgmt: Mgmt | None, *args: str, address: str | None = None
) -> subprocess.CompletedProcess[str]:
    target = address or (mgmt.stack.management.address if mgmt and mgmt.stack.management else "")
    return subprocess.run(
        [*SPCS, "ctl", "--management", target, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pools_nodes_and_their_errors(tmp_path: Path):
    with running_stack(tmp_path) as mgmt:
        listed = ctl(mgmt, "pools")
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split() == ["UUID", "NAME", "STATE", "TEMPLATE", "CAPACITY", "USED", "HOSTS"]
        (row,) = [r for r in rows if r.startswith(mgmt.pool_uuid)]
        assert row.split()[2] == "up" and row.split()[-1] == "2"  # two hosts connected

        data = json.loads(ctl(mgmt, "--json", "pools").stdout)
        (pool,) = [p for p in data if p["uuid"] == mgmt.pool_uuid]
        assert pool["state"] == "POOL_STATE_UP" and pool["capacity_bytes"] == str(1 << 40)
        assert sorted(pool["connected_host_ids"]) == ["host-1", "host-2"]

        described = ctl(mgmt, "pool", mgmt.pool_uuid)
        assert described.returncode == 0
        assert "hosts" in described.stdout and "host-1, host-2" in described.stdout
        assert "1.0 TiB (1099511627776 bytes)" in described.stdout

        missing = ctl(mgmt, "pool", "pool-nope")
        assert missing.returncode == 1 and missing.stdout == ""
        assert missing.stderr.startswith("spcs ctl: NOT_FOUND: ") and "pool-nope" in missing.stderr
        assert "Traceback" not in missing.stderr

        nodes = ctl(mgmt, "nodes")
        assert nodes.returncode == 0, nodes.stderr
        lines = nodes.stdout.splitlines()
        assert {line.split()[0] for line in lines[1:]} == {"host-1", "host-2"}
        assert all(" SERVING " in f" {line} " for line in lines[1:])
        assert [line.split()[-1] for line in lines[1:]] == ["1", "1"]  # each host: one pool
        as_json = json.loads(ctl(mgmt, "--json", "nodes").stdout)
        assert {n["serving"] for n in as_json} == {"SERVING"}
        assert [n["pool_uuids"] for n in as_json] == [[mgmt.pool_uuid]] * 2

        # a node that stops is UNREACHABLE, which a script sees in --json
        mgmt.stack.nodes[1].popen.terminate()
        mgmt.stack.nodes[1].popen.wait(30)
        after = {
            n["host_id"]: n["serving"] for n in json.loads(ctl(mgmt, "--json", "nodes").stdout)
        }
        assert after == {"host-1": "SERVING", "host-2": "UNREACHABLE"}

    unreachable = ctl(None, "pools", address="127.0.0.1:1")
    assert unreachable.returncode == 3
    assert unreachable.stderr.startswith("spcs ctl: UNAVAILABLE (127.0.0.1:1): ")
    usage = subprocess.run([*SPCS, "ctl"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
    no_key = ctl(None, "--tls-cert", str(tmp_path / "c.pem"), "pools", address="127.0.0.1:1")
    assert no_key.returncode == 2 and "--tls-cert needs --tls-key" in no_key.stderr


def test_operations_listed_described_watched_and_cancelled(tmp_path: Path):
    with running_stack(tmp_path) as mgmt:
        emulator = mgmt.stack.emulator
        assert emulator is not None
        template, _raw = mgmt.template_on_secondary(401, size=16 * MIB)

        def copy_request(op_id: str) -> driver_pb2.CopyDataRequest:
            return driver_pb2.CopyDataRequest(
                operation_id=op_id,
                source=types_pb2.DataObject(template=template),
                destination=types_pb2.DataObject(
                    volume=types_pb2.Volume(
                        uuid=new_id("vol"), size_bytes=32 * MIB, store=mgmt.primary()
                    )
                ),
            )

        done_id = new_id("op")
        mgmt.wait(mgmt.driver.CopyData(copy_request(done_id)).name)
        listed = ctl(mgmt, "operations", "--state", "succeeded")
        assert listed.returncode == 0
        (row,) = [line for line in listed.stdout.splitlines() if done_id in line]
        assert row.split()[2] == "succeeded"
        described = ctl(mgmt, "operation", done_id)
        assert described.returncode == 0 and "succeeded" in described.stdout
        data = json.loads(ctl(mgmt, "--json", "operation", f"operations/{done_id}").stdout)
        assert data["done"] is True and data["metadata"]["state"] == "JOB_STATE_SUCCEEDED"
        assert ctl(mgmt, "operations", "--state", "running").stdout.count(done_id) == 0

        # a template's first download, held up by a slow StorPool: watched, then cancelled
        # through the CLI
        other, _ = mgmt.template_on_secondary(402, size=16 * MIB)
        emulator.set_faults({"delays": {"VolumeCreate": 4.0}})
        try:
            slow_id = new_id("op")
            slow = mgmt.driver.CopyData(
                driver_pb2.CopyDataRequest(
                    operation_id=slow_id,
                    source=types_pb2.DataObject(template=other),
                    destination=types_pb2.DataObject(
                        volume=types_pb2.Volume(
                            uuid=new_id("vol"), size_bytes=32 * MIB, store=mgmt.primary()
                        )
                    ),
                )
            )
            watched: dict[str, subprocess.CompletedProcess[str]] = {}
            watcher = threading.Thread(
                target=lambda: watched.setdefault(
                    "run", ctl(mgmt, "watch", "--interval", "0.2", slow_id)
                )
            )
            watcher.start()
            time.sleep(1.0)
            running = ctl(mgmt, "operations", "--state", "active")
            assert slow_id in running.stdout, running.stdout
            cancelled = ctl(mgmt, "cancel", slow_id)
            assert cancelled.returncode == 0
            assert cancelled.stdout == f"operations/{slow_id}: cancel requested\n"
            watcher.join(60)
        finally:
            emulator.set_faults({})
        final = mgmt.wait(slow.name)
        assert final.error.code != 0
        run = watched["run"]
        assert run.returncode == 1, (run.stdout, run.stderr)  # what it watched did not succeed
        lines = run.stdout.splitlines()
        assert lines and all(line.startswith(f"operations/{slow_id}  [") for line in lines)
        assert "cancelled" in lines[-1]
        assert ctl(mgmt, "watch").stdout == "no operation is running\n"
        missing = ctl(mgmt, "cancel", "op-nope")
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_volumes_and_snapshots_of_a_pool(tmp_path: Path):
    """What a pool holds, listed and described: spcs's own volume (attached to host-2) and
    snapshot, the Java plugin's anonymous objects found by their tags, an object an
    administrator made by hand without tags, and nothing of another template's pool; then
    pages over gRPC, and the answers to wrong requests."""
    with running_stack(tmp_path) as mgmt:
        volume = mgmt.create_volume(8 * MIB, vm_uuid="vm-1")
        snapshot = mgmt.take_snapshot(volume.path)
        mgmt.driver.GrantAccess(
            driver_pb2.GrantAccessRequest(
                object=types_pb2.DataObject(
                    volume=types_pb2.Volume(path=volume.path, store=mgmt.primary())
                ),
                host_id="host-2",
            )
        )
        legacy_uuid = new_id("legacy")
        legacy = mgmt.api.raw(
            "POST",
            "VolumeCreate",
            {"template": TEMPLATE, "size": 4 * MIB, "tags": {"uuid": legacy_uuid, "cs": "volume"}},
            what="anonymous volume",
        )["globalId"]
        legacy_snap = mgmt.api.raw(
            "POST",
            f"VolumeSnapshot/~{legacy}",
            {"name": "", "tags": {"uuid": new_id("legacy"), "cs": "snapshot"}},
            what="anonymous snapshot",
        )["snapshotGlobalId"]
        mgmt.api.volume_create(name="by-hand", size=2 * MIB, template=TEMPLATE)
        elsewhere = mgmt.add_pool(OTHER_TEMPLATE)
        mgmt.driver.CreateVolume(
            driver_pb2.CreateVolumeRequest(
                pool=mgmt.pool_ref(elsewhere),
                volume=types_pb2.Volume(uuid=new_id("vol"), size_bytes=4 * MIB),
            )
        )

        listed = ctl(mgmt, "volumes", mgmt.pool_uuid)
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split() == [
            "PATH", "NAME", "CS", "UUID", "VM", "SIZE", "USED", "ATTACHED", "CREATED"
        ]  # fmt: skip
        by_path = {row.split()[0]: row for row in rows}
        assert (
            set(by_path)
            == {volume.path, f"/dev/storpool-byid/{legacy}"}
            | {p for p, row in by_path.items() if " by-hand " in row}
            and len(by_path) == 3
        )
        mine = by_path[volume.path].split()
        assert (
            mine[2:5] == ["volume", volume.uuid, "vm-1"] and "host-2 (rw)" in by_path[volume.path]
        )
        assert by_path[f"/dev/storpool-byid/{legacy}"].split()[1] == f"~{legacy}"
        (hand,) = [row for row in rows if " by-hand " in row]
        assert hand.split()[2:5] == ["-", "-", "-"]

        data = json.loads(ctl(mgmt, "--json", "volumes", mgmt.pool_uuid).stdout)
        (described,) = [o for o in data if o["path"] == volume.path]
        assert described["kind"] == "POOL_OBJECT_KIND_VOLUME" and described["size_bytes"] == str(
            8 * MIB
        )
        assert described["attachments"] == [
            {"client_id": 2, "host_id": "host-2", "read_only": False}
        ]
        assert described["tags"]["uuid"] == volume.uuid and described["create_time"]

        snaps = ctl(mgmt, "snapshots", mgmt.pool_uuid)
        assert snaps.returncode == 0, snaps.stderr
        paths = {line.split()[0] for line in snaps.stdout.splitlines()[1:]}
        assert paths == {snapshot.path, f"/dev/storpool-byid/{legacy_snap}"}

        one = ctl(mgmt, "volume", mgmt.pool_uuid, volume.uuid)
        assert one.returncode == 0, one.stderr
        fields = dict(line.split(None, 1) for line in one.stdout.splitlines()[1:])
        assert fields["path"].strip() == volume.path
        assert fields["size"].strip() == f"8.0 MiB ({8 * MIB} bytes)"
        assert "host-2 (rw)" in fields["attached"]
        snap_one = json.loads(ctl(mgmt, "--json", "snapshot", mgmt.pool_uuid, snapshot.path).stdout)
        assert (
            snap_one["on_volume"] == names.volume_name(volume.uuid) and snap_one["deleted"] is False
        )
        assert ctl(mgmt, "snapshot", mgmt.pool_uuid, f"~{legacy_snap}").returncode == 0

        wrong_kind = ctl(mgmt, "snapshot", mgmt.pool_uuid, volume.path)
        assert wrong_kind.returncode == 1 and "is a volume" in wrong_kind.stderr
        assert f"spcs ctl volume {mgmt.pool_uuid} {volume.path}" in wrong_kind.stderr
        foreign = ctl(mgmt, "volume", mgmt.pool_uuid, "/etc/passwd")
        assert foreign.returncode == 1 and foreign.stderr.startswith("spcs ctl: NOT_FOUND: ")
        assert "Traceback" not in foreign.stderr
        assert ctl(mgmt, "volumes", "pool-nope").returncode == 1

        # pages of one object each, in order, cover the pool exactly once
        seen, token = [], ""
        while True:
            page = mgmt.lifecycle.ListPoolObjects(
                lifecycle_pb2.ListPoolObjectsRequest(
                    pool_uuid=mgmt.pool_uuid, page_size=1, page_token=token
                )
            )
            seen += [o.path for o in page.objects]
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == 5 and set(seen) == set(by_path) | paths
        assert seen[:3] == [o["path"] for o in data]  # volumes first, by name
        for bad in (
            lifecycle_pb2.ListPoolObjectsRequest(pool_uuid=mgmt.pool_uuid, page_token="x/y"),
            lifecycle_pb2.ListPoolObjectsRequest(pool_uuid=mgmt.pool_uuid, page_size=10001),
            lifecycle_pb2.ListPoolObjectsRequest(pool_uuid=mgmt.pool_uuid, kind=7),  # type: ignore[arg-type]
        ):
            with pytest.raises(grpc.RpcError) as refused:
                mgmt.lifecycle.ListPoolObjects(bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell would be offered at the end of `line` (argcomplete's protocol, as its
    bash and zsh hooks speak it)."""
    out = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "bash",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
    }
    done = subprocess.run(SPCS, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return sorted(word.strip() for word in out.read_text().split("\x0b") if word.strip())


def test_shell_completion(tmp_path: Path):
    assert complete("spcs ct", tmp_path) == ["ctl"]
    assert complete("spcs ctl op", tmp_path) == ["operation", "operations"]
    assert complete("spcs ctl operations --state r", tmp_path) == ["running"]
    assert "--management" in complete("spcs ctl --m", tmp_path)
    assert complete("spcs management --database-u", tmp_path) == ["--database-url"]


def emulator_token(mgmt: Mgmt) -> str:
    assert mgmt.stack.emulator is not None
    return mgmt.stack.emulator.token


def _toml(path: Path, values: dict[str, object]) -> Path:
    lines = []
    for key, value in values.items():
        shown = json.dumps(value) if isinstance(value, (str, list)) else str(value)
        lines.append(f"{key} = {shown}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_doctor_on_a_kvm_host(tmp_path: Path):
    """doctor with the config files of host-1's node and of the management service, as the
    stack runs them: every check passes; then a StorPool client that is down, a device
    directory that is missing and a certificate about to expire are each named."""
    with running_stack(tmp_path / "stack") as mgmt:
        stack = mgmt.stack
        assert stack.management is not None
        work = stack.workdir
        management = _toml(
            tmp_path / "management.toml",
            {"db": str(work / "management.db"), "storpool_conf": str(work / "storpool.conf")},
        )
        host = stack.host_dir(1)
        node = _toml(
            tmp_path / "node.toml",
            {
                "host_id": "host-1",
                "device_root": str(stack.device_root(1)),
                "management": stack.management.address,
                "storpool_conf": str(work / "storpool.client-1.conf"),
                "state_dir": str(host / "state"),
                "mount_root": str(host / "mnt"),
                "secondary_store": [f"file://{stack.secondary}"],
            },
        )
        configs = ["doctor", "--management-config", str(management), "--node-config", str(node)]
        missing = {
            c["check"]: c["result"] for c in json.loads(ctl(mgmt, "--json", *configs).stdout)
        }
        assert missing["StorPool devices"] == "warn"  # nothing attached on host-1 yet
        volume = mgmt.create_volume(8 * MIB)
        mgmt.attach_here(volume.path)
        healthy = ctl(mgmt, *configs)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        table = {line.split("  ")[0]: line for line in healthy.stdout.splitlines()[1:]}
        for check in (
            "management config",
            "node config",
            "StorPool API (management)",
            "StorPool API (node)",
            "StorPool client",
            "this host's node",
            "StorPool devices",
        ):
            assert check in table and " ok " in table[check], (check, healthy.stdout)
        assert any(name.startswith("clock of management") for name in table)
        assert "certificates" in table and " skip " in table["certificates"]

        data = json.loads(ctl(mgmt, "--json", *configs).stdout)
        assert {c["result"] for c in data} <= {"ok", "skip"}

        # what goes wrong is named, and the exit code says so: a token StorPool refuses
        wrong = tmp_path / "wrong-token.conf"
        wrong.write_text(
            (work / "storpool.client-1.conf")
            .read_text()
            .replace(emulator_token(mgmt), "not-the-token-0123")
        )
        text = node.read_text().replace(str(work / "storpool.client-1.conf"), str(wrong))
        broken_config = tmp_path / "broken-node.toml"
        broken_config.write_text(text)
        broken = ctl(
            mgmt,
            "--json",
            "doctor",
            "--management-config",
            str(management),
            "--node-config",
            str(broken_config),
        )
        assert broken.returncode == 1
        failed = {
            c["check"]: c["detail"] for c in json.loads(broken.stdout) if c["result"] == "fail"
        }
        assert list(failed) == ["StorPool API (node)"], failed

    expiring = tmp_path / "soon.pem"
    _certificate(expiring, days=10)
    warned = ctl(None, "--tls-ca", str(expiring), "--json", "doctor", address="127.0.0.1:1")
    checks = {c["check"]: c for c in json.loads(warned.stdout)}
    assert checks["management"]["result"] == "fail"  # nothing answers there
    (cert,) = [c for name, c in checks.items() if name.startswith("certificate ")]
    assert (cert["result"] == "warn" and "(9 days)" in cert["detail"]) or "(10 days)" in cert[
        "detail"
    ]


def _certificate(path: Path, days: int) -> None:
    """A self-signed certificate that expires in `days` days."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "soon.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
