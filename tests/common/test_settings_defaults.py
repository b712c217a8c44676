"""The services start with nothing but their required settings, on their defaults.

`spcs management` needs no setting; `spcs node` needs --host-id and StorPool's SP_OURID and
SP_AUTH_TOKEN. Their defaults are /var/lib/spcs/... and the fixed ports 9710 and 9711, so the
processes run on a private /var/lib (an empty tmpfs) and a private network (loopback only):
they must create the state directories they own, serve, and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

from spcs.common.settings import Option, ServerSettings, add_options, resolve
from spcs.management import settings as management_settings
from spcs.node import settings as node_settings
from tests.e2e.sandbox import Host, Network, require_namespaces, terminate
from tests.stacks import Service

SPCS = [sys.executable, "-m", "spcs.cli"]


def test_defaults_are_text_parsed_like_any_value():
    for options in (management_settings.OPTIONS, node_settings.OPTIONS):
        parser = argparse.ArgumentParser()
        add_options(parser, options)
        values = resolve(parser.parse_args([]), options, environ={})
        for opt in options:
            assert opt.default is None or isinstance(opt.default, str), opt.name
            if opt.default is not None:
                assert values[opt.name] == opt.parse(opt.default), opt.name
        ServerSettings.from_values(values)  # the defaults fit together
    values = resolve(
        argparse.Namespace(), node_settings.OPTIONS, environ={"SPCS_HOST_ID": "kvm-host-1"}
    )
    assert values["state_dir"] == Path("/var/lib/spcs/node")
    assert values["mount_root"] == Path("/var/lib/spcs/mnt")
    assert values["listen"] == ("127.0.0.1", 9711)
    assert (values["workers"], values["grace_seconds"]) == (16, 10.0)
    assert values["tls_client_auth"] is False
    assert values["secondary_store"] == []


def test_an_option_default_must_be_text():
    with pytest.raises(TypeError, match="must be the text a user would type"):
        Option("workers", "threads", default=16)  # type: ignore[arg-type]


def state_modes(host: Host, *paths: str) -> dict[str, str]:
    listing = host.run("stat -c '%n %a %F' " + " ".join(paths))
    assert listing.returncode == 0, listing.stderr
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in listing.stdout.splitlines()}


@pytest.fixture
def host(tmp_path: Path):
    require_namespaces(network=True)
    network = Network(tmp_path / "net")
    host = Host(tmp_path / "host", tmpfs=["/var/lib"], network=network)
    yield host
    host.close()
    network.close()


@pytest.mark.root
def test_management_starts_with_no_settings(host: Host, tmp_path: Path, services):
    log = tmp_path / "management.log"
    popen = host.start([*SPCS, "management"], log, env=clean_env())
    services.append(Service(popen, 9710, log))
    host.wait_serving("127.0.0.1:9710", sys.executable, popen, log)
    modes = state_modes(host, "/var/lib/spcs", "/var/lib/spcs/management.db")
    assert modes["/var/lib/spcs"] == "750 directory"  # made by the service, as StateDirectory=
    assert modes["/var/lib/spcs/management.db"].endswith("regular file")
    assert terminate(popen) == 0
    assert "spcs-management stopped" in log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.mark.root
def test_node_starts_with_only_host_id_and_storpool_identity(host: Host, tmp_path: Path, services):
    log = tmp_path / "node.log"
    env = {**clean_env(), "SP_OURID": "1", "SP_AUTH_TOKEN": "x"}
    popen = host.start([*SPCS, "node", "--host-id", "1"], log, env=env)
    services.append(Service(popen, 9711, log))
    host.wait_serving("127.0.0.1:9711", sys.executable, popen, log)
    modes = state_modes(
        host, "/var/lib/spcs/node", "/var/lib/spcs/mnt", "/var/lib/spcs/node/node.db"
    )
    assert modes["/var/lib/spcs/node"] == "750 directory"
    assert modes["/var/lib/spcs/mnt"] == "750 directory"
    assert modes["/var/lib/spcs/node/node.db"].endswith("regular file")
    assert terminate(popen) == 0
    text = log.read_text()
    assert "spcs-node stopped" in text and "Traceback" not in text


@pytest.mark.root
def test_state_directory_that_cannot_be_made_is_a_configuration_error(host: Host, tmp_path: Path):
    # /var/lib/spcs is a file on this host: nothing can be created below it
    assert host.run("touch /var/lib/spcs").returncode == 0
    for argv, env, setting in (
        (["management"], {}, "--db"),
        (["node", "--host-id", "1"], {"SP_OURID": "1", "SP_AUTH_TOKEN": "x"}, "--mount-root"),
    ):
        result = host.run(" ".join([*SPCS, *argv]), env={**clean_env(), **env}, timeout=60)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stdout + result.stderr
        prefix = f"spcs {argv[0]}: configuration error: {setting}: "
        assert result.stderr.startswith(prefix), result.stderr
        assert "/var/lib/spcs" in result.stderr and "not a directory" in result.stderr.lower()


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith(("SPCS_", "SP_"))}
