"""The node's `management` setting in every form it takes (one address, commas, the flag
repeated, SPCS_MANAGEMENT, a TOML string or list, dns:///NAME:PORT), what a dns:/// entry
expands to, and the retry delays. The bad values are in tests/common/test_settings_errors.py;
registration with real management processes in tests/node/test_replicas.py."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from spcs.common.settings import add_options
from spcs.node import settings as node_settings
from spcs.node.registration import Backoff
from spcs.node.targets import (
    MAX_TARGETS,
    Replica,
    Target,
    all_replicas,
    parse_management,
    replicas_of,
    system_resolve,
)

pytestmark = pytest.mark.fast


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """NodeSettings from flags, environment and a TOML file, on valid base settings."""
    for key in [key for key in os.environ if key.startswith(("SPCS_", "SP_"))]:
        monkeypatch.delenv(key)
    conf = tmp_path / "storpool.conf"
    conf.write_text("SP_API_HTTP_HOST=127.0.0.1\nSP_AUTH_TOKEN=tok\nSP_OURID=1\n")
    (tmp_path / "dev").mkdir()
    base = ["--host-id", "kvm-1", "--storpool-conf", str(conf), "--device-root"]
    base += [str(tmp_path / "dev"), "--state-dir", str(tmp_path / "state")]
    base += ["--mount-root", str(tmp_path / "mnt")]

    def load(
        argv: list[str], env: dict[str, str] | None = None, toml: str | None = None
    ) -> list[str]:
        monkeypatch.delenv("SPCS_MANAGEMENT", raising=False)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        (tmp_path / "node.toml").unlink(missing_ok=True)
        if toml is not None:
            (tmp_path / "node.toml").write_text(toml)
            argv = [*argv, "--config", str(tmp_path / "node.toml")]
        parser = argparse.ArgumentParser()
        add_options(parser, node_settings.OPTIONS)
        settings = node_settings.NodeSettings.from_args(parser.parse_args([*base, *argv]))
        return [str(target) for target in settings.management]

    return load


TWO = ["10.0.0.1:9710", "10.0.0.2:9710"]


def test_one_address_in_every_form_as_before(load):
    assert load(["--management", "mgmt:9710"]) == ["mgmt:9710"]
    assert load([], env={"SPCS_MANAGEMENT": "mgmt:9710"}) == ["mgmt:9710"]
    assert load([], toml='management = "mgmt:9710"\n') == ["mgmt:9710"]
    assert load([]) == []  # unregistered


def test_several_addresses_in_every_form(load):
    assert load(["--management", "10.0.0.1:9710,10.0.0.2:9710"]) == TWO
    assert load(["--management", TWO[0], "--management", TWO[1]]) == TWO
    assert load(["--management", "10.0.0.1:9710, 10.0.0.2:9710"]) == TWO  # spaces are fine
    assert load([], env={"SPCS_MANAGEMENT": ",".join(TWO)}) == TWO
    assert load([], toml=f"management = {TWO!r}\n".replace("'", '"')) == TWO
    assert load([], toml=f'management = "{",".join(TWO)}"\n') == TWO
    # precedence as for every setting: the flag over the environment over the file
    both = load(["--management", "[::1]:9710"], env={"SPCS_MANAGEMENT": TWO[0]})
    assert both == ["[::1]:9710"]


def test_a_dns_name_to_expand(load):
    assert load(["--management", "dns:///spcs-mgmt.example:9710"]) == [
        "dns:///spcs-mgmt.example:9710"
    ]
    assert load(["--management", "dns:///mgmt:9710,10.0.0.9:9710"]) == [
        "dns:///mgmt:9710",
        "10.0.0.9:9710",
    ]
    assert parse_management("dns:///mgmt:9710") == [Target("mgmt", 9710, expand=True)]
    assert parse_management("mgmt:9710") == [Target("mgmt", 9710, expand=False)]


def test_as_many_addresses_as_replicas_a_region_could_have(load):
    many = [f"10.0.0.{n}:9710" for n in range(1, MAX_TARGETS + 1)]
    assert load(["--management", ",".join(many)]) == many


def test_a_dns_entry_is_one_replica_per_address():
    target = Target("spcs-mgmt.example", 9710, expand=True)
    answers = ["192.0.2.1", "2001:db8::1", "192.0.2.1", "192.0.2.2"]
    replicas = replicas_of(target, lambda host, port: answers)
    assert [r.address for r in replicas] == [
        "192.0.2.1:9710",
        "[2001:db8::1]:9710",
        "192.0.2.2:9710",
    ]
    # a TLS certificate is checked against the name, not the address dialled
    assert {r.server_name for r in replicas} == {"spcs-mgmt.example"}
    assert str(replicas[1]) == "[2001:db8::1]:9710 (dns:///spcs-mgmt.example:9710)"
    # at most MAX_TARGETS of a name that answers with many
    many = [f"192.0.2.{n}" for n in range(1, 40)]
    assert len(replicas_of(target, lambda host, port: many)) == MAX_TARGETS
    with pytest.raises(OSError, match="no address"):
        replicas_of(target, lambda host, port: [])


def test_a_plain_entry_is_one_replica_and_is_not_resolved():
    def never(host: str, port: int) -> list[str]:
        raise AssertionError("a plain HOST:PORT goes to gRPC as it is")

    assert replicas_of(Target("mgmt", 9710), never) == [Replica("mgmt:9710")]
    assert replicas_of(Target("mgmt", 9710), never)[0].server_name is None


def test_replicas_named_twice_are_registered_with_once():
    one = Replica("127.0.0.1:9710")
    via = Replica("127.0.0.1:9710", Target("localhost", 9710, expand=True))
    found = all_replicas([[one], [via, Replica("127.0.0.1:9711")]])
    assert list(found) == ["127.0.0.1:9710", "127.0.0.1:9711"]
    assert found["127.0.0.1:9710"] is one


def test_the_system_resolver_reads_the_hosts_file():
    assert "127.0.0.1" in system_resolve("localhost", 9710)
    with pytest.raises(OSError):
        system_resolve("no-such-host.invalid", 9710)


def test_retries_back_off_with_jitter_and_start_over_after_a_success():
    backoff = Backoff(first=1.0, most=30.0)
    delays = [backoff.next() for _ in range(8)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
    backoff.reset()
    assert backoff.next() <= 1.2
