"""Test helpers: run spcs services as real processes on loopback and talk gRPC to them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parent.parent
SPCS = [sys.executable, "-m", "spcs.cli"]


def log_containing(path: Path, text: str, timeout: float = 5.0) -> str:
    """A service's log once `text` is in it (or the timeout passed): a service writes its log
    from a queue, up to spcs.common.logs.WRITE_INTERVAL after the line was logged."""
    deadline = time.monotonic() + timeout
    while True:
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.02)


@dataclass
class Service:
    """A spcs server process started by a test."""

    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_with(self, text: str) -> str:
        return log_containing(self.log_path, text)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def terminate(self, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


def start_service(
    args: list[str],
    workdir: Path,
    name: str,
    env: dict[str, str] | None = None,
    timeout: float = 20,
) -> Service:
    """Start `spcs <args> --listen 127.0.0.1:0` and wait until it has bound its port."""
    port_file = workdir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log_path = workdir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            [*SPCS, *args, "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=workdir,
        )
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if popen.poll() is not None:
            raise AssertionError(f"{name} exited with {popen.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            popen.kill()
            raise AssertionError(f"{name} did not start in {timeout}s:\n{log_path.read_text()}")
        time.sleep(0.05)
    return Service(popen, int(port_file.read_text()), log_path)


def run_spcs(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SPCS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
