"""docs/packages.md run verbatim: `just package` builds the Debian packages (in an overlay of the
checkout, as test_documented_commands.py builds the wheel), then two freshly booted Debian
machines with systemd as PID 1 (tests/e2e/machine.py), a management host and a KVM host on one
private network, install them with `dpkg -i`, are configured as the page says and start the
units; the test checks what systemd runs, the gRPC health checks, the node's registration, and
then an upgrade to a second build (configs edited, a pool in the database), `dpkg -r` and
`dpkg --purge`. Every ```sh command of the page must be run here.

What the page leaves to the reader the test does: copying the packages and certificates
(made by deploy/tls/make-certs.sh) to the hosts, the KVM host's /etc/storpool.conf and a
StorPool API (the emulator), the hosts' names in /etc/hosts, and what CloudStack does (adding
a pool).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spcs import __version__
from tests.e2e.doc_commands import reader_env, sh_blocks, split_commands
from tests.e2e.helpers import find_grpcurl
from tests.e2e.machine import SYSTEMD, Machine
from tests.e2e.sandbox import Host, Network, require_namespaces
from tests.support import REPO

DOC = "docs/packages.md"
SECTIONS = (
    "## Build",
    "### The management host",
    "### Each KVM host",
    "## Check",
    "## Upgrade",
    "## Remove",
)
MANAGEMENT, KVM = "cs-mgmt.example.com", "kvm1.example.com"  # the names the page uses
ADDRESSES = {KVM: "127.0.2.1", MANAGEMENT: "127.0.2.2"}
HOST_ID = "kvm-host-1"
TOKEN = "4815162342"
TEMPLATE = "spcs-package"
POOL = "pool-package"
DB = "/var/lib/spcs/management/management.db"


# ------------------------------------------------------------------ the page's commands


@dataclass(frozen=True)
class Command:
    section: str
    block: int
    text: str
    comment: str

    def __str__(self) -> str:
        return f"{DOC} {self.section!r}: {self.text}"


@functools.cache
def documented() -> tuple[Command, ...]:
    return tuple(
        Command(section, block, text, comment)
        for section, block, lines in sh_blocks(DOC)
        for text, comment in split_commands(lines)
    )


def named_host(text: str) -> str | None:
    if "spcs-management" in text:
        return MANAGEMENT
    if "spcs-node" in text:
        return KVM
    return None


def host_of(command: Command) -> str:
    """Where a command runs: "admin" (the checkout) for the build, else the host its section
    or the service it names says, else the one the other commands of its block name."""
    fixed = {"## Build": "admin", "### The management host": MANAGEMENT, "### Each KVM host": KVM}
    if command.section in fixed:
        return fixed[command.section]
    if found := named_host(command.text):
        return found
    block = [c for c in documented() if (c.section, c.block) == (command.section, command.block)]
    hosts = {named_host(c.text) for c in block} - {None}
    assert len(hosts) == 1, f"which host runs {command}?"
    return hosts.pop()  # type: ignore[return-value]


def commands_of(section: str) -> list[Command]:
    return [c for c in documented() if c.section == section]


@pytest.mark.fast
def test_every_command_of_the_page_has_a_place():
    commands = documented()
    assert len(commands) > 20, "the extraction found too few commands"
    unknown = [str(c) for c in commands if c.section not in SECTIONS]
    assert unknown == [], f"teach tests/e2e/test_package.py these sections:\n{unknown}"
    for command in commands:
        assert host_of(command) in ("admin", MANAGEMENT, KVM)


# ------------------------------------------------------------------ the build


@dataclass
class Built:
    first: dict[str, Path]  # package name → its .deb, revision 1 (what `just package` made)
    second: dict[str, Path]  # revision 2 of the same spcs, the upgrade
    ran: set[Command]


@functools.cache
def architecture() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def deb_names(revision: int) -> dict[str, str]:
    version = f"{__version__}-{revision}"
    return {
        "spcs": f"spcs_{version}_{architecture()}.deb",
        "spcs-management": f"spcs-management_{version}_all.deb",
        "spcs-node": f"spcs-node_{version}_all.deb",
    }


def require_tools() -> None:
    require_namespaces(network=True)
    missing = [tool for tool in ("dpkg-deb", "openssl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    if not Path(SYSTEMD).exists():
        pytest.skip(f"{SYSTEMD} not installed (package systemd): nothing to boot")
    if find_grpcurl() is None:
        pytest.skip("grpcurl is not installed")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The page's build command in an overlay of the checkout (its `setup` and dist/ writes
    stay there), then the same spcs again as revision 2."""
    require_tools()
    tmp = tmp_path_factory.mktemp("package")
    admin = Host(tmp / "admin", overlays=[str(REPO)])
    ran: set[Command] = set()
    env = reader_env(f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
    first, second = tmp / "first", tmp / "second"
    names = deb_names(1)
    try:
        for command in commands_of("## Build"):
            result = admin.run(command.text, cwd=REPO, env=env, timeout=900)
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
            # its comment names what it builds (this version, this architecture)
            shown = {
                name.replace("0.1.0", __version__).replace("amd64", architecture())
                for name in re.findall(r"dist/(\S+\.deb)", command.text)
            }
            assert shown == set(names.values()), command
            ran.add(command)
        # out of the overlay (dist/ holds them only there)
        first.mkdir()
        copy = " ".join(f"dist/{name}" for name in names.values())
        copied = admin.run(f"cp {copy} {shlex.quote(str(first))}", cwd=REPO)
        assert copied.returncode == 0, copied.stderr
        rebuild = admin.run(
            f"{REPO}/.venv/bin/python packaging/build_deb.py --revision 2 --out {second}",
            cwd=REPO,
            env=env,
            timeout=600,
        )
        assert rebuild.returncode == 0, rebuild.stderr
        assert sorted(p.name for p in second.iterdir()) == sorted(deb_names(2).values())
    finally:
        admin.close()
    yield Built(
        {k: first / v for k, v in names.items()},
        {k: second / v for k, v in deb_names(2).items()},
        ran,
    )


def deb_field(deb: Path, name: str) -> str:
    out = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.mark.root
@pytest.mark.timeout(900)
def test_package_contents(built: Built, tmp_path: Path):
    version = f"{__version__}-1"
    # the venv is built on Debian's python3 (not this test's interpreter)
    system_python = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    spcs, management, node = (built.first[n] for n in ("spcs", "spcs-management", "spcs-node"))
    for deb in (spcs, management, node):
        assert deb_field(deb, "Version") == version
    assert f"python{system_python}" in deb_field(spcs, "Depends").split(", ")
    for deb in (management, node):
        assert f"spcs (= {version})" in deb_field(deb, "Depends")
        assert deb_field(deb, "Architecture") == "all"
    assert "adduser" in deb_field(management, "Depends")

    root = tmp_path / "root"
    for deb in (spcs, management, node):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        listing = subprocess.run(
            ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
        ).stdout
        assert {line.split()[1] for line in listing.splitlines()} == {"root/root"}
    for kind, deb in (("management", management), ("node", node)):
        conffiles = subprocess.run(
            ["dpkg-deb", "--info", str(deb), "conffiles"], capture_output=True, text=True
        ).stdout
        assert conffiles.split() == [f"/etc/spcs/{kind}.env", f"/etc/spcs/{kind}.toml"]
        unit = root / "lib" / "systemd" / "system" / f"spcs-{kind}.service"
        assert unit.read_text() == (REPO / "deploy" / "systemd" / unit.name).read_text()
        for suffix in ("toml", "env"):
            config = root / "etc" / "spcs" / f"{kind}.{suffix}"
            assert config.read_text() == (REPO / "deploy" / "config" / config.name).read_text()
            assert config.stat().st_mode & 0o777 == 0o640
    venv = root / "opt" / "spcs"
    assert os.readlink(root / "usr" / "bin" / "spcs") == "/opt/spcs/bin/spcs"
    assert (venv / "bin" / "spcs").read_text().startswith("#!/opt/spcs/bin/python\n")
    config = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in config
    assert os.readlink(venv / "bin" / f"python{system_python}") == (
        f"/usr/bin/python{system_python}"
    )
    assert not (venv / "bin" / "pip").exists(), "nothing should pip install into /opt/spcs"
    site = venv / "lib" / f"python{system_python}" / "site-packages"
    # bytecode shipped, naming the installed source
    cached = site / "spcs" / "__pycache__" / f"cli.cpython-{system_python.replace('.', '')}.pyc"
    assert f"/opt/spcs/lib/python{system_python}/site-packages/spcs/cli.py".encode() in (
        cached.read_bytes()
    )
    # no file names the staging directory it was built in
    stale = [
        str(path)
        for path in venv.rglob("*")
        if path.is_file() and not path.is_symlink() and b"spcs-deb-" in path.read_bytes()
    ]
    assert stale == []


# ------------------------------------------------------------------ the machines


@dataclass
class Site:
    """The two machines, the StorPool API they use and the operator's gRPC client."""

    tmp: Path
    network: Network
    pki: Path
    machines: dict[str, Machine]
    ran: set[Command]

    def run(self, command: Command, host: str, *, cwd: str = "/root") -> str:
        """A command of the page on `host`, as written; it must succeed."""
        machine = self.machines[host]
        result = machine.run(command.text, cwd=cwd, timeout=300)
        context = f"{command} on {host}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == 0, context + self.journals(host)
        self.ran.add(command)
        return result.stdout

    def journals(self, host: str) -> str:
        machine = self.machines[host]
        return "".join(
            f"\n--- journal of {unit}:\n{machine.journal(unit)[-3000:]}"
            for unit in ("spcs-management", "spcs-node")
        )

    def call(
        self, host: str, port: int, method: str, data: object = None
    ) -> subprocess.CompletedProcess[str]:
        """grpcurl with the operator certificate, the way CloudStack's shim calls."""
        argv = ["nsenter", f"--net={self.network.ns}", "--", find_grpcurl() or "grpcurl"]
        argv += ["-max-time", "10", "-authority", host, "-cacert", str(self.pki / "ca.pem")]
        argv += ["-cert", str(self.pki / "ops.pem"), "-key", str(self.pki / "ops.key")]
        argv += ["-d", json.dumps(data)] if data is not None else []
        argv += [f"{ADDRESSES[host]}:{port}", method]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    def grpc(self, host: str, port: int, method: str, data: object = None) -> dict:
        result = self.call(host, port, method, data)
        assert result.returncode == 0, f"{method}: {result.stderr}" + self.journals(host)
        return json.loads(result.stdout)

    def health(self, host: str, port: int) -> str:
        """SERVING, another status, or why the call failed (not yet listening)."""
        result = self.call(host, port, "grpc.health.v1.Health/Check")
        if result.returncode != 0:
            return result.stderr.strip()
        return str(json.loads(result.stdout).get("status", ""))

    def healthy_nodes(self) -> list[str]:
        nodes = self.grpc(MANAGEMENT, 9710, "spcs.v1.NodeRegistry/ListNodes").get("nodes", [])
        return [node["host_id"] for node in nodes if node.get("healthy")]

    def unit(self, host: str, unit: str) -> dict[str, str]:
        out = self.machines[host].sh(
            f"systemctl show -p ActiveState -p UnitFileState -p MainPID -p User {unit}"
        )
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stat(self, host: str, path: str) -> tuple[str, str, str]:
        """(mode, owner, group) of `path` on `host`."""
        out = self.machines[host].sh(f"stat -c '%a %U %G' {shlex.quote(path)}")
        mode, owner, group = out.split()
        return mode, owner, group

    def exists(self, host: str, path: str) -> bool:
        """Also a dangling symbolic link (a removed unit's enablement)."""
        quoted = shlex.quote(path)
        return self.machines[host].run(f"test -e {quoted} || test -L {quoted}").returncode == 0

    def pools_in_database(self) -> list[str]:
        """The pools' rows in the SQLite file, read with Debian's python3."""
        query = (
            f"import sqlite3; db = sqlite3.connect('file:{DB}?mode=ro', uri=True); "
            "print(' '.join(row[0] for row in db.execute('SELECT uuid FROM pools')))"
        )
        return self.machines[MANAGEMENT].sh(f"/usr/bin/python3 -c {shlex.quote(query)}").split()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def make_certs(pki: Path) -> None:
    script = REPO / "deploy" / "tls" / "make-certs.sh"
    for args in (
        ["ca"],
        ["management", MANAGEMENT],
        ["node", KVM, HOST_ID],
        ["operator", "ops"],
    ):
        subprocess.run(["sh", str(script), str(pki), *args], check=True, capture_output=True)


@contextlib.contextmanager
def storpool_api(tmp: Path, network: Network) -> Iterator[None]:
    """The StorPool API emulator at 127.0.0.1:81 of the machines' network, with the KVM host's
    client (SP_OURID=1)."""
    (tmp / "emu-dev").mkdir()
    argv = ["nsenter", f"--net={network.ns}", "--", str(REPO / ".venv/bin/spcs"), "emulator"]
    argv += ["--data", str(tmp / "emu"), "--listen", "127.0.0.1:81", "--token", TOKEN]
    argv += ["--cluster-id", "emu.a", "--client", f"1={tmp / 'emu-dev'}"]
    argv += ["--template", f"{TEMPLATE}:1T"]
    with (tmp / "emulator.log").open("wb") as log:
        emulator = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    probe = ["nsenter", f"--net={network.ns}", "--", sys.executable, "-c"]
    probe.append("import socket; socket.create_connection(('127.0.0.1', 81), 1)")
    try:
        wait_for(
            lambda: (
                emulator.poll() is None
                and subprocess.run(probe, capture_output=True).returncode == 0
            ),
            "the StorPool API emulator",
            timeout=30,
        )
        yield
    finally:
        emulator.terminate()
        try:
            emulator.wait(20)
        except subprocess.TimeoutExpired:
            emulator.kill()
            emulator.wait()


@contextlib.contextmanager
def site(tmp: Path, ran: set[Command]) -> Iterator[Site]:
    network = Network(tmp / "net")
    machines: dict[str, Machine] = {}
    try:
        pki = tmp / "pki"
        make_certs(pki)
        hosts = "".join(
            f"{address} {name} {name.split('.')[0]}\n" for name, address in ADDRESSES.items()
        )
        for name in (MANAGEMENT, KVM):
            machines[name] = Machine(tmp / name, hostname=name, network=network, hosts=hosts)
        with storpool_api(tmp, network):
            yield Site(tmp, network, pki, machines, ran)
    finally:
        for machine in machines.values():
            machine.close()
        network.close()


# ------------------------------------------------------------------ the story


def assert_clean(site: Site, host: str) -> None:
    """What "a clean Debian machine" means here: no trace of spcs."""
    machine = site.machines[host]
    assert machine.run("getent passwd spcs").returncode != 0
    for path in ("/opt/spcs", "/etc/spcs", "/var/lib/spcs", "/usr/bin/spcs"):
        assert not site.exists(host, path), path
    assert machine.sh("hostname").strip() == host


def check_installed_not_started(site: Site, host: str, unit: str, kind: str) -> None:
    state = site.unit(host, unit)
    # configured first, then started by the operator
    assert (state["ActiveState"], state["UnitFileState"]) == ("inactive", "disabled"), state
    machine = site.machines[host]
    assert machine.sh("spcs version").startswith(f"spcs {__version__} ")
    conffiles = machine.sh(f"dpkg-query -W -f '${{Conffiles}}' spcs-{kind}")
    assert f"/etc/spcs/{kind}.toml" in conffiles and f"/etc/spcs/{kind}.env" in conffiles
    assert (
        machine.sh(f"cat /etc/spcs/{kind}.toml")
        == (REPO / "deploy" / "config" / f"{kind}.toml").read_text()
    )
    if kind == "management":
        user = machine.sh("getent passwd spcs").strip().split(":")
        assert int(user[2]) < 1000 and user[5:] == ["/var/lib/spcs", "/usr/sbin/nologin"], user
        for config in ("management.toml", "management.env"):
            assert site.stat(host, f"/etc/spcs/{config}") == ("640", "root", "spcs")
        for directory in ("/var/lib/spcs/management", "/var/log/spcs/management"):
            assert site.stat(host, directory) == ("750", "spcs", "spcs")
    else:
        for directory in ("/var/lib/spcs/node", "/var/lib/spcs/mnt", "/var/log/spcs/node"):
            assert site.stat(host, directory) == ("750", "root", "root")


def main_pid(site: Site, host: str, unit: str) -> int:
    state = site.unit(host, unit)
    assert state["ActiveState"] == "active", f"{state}{site.journals(host)}"
    return int(state["MainPID"])


def runs_installed_files(site: Site, host: str, pid: int) -> None:
    """The process maps the packaged files, none of them replaced since it started."""
    maps = site.machines[host].sh(f"cat /proc/{pid}/maps").splitlines()
    ours = [line for line in maps if "/opt/spcs/" in line]
    assert ours, "the service maps nothing of /opt/spcs"
    assert [line for line in ours if "(deleted)" in line] == []


def install(site: Site) -> None:
    """The page's install sections, checking what each step leaves."""
    for host, section, kind, cert in (
        (MANAGEMENT, "### The management host", "management", MANAGEMENT),
        (KVM, "### Each KVM host", "node", KVM),
    ):
        unit = f"spcs-{kind}"
        for command in commands_of(section):
            site.run(command, host)
            if command.text.startswith("dpkg -i "):
                check_installed_not_started(site, host, unit, kind)
        state = site.unit(host, unit)
        assert (state["ActiveState"], state["UnitFileState"]) == ("active", "enabled"), state
        pid = int(state["MainPID"])
        user = site.machines[host].sh(f"ps -o user= -p {pid}").strip()
        expected = "spcs" if kind == "management" else "root"
        assert (state["User"] or "root", user) == (expected, expected), state
        port = 9710 if kind == "management" else 9711
        wait_for(lambda: site.health(host, port) == "SERVING", f"{unit} SERVING")  # noqa: B023
        assert (
            site.machines[host].sh("cat /etc/spcs/tls/host.pem")
            == (site.pki / f"{cert}.pem").read_text()
        )
    wait_for(lambda: site.healthy_nodes() == [HOST_ID], "the node to register, healthy")


def check(site: Site) -> None:
    """Each command prints what its comment shows ("..." for the rest of the line)."""
    for command in commands_of("## Check"):
        out = site.run(command, host_of(command))
        shown = re.search(r"\s#\s+(.*)$", command.text)
        assert shown is not None, f"{command}: say what it prints"
        for fragment in shown[1].split("..."):
            assert fragment.strip() in out, (command, fragment, out)


def reinstall_common(site: Site, deb: str) -> None:
    """The node runs package spcs's files: replacing just those restarts it too (the file
    trigger on /opt/spcs)."""
    before = main_pid(site, KVM, "spcs-node")
    out = site.machines[KVM].sh(f"dpkg -i {deb}")
    assert "Processing triggers for spcs-node" in out, out
    wait_for(lambda: site.health(KVM, 9711) == "SERVING", "spcs-node SERVING")
    pid = main_pid(site, KVM, "spcs-node")
    assert pid != before, "the node was not restarted"
    runs_installed_files(site, KVM, pid)


def upgrade(site: Site, second: dict[str, Path]) -> None:
    """Database state and edited configs first, then the page's upgrade blocks with the
    second build's packages in a directory of their own."""
    lifecycle = "spcs.v1.PrimaryDataStoreLifeCycle"
    url = f"storpool://{TOKEN}@127.0.0.1:81/{TEMPLATE}"
    request = {"pool_uuid": POOL, "name": POOL, "url": url, "zone_id": "zone-1"}
    site.grpc(
        MANAGEMENT, 9710, f"{lifecycle}/InitializePool", request | {"capacity_bytes": str(1 << 40)}
    )
    management, kvm = site.machines[MANAGEMENT], site.machines[KVM]
    # an operator's edit of a config the package ships (the node's node.env the page wrote)
    management.sh(
        "sed -i 's/^node_retry_seconds = .*/node_retry_seconds = 20.0/' /etc/spcs/management.toml"
    )
    edited = management.sh("cat /etc/spcs/management.toml")
    assert "node_retry_seconds = 20.0" in edited
    node_env = kvm.sh("cat /etc/spcs/node.env")
    before = {MANAGEMENT: main_pid(site, MANAGEMENT, "spcs-management")}
    before[KVM] = main_pid(site, KVM, "spcs-node")
    for machine in (management, kvm):
        machine.sh("mkdir -p /root/next")
        for deb in second.values():
            machine.put(deb, "/root/next")
    for command in commands_of("## Upgrade"):
        host = host_of(command)
        out = site.run(command, host, cwd="/root/next")
        if command.text.startswith("dpkg-query"):
            assert sorted(out.split()) == sorted(
                ["spcs", "spcs-node", f"{__version__}-2", f"{__version__}-2"]
            ), out
    version = f"{__version__}-2"
    for host, packages in ((MANAGEMENT, "spcs spcs-management"), (KVM, "spcs spcs-node")):
        versions = site.machines[host].sh(f"dpkg-query -W -f '${{Version}}\\n' {packages}")
        assert versions.split() == [version, version]
    # the configs as the operator left them, the shipped group kept on the replaced one
    assert management.sh("cat /etc/spcs/management.toml") == edited
    assert kvm.sh("cat /etc/spcs/node.env") == node_env == f"SPCS_HOST_ID={HOST_ID}\n"
    for config in ("management.toml", "management.env"):
        assert site.stat(MANAGEMENT, f"/etc/spcs/{config}") == ("640", "root", "spcs")
    assert site.exists(MANAGEMENT, f"{DB}.bak")
    # restarted, on the new files: the KVM host's by the upgrade itself
    for host, unit, port in ((MANAGEMENT, "spcs-management", 9710), (KVM, "spcs-node", 9711)):
        # serving: it has loaded what it runs
        wait_for(lambda: site.health(host, port) == "SERVING", f"{unit} SERVING")  # noqa: B023
        pid = main_pid(site, host, unit)
        assert pid != before[host], f"{unit} was not restarted"
        runs_installed_files(site, host, pid)
    pool = site.grpc(MANAGEMENT, 9710, f"{lifecycle}/GetPool", {"pool_uuid": POOL})
    assert POOL in json.dumps(pool), pool
    wait_for(lambda: site.healthy_nodes() == [HOST_ID], "the node to register again")


def remove(site: Site) -> None:
    """The page's remove block; after each command what it keeps and what it removed."""
    management, kvm = site.machines[MANAGEMENT], site.machines[KVM]
    edited = management.sh("cat /etc/spcs/management.toml")
    for command in commands_of("## Remove"):
        host = host_of(command)
        site.run(command, host)
        machine = site.machines[host]
        kind = "management" if host == MANAGEMENT else "node"
        unit = f"spcs-{kind}"
        assert site.unit(host, unit)["ActiveState"] == "inactive"
        for path in ("/opt/spcs", "/usr/bin/spcs", f"/lib/systemd/system/{unit}.service"):
            assert not site.exists(host, path), path
        purged = command.text.startswith("dpkg --purge")
        status = machine.run(f"dpkg-query -W -f '${{Status}}' {unit}").stdout
        assert status == ("" if purged else "deinstall ok config-files"), status
        configs = [f"/etc/spcs/{kind}.toml", f"/etc/spcs/{kind}.env"]
        assert [site.exists(host, path) for path in configs] == [not purged] * 2
        wants = f"/etc/systemd/system/multi-user.target.wants/{unit}.service"
        assert site.exists(host, wants) is not purged, "enabled until purged"
        assert site.exists(host, "/etc/spcs/tls/host.key"), "the operator's own files stay"
        if kind == "management":
            if not purged:
                assert management.sh("cat /etc/spcs/management.toml") == edited
            assert site.pools_in_database() == [POOL], "the database stays, with its rows"
            assert management.run("getent passwd spcs").returncode == 0
            assert site.exists(host, "/var/log/spcs/management") is not purged
            overrides = management.run("dpkg-statoverride --list '/etc/spcs/*'").stdout
            assert ("/etc/spcs/management.toml" in overrides) is not purged, overrides
        else:
            for path in ("/var/lib/spcs/node", "/var/lib/spcs/mnt", "/var/log/spcs/node"):
                assert site.exists(host, path) is not purged, path
    assert kvm.run("dpkg-query -W 'spcs*'").returncode != 0, "nothing of spcs is left"


@pytest.mark.root
@pytest.mark.timeout(900)
def test_packages_guide(built: Built, tmp_path: Path):
    """docs/packages.md on a management host and a KVM host, from the packages `just package`
    built to purging them."""
    ran = set(built.ran)
    with site(tmp_path, ran) as hosts:
        for name in (MANAGEMENT, KVM):
            assert_clean(hosts, name)
            machine = hosts.machines[name]
            packages = ("spcs", "spcs-management" if name == MANAGEMENT else "spcs-node")
            for package in packages:
                machine.put(built.first[package])
            for suffix in ("pem", "key"):
                machine.put(hosts.pki / f"{name}.{suffix}")
            machine.put(hosts.pki / "ca.pem")
        # a StorPool client host's config (the node reads it; the page assumes it)
        storpool = f"SP_API_HTTP_HOST=127.0.0.1\nSP_API_HTTP_PORT=81\nSP_AUTH_TOKEN={TOKEN}\n"
        storpool += "SP_CLUSTER_ID=emu.a\nSP_OURID=1\n"
        hosts.machines[KVM].sh("cat > /etc/storpool.conf", input=storpool.encode())
        install(hosts)
        check(hosts)
        reinstall_common(hosts, built.first["spcs"].name)
        upgrade(hosts, built.second)
        for name in (MANAGEMENT, KVM):
            for unit in ("spcs-management", "spcs-node"):
                assert "Traceback" not in hosts.machines[name].journal(unit), unit
        remove(hosts)
    missed = [str(c) for c in documented() if c not in ran]
    assert missed == [], "the test skipped commands of the page:\n" + "\n".join(missed)
