"""Shared fixtures (helpers live in tests/support.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from spcs.emulator import cow
from tests.stacks import MariaDB, Service, mariadb_installed, mariadb_server

# The tests' temporary directories live on an XFS filesystem with reflink, made as the emulator
# makes its own and kept mounted between sessions, where the machine allows it: every
# emulator's objects then share extents natively, instead of each of the suite's emulators
# making an XFS image of its own (spcs.emulator.cow; its own tests make those on purpose).
# Under /tmp, as pytest's own: the e2e sandboxes put overlays on /var, /etc, /opt and /root.
# SPCS_TEST_PLAIN_TMP=1 keeps pytest's default place.
REFLINK_TMP = Path("/tmp/spcs-tests-xfs-2")
REFLINK_IMAGE = Path("/tmp/spcs-tests-xfs-2.img")
REFLINK_SIZE = 256 << 30
KEEP_RUNS = 3


def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp or os.environ.get("SPCS_TEST_PLAIN_TMP"):
        return
    mounted = _reflink_tmp()
    if mounted is None:
        return
    runs = sorted(mounted.glob("run-*"), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - KEEP_RUNS + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    config.option.basetemp = str(mounted / f"run-{os.getpid()}")


def _reflink_tmp() -> Path | None:
    """The mounted XFS for the tests' temporary directories, or None where it can not be."""
    if os.path.ismount(REFLINK_TMP):
        return REFLINK_TMP
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        return None
    try:
        REFLINK_TMP.mkdir(parents=True, exist_ok=True)
        if not REFLINK_IMAGE.exists():
            with REFLINK_IMAGE.open("wb") as image:
                image.truncate(REFLINK_SIZE)
            subprocess.run(
                ["mkfs.xfs", *cow.MKFS_OPTIONS, str(REFLINK_IMAGE)],
                check=True,
                capture_output=True,
                timeout=60,
            )
        # direct I/O to the image: its pages are cached once (by the XFS), not twice
        device = subprocess.run(
            ["losetup", "--find", "--show", "--direct-io=on", str(REFLINK_IMAGE)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        subprocess.run(
            ["mount", "-o", cow.MOUNT_OPTIONS, device, str(REFLINK_TMP)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return REFLINK_TMP


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    """Services started through this list are stopped (and checked to exit) at teardown."""
    started: list[Service] = []
    yield started
    for service in started:
        if service.popen.poll() is None:
            service.popen.send_signal(signal.SIGTERM)
            try:
                service.popen.wait(15)
            except subprocess.TimeoutExpired:
                service.popen.kill()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """A private MariaDB server for the whole session (tests/stacks.py `mariadb_server`).
    Where mariadbd is not installed the tests using it are skipped, except in CI (env CI set),
    where .ci/run installs it and its absence fails them."""
    if not mariadb_installed():
        if os.environ.get("CI"):
            pytest.fail("mariadbd is not installed (package mariadb-server; .ci/run installs it)")
        pytest.skip("mariadbd is not installed (apt-get install mariadb-server)")
    with mariadb_server(tmp_path_factory.mktemp("mariadb")) as server:
        yield server
