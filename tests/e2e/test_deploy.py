"""deploy/: the systemd units pass `systemd-analyze verify`, the example configs load through the
services' own settings parsers, and the services run from those configs with mutual TLS made
by deploy/tls/make-certs.sh (checked with the real grpcurl)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spcs.common.settings import add_options
from spcs.emulator import Emulator
from spcs.management import settings as management_settings
from spcs.node import settings as node_settings
from tests.e2e.helpers import MISSING, find_grpcurl
from tests.stacks import Service, start_service
from tests.support import REPO

DEPLOY = REPO / "deploy"
UNITS = DEPLOY / "systemd"
CONFIG = DEPLOY / "config"
MAKE_CERTS = DEPLOY / "tls" / "make-certs.sh"
INSTALLED_SPCS = "/opt/spcs/bin/spcs"  # where docs/deploy.md installs the wheel
TEMPLATE = "deploy-test"
TOKEN = "4815162342"


# ------------------------------------------------------------------ systemd units


def unit_settings(path: Path) -> dict[str, list[str]]:
    """`Key` → values of a unit file (all sections; keys are unique across them here)."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.parametrize("unit", ["spcs-management.service", "spcs-node.service"])
def test_systemd_unit_verifies(unit: str, tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    text = (UNITS / unit).read_text()
    assert f"ExecStart={INSTALLED_SPCS} " in text
    # verify insists that ExecStart exists: point it at this checkout's spcs
    spcs = Path(sys.executable).parent / "spcs"
    assert spcs.exists()
    (tmp_path / unit).write_text(text.replace(INSTALLED_SPCS, str(spcs)))
    result = subprocess.run(
        [analyze, "verify", "--man=no", unit],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 even for unknown keys or bad values; it only warns, so any output fails
    assert result.returncode == 0 and result.stdout + result.stderr == "", result


def test_systemd_units_say_what_the_services_need():
    management = unit_settings(UNITS / "spcs-management.service")
    node = unit_settings(UNITS / "spcs-node.service")
    for unit, kind in ((management, "management"), (node, "node")):
        assert unit["ExecStart"] == [f"{INSTALLED_SPCS} {kind} --config /etc/spcs/{kind}.toml"]
        assert unit["EnvironmentFile"] == [f"-/etc/spcs/{kind}.env"]
        assert unit["Restart"] == ["on-failure"]
        assert unit["KillSignal"] == ["SIGTERM"]
        assert unit["RestartPreventExitStatus"] == ["2"]  # configuration errors
        assert unit["NoNewPrivileges"] == ["yes"]
    assert management["User"] == ["spcs"] and management["ProtectSystem"] == ["strict"]
    assert management["StateDirectory"] == ["spcs/management"]
    # the node: root, the host's /dev (no device allow-list), mounts (CAP_SYS_ADMIN kept)
    assert node["User"] == ["root"]
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert key not in node, key
    assert "CapabilityBoundingSet" not in node and "SystemCallFilter" not in node
    assert node["StateDirectory"] == ["spcs/node spcs/mnt"]


# ------------------------------------------------------------------ example configs


def commented_settings_enabled(text: str) -> str:
    """The config with every commented-out `# key = value` line turned on."""
    return re.sub(r"^# (\w+ = .+)$", r"\1", text, flags=re.M)


def env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def make_certs(directory: Path, *args: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["sh", str(MAKE_CERTS), str(directory), *args], check=True, capture_output=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A stand-in for / with what the units and docs/deploy.md create: the state and log
    directories, /etc/spcs/tls with a CA and this host's certificate, StorPool configs."""
    tls = tmp_path / "etc" / "spcs" / "tls"
    make_certs(tls, "ca")
    # management and the node share this host and so /etc/spcs/tls/host.pem: one certificate
    # with both roles, management and the node of host kvm-host-1 (node.env's SPCS_HOST_ID)
    make_certs(
        tls, "management", "127.0.0.1", "DNS:localhost", "URI:spiffe://spcs/spcs/node/kvm-host-1"
    )
    make_certs(tls, "operator", "operator")
    shutil.copy(tls / "127.0.0.1.pem", tls / "host.pem")
    shutil.copy(tls / "127.0.0.1.key", tls / "host.key")
    for directory in ("var/lib/spcs/management", "var/lib/spcs/node", "var/log/spcs/management"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "var/log/spcs/node").mkdir()
    (tmp_path / "dev").mkdir()
    conf = f"SP_API_HTTP_HOST=127.0.0.1\nSP_API_HTTP_PORT=81\nSP_AUTH_TOKEN={TOKEN}\n"
    (tmp_path / "etc/storpool.conf").write_text(
        f"{conf}SP_CLUSTER_ID=emu.a\n\n[kvm1]\nSP_OURID=1\n"
    )
    (tmp_path / "etc/spcs/storpool.conf").write_text(conf)  # management's own copy
    return tmp_path


def installed_config(root: Path, name: str, *, all_settings: bool = False) -> Path:
    """deploy/config/<name> with its absolute paths moved under `root`."""
    text = (CONFIG / name).read_text()
    if all_settings:
        text = commented_settings_enabled(text)
    for prefix in ("/etc/spcs/", "/etc/storpool.conf", "/var/lib/spcs/", "/var/log/spcs/"):
        text = text.replace(f'"{prefix}', f'"{root}{prefix}')
    text = text.replace('device_root = "/dev"', f'device_root = "{root}/dev"')
    path = root / "etc" / "spcs" / name
    path.write_text(text)
    return path


def parse(options, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser, options)
    return parser.parse_args(argv)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SPCS_* / SP_* variables from the environment of the test run."""
    for key in list(os.environ):
        if key.startswith(("SPCS_", "SP_")):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.mark.parametrize("all_settings", [False, True], ids=["as-shipped", "all-settings"])
def test_management_config_loads(root: Path, clean_env, all_settings: bool):
    config = installed_config(root, "management.toml", all_settings=all_settings)
    for key, value in env_file(CONFIG / "management.env").items():
        clean_env.setenv(key, value)
    args = parse(management_settings.OPTIONS, ["--config", str(config)])
    settings = management_settings.ManagementSettings.from_args(args)
    assert settings.server.listen == ("0.0.0.0", 9710)
    assert settings.db == root / "var/lib/spcs/management/management.db"
    assert settings.server.tls_client_auth is True
    assert settings.server.tls_cert == root / "etc/spcs/tls/host.pem"
    assert (settings.storpool_retry_seconds, settings.node_retry_seconds) == (30.0, 30.0)
    assert (settings.server.workers, settings.server.grace_seconds) == (16, 10.0)
    if all_settings:
        assert settings.server.log_file == root / "var/log/spcs/management/management.log"
        assert settings.storpool.auth_token == TOKEN  # from /etc/spcs/storpool.conf
    else:
        assert settings.server.log_file is None  # the journal


@pytest.mark.parametrize("all_settings", [False, True], ids=["as-shipped", "all-settings"])
def test_node_config_loads(root: Path, clean_env, all_settings: bool):
    config = installed_config(root, "node.toml", all_settings=all_settings)
    if not all_settings:
        for key, value in env_file(CONFIG / "node.env").items():
            clean_env.setenv(key, value)
    argv = ["--config", str(config), "--storpool-conf", str(root / "etc/storpool.conf")]
    args = parse(node_settings.OPTIONS, [*argv, "--storpool-section", "kvm1"])
    settings = node_settings.NodeSettings.from_args(args)
    assert settings.host_id == "kvm-host-1"  # from node.env, or the commented host_id
    assert settings.server.listen == ("0.0.0.0", 9711)
    assert [str(target) for target in settings.management] == ["cs-mgmt.example.com:9710"]
    assert settings.storpool.our_id == 1 and settings.storpool.auth_token == TOKEN
    assert settings.state_dir == root / "var/lib/spcs/node"
    assert settings.mount_root == root / "var/lib/spcs/mnt"
    assert settings.device_root == root / "dev"
    assert (settings.max_copies, settings.detach_attempts) == (2, 10)
    assert settings.server.tls_client_auth is True
    if all_settings:
        assert settings.advertise == "kvm1.example.com:9711"
        assert settings.server.log_file == root / "var/log/spcs/node/node.log"
    else:
        assert settings.advertise is None


def test_node_config_without_host_id_is_refused(root: Path, clean_env):
    from spcs.common.settings import ConfigError

    config = installed_config(root, "node.toml")
    args = parse(node_settings.OPTIONS, ["--config", str(config)])
    with pytest.raises(ConfigError, match="--host-id is required"):
        node_settings.NodeSettings.from_args(args)


# ------------------------------------------------------------------ running with mutual TLS


def grpcurl_binary() -> str:
    found = find_grpcurl()
    if found is None:
        pytest.skip(MISSING)
    return found


@pytest.fixture
def emulator(root: Path) -> Iterator[Emulator]:
    emu = Emulator(
        root / "emulator",
        token=TOKEN,
        clients={1: root / "dev"},
        cluster_id="emu.a",
        templates={TEMPLATE: 16 << 30},
    )
    emu.start()
    try:
        yield emu
    finally:
        emu.stop(release_devices=True)


def test_services_run_from_the_example_configs_with_mutual_tls(
    root: Path, emulator: Emulator, services: list[Service], clean_env
):
    grpcurl = grpcurl_binary()
    tls = root / "etc" / "spcs" / "tls"
    management = start_service(
        ["management", "--config", str(installed_config(root, "management.toml"))],
        root,
        "management",
    )
    services.append(management)
    node_env = {
        **env_file(CONFIG / "node.env"),
        "SP_API_HTTP_HOST": emulator.host,
        "SP_API_HTTP_PORT": str(emulator.port),
        "SP_AUTH_TOKEN": TOKEN,
        "SP_OURID": "1",
        "SP_CLUSTER_ID": emulator.cluster_id,
    }
    node = start_service(
        [
            "node",
            "--config",
            str(installed_config(root, "node.toml")),
            "--management",
            management.address,
        ],
        root,
        "node",
        env=node_env,
    )
    services.append(node)

    def call(address: str, method: str, data: object = None, *auth: str) -> dict:
        if not auth:
            auth = ("-cacert", str(tls / "ca.pem"))
            auth += ("-cert", str(tls / "operator.pem"), "-key", str(tls / "operator.key"))
        argv = [grpcurl, "-max-time", "20", *auth]
        argv += ["-d", json.dumps(data)] if data is not None else []
        result = subprocess.run(
            [*argv, address, method], capture_output=True, text=True, timeout=30, cwd=root
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    health = "grpc.health.v1.Health/Check"
    assert call(management.address, health) == {"status": "SERVING"}
    assert call(node.address, health) == {"status": "SERVING"}
    # the node registered over mutual TLS ...
    deadline = time.monotonic() + 15
    while not (nodes := call(management.address, "spcs.v1.NodeRegistry/ListNodes")):
        assert time.monotonic() < deadline, "the node did not register"
        time.sleep(0.2)
    assert [(n["host_id"], n["healthy"]) for n in nodes["nodes"]] == [("kvm-host-1", True)]
    # ... and management calls it over mutual TLS
    call(
        management.address,
        "spcs.v1.PrimaryDataStoreLifeCycle/InitializePool",
        {
            "pool_uuid": "pool-tls",
            "name": "pool-tls",
            "url": f"storpool://{TOKEN}@{emulator.host}:{emulator.port}/{TEMPLATE}",
            "zone_id": "zone-1",
            "capacity_bytes": str(1 << 40),
        },
    )
    connected = call(
        management.address,
        "spcs.v1.HostListener/HostConnect",
        {"host_id": "kvm-host-1", "pool_uuid": "pool-tls"},
    )
    assert connected["connected"] is True, connected
    assert call(
        management.address,
        "spcs.v1.PrimaryDataStoreLifeCycle/DeletePool",
        {"pool_uuid": "pool-tls"},
    ) == {"deleted": True}

    # without a client certificate, or without TLS, the handshake is refused
    for auth in (("-cacert", str(tls / "ca.pem")), ("-plaintext",)):
        refused = subprocess.run(
            [grpcurl, "-max-time", "5", *auth, management.address, health],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode != 0 and "Failed to dial target host" in refused.stderr
    for service in (node, management):
        assert service.terminate() == 0
