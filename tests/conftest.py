"""Shared fixtures (helpers live in tests/support.py)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stacks import MariaDB, Service, mariadb_installed, mariadb_server


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
