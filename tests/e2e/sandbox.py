"""Run commands as root on a "host" whose system directories are private to the test.

A `Host` is a private mount namespace (with a host name: also a UTS namespace) held open by a
sleeping process; the directories it shadows are either an overlay (the machine's files stay
visible, writes land in the test's temporary directory) or an empty tmpfs. Commands and
services run in it with `nsenter`, so they see the paths the documentation names (/etc/spcs,
/opt/spcs, /var/lib/spcs, /etc/systemd/system) while the machine's own stay untouched. A
`Network` is a private network namespace with only loopback, for services that listen on
fixed ports (9710, 9711, ...); hosts that share one reach each other on loopback. Commands
that need the outside (pip) run in the machine's network.

Needs root, util-linux's `unshare` and `nsenter`, and `ip` (iproute2) for a Network.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

HEALTH_PROBE = """
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as channel:
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    except grpc.RpcError as error:
        print(error.code().name)
"""


def require_namespaces(network: bool = False) -> None:
    """Skip unless this test can make namespaces (root, unshare, nsenter[, ip])."""
    if os.geteuid() != 0:
        pytest.skip("needs root (private mount namespaces)")
    tools = ["unshare", "nsenter", *(["ip"] if network else [])]
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (util-linux, iproute2)")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")


def _holder(argv: list[str], ready: Path, timeout: float = 20) -> subprocess.Popen[bytes]:
    """Start the process that keeps a namespace alive; it touches `ready` once set up."""
    errors = ready.with_suffix(".err")
    with errors.open("wb") as err:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if popen.poll() is not None:
            raise AssertionError(f"{argv} failed: {errors.read_text()}")
        if time.monotonic() > deadline:
            _stop(popen)
            raise AssertionError(f"{argv} did not get ready in {timeout}s")
        time.sleep(0.02)
    return popen


def _stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.kill()
    popen.wait(10)


class Network:
    """A network namespace with loopback up and nothing else."""

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        ready = workdir / "network.ready"
        script = f"ip link set lo up && touch {shlex.quote(str(ready))} && exec sleep infinity"
        self._holder = _holder(["unshare", "--net", "sh", "-c", script], ready)

    @property
    def ns(self) -> str:
        return f"/proc/{self._holder.pid}/ns/net"

    def close(self) -> None:
        _stop(self._holder)


def _bind_lines(binds: Mapping[str, Path], keep: Sequence[str]) -> list[str]:
    """Shell lines that show each bind's source at its directory; the `keep` paths below a
    bound directory are bound back into it from a view of the old directory kept under /mnt
    (a tmpfs of this namespace only)."""
    lines: list[str] = []
    for n, (directory, source) in enumerate(binds.items()):
        source.mkdir(parents=True, exist_ok=True)
        inside = [k for k in keep if k.startswith(directory.rstrip("/") + "/")]
        view = f"/mnt/.sandbox-view-{n}"
        if inside:
            if "mount -t tmpfs -o mode=0700 tmpfs /mnt" not in lines:
                lines.append("mount -t tmpfs -o mode=0700 tmpfs /mnt")
            # recursive: a kept path may lie on a filesystem mounted below the directory (the
            # tests' tmp is an XFS mounted under /tmp, tests/conftest.py)
            lines += [f"mkdir -p {view}", f"mount --rbind {shlex.quote(directory)} {view}"]
        lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(directory)}")
        for path in inside:
            rel = shlex.quote(path[len(directory.rstrip("/")) + 1 :])
            lines += [
                f"mkdir -p {shlex.quote(directory)}/{rel}",
                f"mount --rbind {view}/{rel} {shlex.quote(directory)}/{rel}",
            ]
    return lines


class Host:
    """A private mount namespace: `overlays` show the machine's directory with writes kept
    under `workdir`, `tmpfs` are empty, `binds` (directory on this host → a directory of the
    machine) show that directory instead. Everything else is the machine's own."""

    def __init__(
        self,
        workdir: Path,
        *,
        overlays: Sequence[str] = (),
        tmpfs: Sequence[str] = (),
        binds: Mapping[str, Path] | None = None,
        network: Network | None = None,
        hostname: str | None = None,
    ):
        self.workdir = workdir
        self.network = network
        self.hostname = hostname
        workdir.mkdir(parents=True, exist_ok=True)
        # from inside `workdir`: the ready file is touched there even when a bind or tmpfs
        # covers the path to it
        lines = [f"cd {shlex.quote(str(workdir))}"]
        lines += [f"hostname {shlex.quote(hostname)}"] if hostname else []
        # binds first: a bound directory (the reader's /tmp) may hold the checkout or this
        # test's own directory, which stay reachable through it
        lines += _bind_lines(binds or {}, keep=[str(workdir.parent), *overlays])
        for directory in overlays:
            layer = workdir / "layers" / directory.strip("/").replace("/", "_")
            upper, work = layer / "upper", layer / "work"
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            options = f"lowerdir={directory},upperdir={upper},workdir={work}"
            lines.append(f"mount -t overlay overlay -o {shlex.quote(options)} {directory}")
        for directory in tmpfs:
            lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(directory)}")
        ready = workdir / "host.ready"
        lines += [f"touch {ready.name}", "exec sleep infinity"]
        uts = ["--uts"] if hostname else []
        argv = ["unshare", "--mount", *uts, "--propagation", "private", "sh", "-ec"]
        argv.append("\n".join(lines))
        self._holder = _holder(argv, ready)

    def nsenter(self, *, network: bool = True) -> list[str]:
        """The prefix that runs a command on this host (in its network when it has one and
        `network`, else in the machine's)."""
        prefix = ["nsenter", f"--mount=/proc/{self._holder.pid}/ns/mnt"]
        if self.hostname:
            prefix.append(f"--uts=/proc/{self._holder.pid}/ns/uts")
        if network and self.network is not None:
            prefix.append(f"--net={self.network.ns}")
        return [*prefix, "--"]

    def _argv(self, script: str, cwd: str | Path, network: bool = True) -> list[str]:
        # cd inside: the working directory is looked up in this host's mount namespace
        command = f"cd {shlex.quote(str(cwd))} && {script}"
        return [*self.nsenter(network=network), "sh", "-c", command]

    def run(
        self,
        script: str,
        *,
        cwd: str | Path = "/",
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        network: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """`sh -c script` on this host; its output as text."""
        return subprocess.run(
            self._argv(script, cwd, network),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ if env is None else env),
        )

    def start(
        self,
        argv: Sequence[str],
        log: Path,
        *,
        cwd: str | Path = "/",
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` on this host (`exec`ed, so the Popen's pid is the program's)."""
        command = "exec " + shlex.join(argv)
        with log.open("wb") as out:
            return subprocess.Popen(
                self._argv(command, cwd),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ if env is None else env),
            )

    def health(self, address: str, python: str) -> str:
        """The gRPC health status of `address`, asked from this host's network."""
        result = self.run(f"exec {shlex.quote(python)} -c {shlex.quote(HEALTH_PROBE)} {address}")
        return result.stdout.strip() or result.stderr.strip()

    def wait_serving(
        self, address: str, python: str, service: subprocess.Popen[bytes], log: Path
    ) -> None:
        deadline = time.monotonic() + 30
        status = ""
        while status != "SERVING":
            if service.poll() is not None:
                raise AssertionError(f"exited {service.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{address} answers {status!r}:\n{log.read_text()}")
            time.sleep(0.1)
            status = self.health(address, python)

    def close(self) -> None:
        _stop(self._holder)


def terminate(popen: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM, then the exit status (killed and failed when it does not stop in time)."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
    try:
        return popen.wait(timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
        raise AssertionError(f"did not stop within {timeout}s of SIGTERM") from None
