"""A private MariaDB server on loopback, for stacks of several management replicas (the tests'
and the replica benchmark's): its own data directory, socket, pid file and log under one
directory, no system configuration read, the root user reachable over the socket only.

Debian's `mariadb-server` package provides the binaries (in /usr/sbin); `.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

READY_SECONDS = 60


def binary(name: str) -> str | None:
    """A server binary, also where PATH lacks /usr/sbin."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def installed() -> bool:
    return binary("mariadbd") is not None and binary("mariadb-install-db") is not None


@dataclass(frozen=True)
class Started:
    popen: subprocess.Popen[bytes]
    socket: Path
    log: Path


def start(
    home: Path, port: int, extra: Sequence[str] = (), *, own_session: bool = False
) -> Started:
    """A new data directory in `home`, then `mariadbd` on 127.0.0.1:`port` with `extra`
    arguments, once it says it is ready (connecting earlier would leak sockets). Raises
    RuntimeError with its log when it does not start; the caller stops it."""
    mariadbd, install = binary("mariadbd"), binary("mariadb-install-db")
    if mariadbd is None or install is None:
        raise RuntimeError("MariaDB is not installed (mariadbd, mariadb-install-db)")
    home.mkdir(parents=True, exist_ok=True)
    data, log, socket = home / "data", home / "mariadb.log", home / "mariadb.sock"
    as_root = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root otherwise
    subprocess.run(
        [
            install,
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            f"--datadir={data}",
            "--skip-test-db",
            *as_root,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    args = [
        mariadbd,
        "--no-defaults",
        f"--datadir={data}",
        f"--socket={socket}",
        f"--pid-file={home / 'mariadb.pid'}",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        "--skip-name-resolve",
        "--skip-log-bin",
        f"--log-error={log}",
        *as_root,
        *extra,
    ]
    popen = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=own_session
    )
    deadline = time.monotonic() + READY_SECONDS
    while "ready for connections" not in (log.read_text(errors="replace") if log.exists() else ""):
        if popen.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            popen.kill()
            popen.wait()
            raise RuntimeError(f"mariadbd did not start ({popen.returncode}); {log}:\n{text}")
        time.sleep(0.1)
    return Started(popen, socket, log)
