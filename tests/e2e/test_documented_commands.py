"""Every command in the ```sh blocks of README.md and docs/*.md runs as written, or is listed in
NOT_RUN with the reason it cannot run on a test machine.

docs/grpcurl.md is left to tests/e2e/test_grpcurl.py and docs/packages.md to
tests/e2e/test_package.py (which fails when it does not run a command of that page). The first
test fails when a command appears in the documentation that no scenario below runs and NOT_RUN
does not list, so the documentation cannot drift from what is tested.

The scenarios run the commands exactly as written, as root, each in a `Host` of
tests/e2e/sandbox.py: a private mount namespace where the directories the documentation writes
to (/etc, /opt, /var, the checkout) are overlays whose writes stay in the test's temporary
directory, and a private network for the fixed ports (9710, 9711, 81). The working directory
and environment are the reader's: the repository root for `just ...` and `deploy/...`, the
directory holding the wheel and certificates on a deployed host, and a plain system PATH there
(Debian's python3; grpcurl and jq as an operator has them). After each command the test checks
what the documentation says it does: a file with the documented mode, a certificate the CA
verifies, a service that answers health, the documented output.

Where the documentation has the reader do something it does not spell out, the test does it
and says so: copying the wheel and certificates to each host, the StorPool config a KVM host
already has, names in /etc/hosts, what CloudStack does (adding the pool), and what systemd does
for the `systemctl` commands (see NOT_RUN).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spcs import __version__
from tests.e2e.doc_commands import SYSTEM_PATH, reader_env, sh_blocks, split_commands
from tests.e2e.helpers import find_grpcurl
from tests.e2e.sandbox import Host, Network, require_namespaces, terminate
from tests.support import REPO

DOCS = [
    "README.md",
    *sorted(
        f"docs/{path.name}"
        for path in (REPO / "docs").glob("*.md")
        # run by tests/e2e/test_grpcurl.py and tests/e2e/test_package.py
        if path.name not in ("grpcurl.md", "packages.md")
    ),
]
SYSTEMD = "no systemd as PID 1 on a test machine (the test emulates it, see run_unit)"
NOT_RUN = {
    "just test    # every test (Rust and Python), real servers on loopback": (
        "the whole test suite, this test included: running it from inside the suite would "
        "recurse (CI runs it as its own step)"
    ),
    "just test-fast  # the in-process tier (domain, contract checks, emulator), under a minute": (
        "a part of this suite (every test marked `fast`), which `just test` runs too; from "
        "inside the suite its `setup` step would reinstall the package under the running tests"
    ),
    "systemctl daemon-reload": SYSTEMD + "; the unit file it would load is checked to be "
    "deploy/systemd/'s, which tests/e2e/test_deploy.py verifies",
    "systemctl enable --now spcs-management": SYSTEMD + "; instead the test starts the "
    "installed unit's ExecStart= as the unit would (User=, EnvironmentFile=, StateDirectory=, "
    "UMask=) and checks it serves",
    "systemctl enable --now spcs-node": SYSTEMD + "; the test starts the installed unit's "
    "ExecStart= as the unit would and checks the node serves and registers",
    "systemctl stop spcs-management": SYSTEMD + "; the test sends the unit's KillSignal "
    "(SIGTERM) and checks the service exits 0",
    "systemctl start spcs-management": SYSTEMD + "; the test starts ExecStart= again and "
    "checks the service answers health",
}
TOKEN = "TOKEN"  # docs/deploy.md step 3 writes this as the management host's SP_AUTH_TOKEN
TEMPLATE = "spcs-deploy"
# the addresses the documented host names have on the test's private network
ADDRESSES = {"kvm": "127.0.2.1", "management": "127.0.2.2", "storpool": "127.0.2.3"}


# ------------------------------------------------------------------ the commands


@dataclass(frozen=True)
class Command:
    doc: str
    section: str  # the Markdown heading above the block
    block: int  # its n-th ```sh block
    text: str  # exactly as written (continuation lines included)
    comment: str  # the comment lines right above it in the block

    def __str__(self) -> str:
        return f"{self.doc} {self.section!r}: {self.text}"


@functools.cache
def documented_commands() -> tuple[Command, ...]:
    return tuple(
        Command(doc, section, block, text, comment)
        for doc in DOCS
        for section, block, lines in sh_blocks(doc)
        for text, comment in split_commands(lines)
    )


def deploy_role(command: Command) -> str | None:
    """Which step of the deployment story a docs/deploy.md block is (None: unknown to it)."""
    number = re.match(r"## (\d+)\.", command.section)
    step = int(number[1]) if number else None
    if step == 4:  # TLS: told apart by what its commands do
        block_text = "\n".join(
            c.text
            for c in documented_commands()
            if (c.doc, c.section, c.block) == (command.doc, command.section, command.block)
        )
        if "make-certs.sh" in block_text:
            return "tls-admin"
        if "-CAkey" in block_text:
            return "tls-own-ca"
        if "/etc/spcs/tls" in block_text:
            return "tls-install"
        return None
    if step == 8:
        return ("upgrade-look", "upgrade-do")[command.block] if command.block < 2 else None
    roles = {
        1: "build",
        2: "install",
        3: "storpool-management",
        5: "management-host",
        6: "kvm-host",
        7: "check",
        9: "health",
    }
    return roles.get(step) if step is not None and command.block == 0 else None


def scenario(command: Command) -> str | None:
    """The test that runs this command (None: none does)."""
    if command.doc == "README.md":
        return {
            "## Quick start": "readme-quick-start",
            "## Poking it with grpcurl": "readme-grpcurl",
            "## Configuration": "readme-configuration",
        }.get(command.section)
    if command.doc == "docs/deploy.md" and deploy_role(command) is not None:
        return "deploy"
    return None


def test_every_documented_command_is_run_or_listed():
    commands = documented_commands()
    assert len(commands) > 30, "the extraction found too few commands"
    orphans = [str(c) for c in commands if c.text not in NOT_RUN and scenario(c) is None]
    assert orphans == [], "run these in a scenario or list them in NOT_RUN:\n" + "\n".join(orphans)
    stale = set(NOT_RUN) - {c.text for c in commands}
    assert stale == set(), f"NOT_RUN lists commands the documentation no longer has: {stale}"


def test_command_extraction():
    lines = [
        "# a comment about the next command",
        "one --flag \\",
        "  continued",
        "cat > /tmp/x <<'EOF'",
        "body",
        "EOF",
        "",
        "first |",
        "  second",
        "for x in a b; do",
        "  echo $x",
        "done",
    ]
    assert list(split_commands(lines)) == [
        ("one --flag \\\n  continued", "# a comment about the next command"),
        ("cat > /tmp/x <<'EOF'\nbody\nEOF", ""),
        ("first |\n  second", ""),
        ("for x in a b; do\n  echo $x\ndone", ""),
    ]
    # what a scenario does not know is an orphan for test_every_documented_command_is_run_...
    for doc, section, block in (
        ("README.md", "## A new section", 0),
        ("docs/deploy.md", "## 5. The management host", 1),  # a second block in step 5
        ("docs/deploy.md", "## 4. TLS", 7),
        ("docs/new.md", "## Anything", 0),
    ):
        assert scenario(Command(doc, section, block, "echo new", "")) is None
    for command in documented_commands():  # taken verbatim from their documents
        text = (REPO / command.doc).read_text()
        assert all(line in text for line in command.text.splitlines()), command


def commands_of(scenario_name: str, role: str | None = None) -> list[Command]:
    return [
        c
        for c in documented_commands()
        if scenario(c) == scenario_name and (role is None or deploy_role(c) == role)
    ]


# ------------------------------------------------------------------ running them


@dataclass
class Shell:
    """A reader's shell on `host`: a working directory, an environment and the variables
    set so far (replayed before each command, as an interactive shell keeps them)."""

    host: Host
    cwd: str | Path
    env: dict[str, str]
    ran: set[Command]
    variables: list[str] = field(default_factory=list)

    def sh(self, script: str, *, outside: bool = False, timeout: float = 60) -> str:
        """A helper command of the test itself (not a documented one); its stdout."""
        result = self.host.run(
            script, cwd=self.cwd, env=self.env, timeout=timeout, network=not outside
        )
        assert result.returncode == 0, f"{script}: {result.stderr}"
        return result.stdout

    def run(
        self, command: Command, *, text: str | None = None, outside: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a documented command (as written unless `text` says how this host runs it),
        require exit status 0, then check what the documentation says it does. `outside`:
        in the machine's network (pip) instead of the host's private one."""
        script = command.text if text is None else text
        result = self.host.run(
            "\n".join([*self.variables, script]),
            cwd=self.cwd,
            env=self.env,
            timeout=600,
            network=not outside,
        )
        context = f"{command}\n  exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == 0, context
        if re.fullmatch(r"[A-Za-z_]\w*=.*", script, flags=re.S):
            self.variables.append(script)
        line = " ".join(script.replace("\\\n", " ").split())
        check(Ran(self, command, line, result.stdout, context))
        if text is None:
            self.ran.add(command)
        return result


def stat(shell: Shell, path: str) -> tuple[str, str, str]:
    """(mode, group, type) of `path` on the shell's host."""
    mode, group, kind = shell.sh(f"stat -c '%a|%G|%F' {shlex.quote(path)}").strip().split("|")
    return mode, group, kind


def mode_of(text: str) -> str:
    """`0640` as stat's %a shows it."""
    return format(int(text, 8), "o")


def verify_certificate(shell: Shell, ca: str, cert: str) -> None:
    out = shell.sh(f"openssl verify -CAfile {shlex.quote(ca)} {shlex.quote(cert)}")
    assert out.strip().endswith(": OK"), out


@dataclass
class Ran:
    """A documented command that ran, for the check of what it does."""

    shell: Shell
    command: Command
    line: str  # the command as run, on one line (continuations joined, spaces collapsed)
    stdout: str
    context: str  # for assertion messages


Check = Callable[[Ran, re.Match[str]], None]
CHECKS: list[tuple[re.Pattern[str], Check]] = []
COMMENT = r"(?: +#.*)?"  # a trailing comment


def checks(pattern: str) -> Callable[[Check], Check]:
    """Register what a command matching `pattern` (the whole line) is documented to do."""

    def register(function: Check) -> Check:
        CHECKS.append((re.compile(pattern + COMMENT), function))
        return function

    return register


def check(ran: Ran) -> None:
    for pattern, function in CHECKS:
        if match := pattern.fullmatch(ran.line):
            function(ran, match)
            return
    raise AssertionError(f"teach the test what this command is documented to do:\n{ran.line}")


@checks(r"(?P<name>[A-Za-z_]\w*)=(?P<value>.+)")
def _assignment(ran: Ran, m: re.Match[str]) -> None:
    assert ran.shell.sh("\n".join([*ran.shell.variables, f'printf %s "${m["name"]}"'])), m[0]


@checks(r"install -d -m (?P<mode>\d+) (?P<dir>\S+)")
def _install_dir(ran: Ran, m: re.Match[str]) -> None:
    assert stat(ran.shell, m["dir"])[::2] == (mode_of(m["mode"]), "directory"), ran.context


@checks(r"install -m (?P<mode>\d+)(?: -g (?P<group>\S+))? (?P<source>\S+) (?P<target>\S+)")
def _install_file(ran: Ran, m: re.Match[str]) -> None:
    source, target = m["source"], m["target"]
    if target.endswith("/"):
        target += Path(source).name
    mode, group, kind = stat(ran.shell, target)
    assert mode == mode_of(m["mode"]) and kind.startswith("regular"), ran.context
    assert m["group"] is None or group == m["group"], ran.context
    ran.shell.sh(f"cmp {shlex.quote(source)} {shlex.quote(target)}")
    if target.startswith("/etc/systemd/system/"):
        # the unit systemctl would start is the one tests/e2e/test_deploy.py verifies
        shipped = (REPO / "deploy" / "systemd" / Path(target).name).read_text()
        assert ran.shell.sh(f"cat {target}") == shipped


@checks(r"chgrp (?P<group>\S+) (?P<paths>.+?) && chmod (?P<mode>\d+) (?P<path>\S+)")
def _chgrp_chmod(ran: Ran, m: re.Match[str]) -> None:
    for path in m["paths"].split():
        assert stat(ran.shell, path)[1] == m["group"], ran.context
    assert stat(ran.shell, m["path"])[0] == mode_of(m["mode"]), ran.context


@checks(r"useradd --system .*--home-dir (?P<home>\S+) --shell (?P<shell>\S+) (?P<user>\S+)")
def _useradd(ran: Ran, m: re.Match[str]) -> None:
    entry = ran.shell.sh(f"getent passwd {m['user']}").strip().split(":")
    assert (entry[5], entry[6]) == (m["home"], m["shell"]), ran.context
    assert int(entry[2]) < 1000, "a system user"


@checks(r"(?P<printf>printf .*) > (?P<file>\S+)")
def _printf_to_file(ran: Ran, m: re.Match[str]) -> None:
    assert ran.shell.sh(f"cat {m['file']}") == ran.shell.sh(m["printf"]), ran.context


@checks(r"\S*make-certs\.sh (?P<dir>\S+) ca")
def _make_ca(ran: Ran, m: re.Match[str]) -> None:
    assert stat(ran.shell, f"{m['dir']}/ca.key")[0] == "600", "keys are written 0600"
    verify_certificate(ran.shell, f"{m['dir']}/ca.pem", f"{m['dir']}/ca.pem")


@checks(r"\S*make-certs\.sh (?P<dir>\S+) (?P<kind>\w+) (?P<name>\S+).*")
def _make_certificate(ran: Ran, m: re.Match[str]) -> None:
    assert stat(ran.shell, f"{m['dir']}/{m['name']}.key")[0] == "600", "keys are written 0600"
    verify_certificate(ran.shell, f"{m['dir']}/ca.pem", f"{m['dir']}/{m['name']}.pem")


@checks(r"openssl x509 -in \S+ -noout -ext subjectAltName")
def _show_names(ran: Ran, m: re.Match[str]) -> None:
    assert "X509v3 Subject Alternative Name" in ran.stdout, ran.context
    if "role" in ran.command.comment + ran.line:  # "shows the role"
        assert "URI:spiffe://" in ran.stdout, ran.context


@checks(r"openssl genpkey .* -out (?P<key>\S+)")
def _new_key(ran: Ran, m: re.Match[str]) -> None:
    ran.shell.sh(f"openssl pkey -in {m['key']} -noout")


@checks(r"openssl req -new .* -out (?P<csr>\S+)")
def _new_request(ran: Ran, m: re.Match[str]) -> None:
    ran.shell.sh(f"openssl req -in {m['csr']} -noout -verify")


@checks(r"openssl x509 -req .*-CA (?P<ca>\S+) .*-extfile (?P<ext>\S+) -out (?P<cert>\S+)")
def _sign(ran: Ran, m: re.Match[str]) -> None:
    verify_certificate(ran.shell, m["ca"], m["cert"])
    names = re.search(r"subjectAltName=(\S+)", ran.shell.sh(f"cat {m['ext']}"))
    assert names is not None
    shown = ran.shell.sh(f"openssl x509 -in {m['cert']} -noout -ext subjectAltName")
    for name in names[1].split(","):
        assert name in shown, (name, shown)


@checks(r"cp -a (?P<source>\S+) (?P<copy>\S+)")
def _copy(ran: Ran, m: re.Match[str]) -> None:
    ran.shell.sh(f"cmp {m['source']} {m['copy']}")
    assert stat(ran.shell, m["source"]) == stat(ran.shell, m["copy"]), ran.context


@checks(r"just build.*")
def _build(ran: Ran, m: re.Match[str]) -> None:
    documented = re.search(r"dist/(\S+\.whl)", ran.line)  # the comment names the wheel
    assert documented is not None
    pattern = re.escape(documented[1]).replace("2_34", r"\d+_\d+")  # the glibc it was built on
    pattern = pattern.replace("x86_64", re.escape(platform.machine()))
    wheels = ran.shell.sh("ls dist").split()
    assert [wheel for wheel in wheels if re.fullmatch(pattern, wheel)], (wheels, pattern)


@checks(r"just demo.*")
def _demo(ran: Ran, m: re.Match[str]) -> None:
    assert "all steps passed" in ran.stdout, ran.context
    assert len(re.findall(r"(?m)^\s*\d+\. ", ran.stdout)) == 22, ran.context


@checks(r"python3 -m venv (?P<system>--system-site-packages )?(?P<dir>\S+)")
def _venv(ran: Ran, m: re.Match[str]) -> None:
    config = ran.shell.sh(f"cat {m['dir']}/pyvenv.cfg")
    assert (m["system"] is not None) == ("include-system-site-packages = true" in config)


@checks(r"(?P<venv>\S+)/bin/pip install (--upgrade )?\./spcs-\S+\.whl")
def _pip_install(ran: Ran, m: re.Match[str]) -> None:
    python = f"{m['venv']}/bin/python"
    ran.shell.sh(f"{python} -c 'import spcs._datamover, spcs.management.app, spcs.node.app'")


@checks(r"\S+/bin/spcs version")
def _version(ran: Ran, m: re.Match[str]) -> None:
    assert ran.stdout.startswith(f"spcs {__version__} "), ran.context


@checks(r"(?:\$G|grpcurl -plaintext) .*ListOperations \| jq .*")
def _running_copies(ran: Ran, m: re.Match[str]) -> None:
    assert ran.stdout == "", "no copy is running: nothing to wait for"


@checks(r"grpcurl -plaintext \S+ list")
def _list_services(ran: Ran, m: re.Match[str]) -> None:
    services = set(ran.stdout.split())
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    assert "spcs.v1.Identity" in services, ran.context


GRPC_REPLIES: dict[str, Callable[[dict], bool]] = {
    "grpc.health.v1.Health/Check": lambda reply: reply == {"status": "SERVING"},
    "spcs.v1.Identity/GetInfo": lambda reply: reply["name"] == "spcs-node",
    "spcs.v1.Identity/Probe": lambda reply: reply["ready"] is True,
    # "every host, healthy"
    "spcs.v1.NodeRegistry/ListNodes": lambda reply: (
        bool(reply["nodes"]) and all(node["healthy"] for node in reply["nodes"])
    ),
    # the hosts CloudStack connected (the KVM host of docs/deploy.md)
    "spcs.v1.PrimaryDataStoreLifeCycle/GetPool": lambda reply: (
        reply["connected_host_ids"] == ["kvm-host-1"]
    ),
}


@checks(r"(?:\$G|grpcurl -plaintext) .*?(?P<method>[\w.]+/\w+)")
def _grpc_call(ran: Ran, m: re.Match[str]) -> None:
    assert m["method"] in GRPC_REPLIES, f"teach GRPC_REPLIES what {m['method']} answers"
    assert GRPC_REPLIES[m["method"]](json.loads(ran.stdout)), ran.context


def dev_path() -> str:
    """A developer's PATH in the checkout: `just` and the tools of .venv first."""
    return f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"


def assert_all_ran(commands: list[Command], ran: set[Command]) -> None:
    missed = [str(c) for c in commands if c not in ran and c.text not in NOT_RUN]
    assert missed == [], "the scenario skipped documented commands:\n" + "\n".join(missed)


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


# ------------------------------------------------------------------ README.md


@pytest.mark.root
@pytest.mark.timeout(900)
def test_readme_quick_start(tmp_path: Path):
    require_namespaces()
    commands = commands_of("readme-quick-start")
    repo = Host(tmp_path / "repo", overlays=[str(REPO)])
    ran: set[Command] = set()
    try:
        shell = Shell(repo, REPO, reader_env(dev_path()), ran)
        for command in commands:
            if command.text not in NOT_RUN:
                shell.run(command, outside=True)  # `setup` may ask PyPI
    finally:
        repo.close()
    assert_all_ran(commands, ran)


@pytest.mark.root
def test_readme_grpcurl(tmp_path: Path):
    """Against what `just up` runs (`spcs up --workdir .spcs-run`, after `setup`, which needs
    PyPI and so cannot run in the private network the fixed ports need)."""
    require_namespaces(network=True)
    if find_grpcurl() is None:
        pytest.skip("grpcurl is not installed")
    commands = commands_of("readme-grpcurl")
    network = Network(tmp_path / "net")
    repo = Host(tmp_path / "repo", overlays=[str(REPO)], network=network)
    ran: set[Command] = set()
    tools = tool_dir(tmp_path)
    log = tmp_path / "up.log"
    up = repo.start(
        [str(REPO / ".venv/bin/spcs"), "up", "--workdir", ".spcs-run", "--fresh"],
        log,
        cwd=REPO,
        env=reader_env(dev_path()),
    )
    try:
        repo.wait_serving("127.0.0.1:9710", sys.executable, up, log)
        shell = Shell(repo, REPO, reader_env(f"{tools}:{dev_path()}"), ran)
        wait_for(lambda: len(registered_nodes(shell, "grpcurl -plaintext")) == 2)
        for command in commands:
            shell.run(command)
        assert terminate(up) == 0
    finally:
        terminate(up)
        repo.close()
        network.close()
    assert_all_ran(commands, ran)


@pytest.mark.root
def test_readme_configuration(tmp_path: Path):
    """The two service commands, each on a host with nothing set up: the management host's
    /var/lib has no spcs yet, the KVM host has StorPool's /etc/storpool.conf."""
    require_namespaces(network=True)
    commands = commands_of("readme-configuration")
    ran: set[Command] = set()
    network = Network(tmp_path / "net")
    host = Host(tmp_path / "host", overlays=["/etc", "/var"], network=network)
    try:
        shell = Shell(host, "/root", reader_env(dev_path()), ran)
        shell.sh(
            "rm -rf /var/lib/spcs && printf 'SP_OURID=1\\nSP_AUTH_TOKEN=t0ken\\n' "
            "> /etc/storpool.conf"
        )
        for number, command in enumerate(commands):
            listen = re.search(r"--listen \S+:(\d+)", command.text)
            assert listen is not None, f"{command}: which port does it serve on?"
            log = tmp_path / f"service{number}.log"
            service = host.start(["sh", "-c", "exec " + command.text], log, env=shell.env)
            try:
                host.wait_serving(f"127.0.0.1:{listen[1]}", sys.executable, service, log)
                if db := re.search(r"--db (\S+)", command.text):
                    assert stat(shell, db[1])[2] == "regular file"
                    assert stat(shell, str(Path(db[1]).parent))[0] == "750"
            finally:
                status = terminate(service)
            assert status == 0, log.read_text()
            assert "Traceback" not in log.read_text()
            ran.add(command)
    finally:
        host.close()
        network.close()
    assert_all_ran(commands, ran)


def tool_dir(tmp_path: Path) -> Path:
    """grpcurl on PATH, as an operator has it."""
    grpcurl = find_grpcurl()
    if grpcurl is None:
        pytest.skip("grpcurl is not installed")
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "grpcurl").symlink_to(grpcurl)
    return tools


def registered_nodes(shell: Shell, grpcurl: str, address: str = "localhost:9710") -> list[str]:
    result = shell.host.run(
        f"{grpcurl} {address} spcs.v1.NodeRegistry/ListNodes",
        cwd=shell.cwd,
        env=shell.env,
    )
    if result.returncode != 0:
        return []
    return [node["host_id"] for node in json.loads(result.stdout).get("nodes", [])]


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


# ------------------------------------------------------------------ docs/deploy.md


def certificate_names(commands: list[Command]) -> dict[str, str]:
    """role → NAME, from the make-certs.sh commands: `management`, `node` and `operator`
    (the KVM host's is the one the TLS install block names)."""
    names = {}
    for command in commands:
        m = re.search(r"make-certs\.sh \S+ (\w+) (\S+)", command.text)
        if m and m[1] != "ca":
            names[m[1]] = m[2]
    assert {"management", "node", "operator"} <= set(names), (
        f"teach the deploy test the roles of {names}"
    )
    return names


def unit_settings(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def run_unit(host: Host, unit: str, log: Path) -> subprocess.Popen[bytes]:
    """What `systemctl start UNIT` does with the installed unit file: its StateDirectory= and
    LogsDirectory= (owned by User=, StateDirectoryMode=), EnvironmentFile=, UMask= and User=,
    then ExecStart=."""
    text = host.run(f"cat /etc/systemd/system/{unit}").stdout
    assert text, f"{unit} is not installed"
    unit_file = unit_settings(text)
    user, group = unit_file.get("User", "root"), unit_file.get("Group", unit_file.get("User"))
    owner = f"-o {user} -g {group}" if user != "root" else ""
    lines = ["set -e"]
    for key, base in (("StateDirectory", "/var/lib"), ("LogsDirectory", "/var/log")):
        mode = unit_file.get(f"{key}Mode", "0755")
        for directory in unit_file.get(key, "").split():
            parent = str(Path(base, directory).parent)
            lines.append(f"mkdir -p {parent} && install -d -m {mode} {owner} {base}/{directory}")
    environment = unit_file.get("EnvironmentFile", "")
    if environment:
        path = environment.lstrip("-")
        source = f"set -a; . {path}; set +a"
        # "-": a missing file is no error
        lines.append(f"if [ -e {path} ]; then {source}; fi" if environment[0] == "-" else source)
    lines.append(f"umask {unit_file.get('UMask', '0022')}")
    as_user = f"setpriv --reuid={user} --regid={group} --init-groups -- " if user != "root" else ""
    lines.append(f"exec {as_user}{unit_file['ExecStart']}")
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}  # systemd's, not the test's
    return host.start(["sh", "-c", "\n".join(lines)], log, env=env)


def tls_install_for(command: Command, names: dict[str, str], on_management: bool) -> str | None:
    """How a host runs a command of step 4's install block, which is written for a KVM host
    (the pair of `names["node"]`) plus lines for the management host: a KVM host runs it as
    written without those lines; the management host installs its own pair."""
    if not on_management:
        return None if "management host" in command.comment else command.text
    return command.text.replace(names["node"], names["management"])


DEPLOY_ROLES = (
    "build",
    "install",
    "storpool-management",
    "tls-admin",
    "tls-own-ca",
    "tls-install",
    "management-host",
    "kvm-host",
    "check",
    "upgrade-look",
    "upgrade-do",
    "health",
)


@dataclass
class Deployment:
    """The machines of docs/deploy.md: an admin machine (the checkout), the management host
    and a KVM host, named as in the guide, on one private network."""

    tmp: Path
    steps: dict[str, list[Command]]
    names: dict[str, str]  # certificate role → name, from step 4
    tools: Path
    network: Network
    ran: set[Command] = field(default_factory=set)
    hosts: list[Host] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    shells: dict[str, Shell] = field(default_factory=dict)

    @property
    def transfer(self) -> Path:
        """What the reader copies from the admin machine to the hosts."""
        return self.tmp / "transfer"

    @property
    def management_address(self) -> str:
        return f"{self.names['management']}:9710"

    def admin_machine(self) -> None:
        """Step 1 (the wheel) and step 4 (certificates) in the checkout."""
        admin = Host(self.tmp / "admin", overlays=[str(REPO)])
        self.hosts.append(admin)
        dev = Shell(admin, REPO, reader_env(dev_path()), self.ran)
        for command in self.steps["build"]:
            dev.run(command, outside=True)  # `setup` may ask PyPI
        for command in self.steps["tls-admin"]:
            dev.run(command)
        pki = re.search(r"make-certs\.sh (\S+) ca", self.steps["tls-admin"][0].text)
        assert pki is not None
        self.transfer.mkdir()
        dev.sh(f"cp dist/spcs-*.whl {pki[1]}/*.pem {pki[1]}/*.key {self.transfer}")
        own_ca = self.tmp / "own-ca"  # "if you run your own CA": its ca.pem and ca.key
        own_ca.mkdir()
        for name in ("ca.pem", "ca.key"):
            shutil.copy(self.transfer / name, own_ca)
        ca_shell = Shell(admin, own_ca, reader_env(SYSTEM_PATH), self.ran)
        for command in self.steps["tls-own-ca"]:
            ca_shell.run(command)
        (self.transfer / "ca.key").unlink()  # never copied to a host

    def host(self, role: str) -> Shell:
        """A host as its administrator finds it after copying over the wheel, the CA and its
        own pair (the operator's too on the management host, for grpcurl), with the guide's
        names in /etc/hosts."""
        host = Host(
            self.tmp / role,
            overlays=["/etc", "/opt", "/var", "/root", str(REPO)],
            network=self.network,
            hostname=self.names[role],
        )
        self.hosts.append(host)
        shell = Shell(host, REPO, reader_env(f"{self.tools}:{SYSTEM_PATH}"), self.ran)
        own = {self.names[role], *(["ops"] if role == "management" else [])}
        files = [self.transfer / "ca.pem", *self.transfer.glob("spcs-*.whl")]
        files += [
            p for p in self.transfer.iterdir() if p.suffix in (".pem", ".key") and p.stem in own
        ]
        names = (
            f"{ADDRESSES['kvm']} {self.names['node']}\n"
            f"{ADDRESSES['management']} {self.names['management']}\n"
            f"{ADDRESSES['storpool']} sp-api.example.com\n"
        )
        shell.sh(
            f"cp {' '.join(shlex.quote(str(p)) for p in files)} . && "
            f"cat >> /etc/hosts <<'EOF'\n{names}EOF"
        )
        self.shells[role] = shell
        return shell

    def install_management_host(self) -> Shell:
        """Step 2, the user of step 5 (step 3 needs it), step 3, step 4's files, step 5."""
        shell = self.host("management")
        for command in self.steps["install"]:
            shell.run(command, outside="pip" in command.text or "venv" in command.text)
        useradd = [c for c in self.steps["management-host"] if c.text.startswith("useradd")]
        for command in [*useradd, *self.steps["storpool-management"]]:
            shell.run(command)
        for command in self.steps["tls-install"]:
            text = tls_install_for(command, self.names, on_management=True)
            shell.run(command, text=None if text == command.text else text)
        for command in self.steps["management-host"]:
            if command not in useradd and command.text not in NOT_RUN:
                shell.run(command)
        shell.sh(f"cmp /etc/spcs/tls/host.pem {self.names['management']}.pem")  # its own pair
        return shell

    def install_kvm_host(self) -> Shell:
        """Step 2, step 4's files (written for this host), step 6; the host already has
        StorPool's config (its client id and the API token)."""
        shell = self.host("node")
        shell.sh(
            "printf 'SP_API_HTTP_HOST=sp-api.example.com\\nSP_API_HTTP_PORT=81\\nSP_OURID=1\\n"
            f"SP_AUTH_TOKEN={TOKEN}\\nSP_CLUSTER_ID=emu.a\\n' > /etc/storpool.conf"
        )
        for command in self.steps["install"]:
            shell.run(command, outside="pip" in command.text or "venv" in command.text)
        for command in self.steps["tls-install"]:
            if tls_install_for(command, self.names, on_management=False) is not None:
                shell.run(command)
        for command in self.steps["kvm-host"]:
            if command.text not in NOT_RUN:
                shell.run(command)
        return shell

    def start_storpool(self) -> None:
        """The StorPool API (the emulator) as sp-api.example.com:81, with this KVM host's
        client (SP_OURID=1) running."""
        (self.tmp / "emu-dev").mkdir()
        argv = [str(REPO / ".venv/bin/spcs"), "emulator", "--data", str(self.tmp / "emu")]
        argv += ["--listen", "0.0.0.0:81", "--token", TOKEN, "--cluster-id", "emu.a"]
        argv += ["--client", f"1={self.tmp / 'emu-dev'}", "--template", f"{TEMPLATE}:1T"]
        kvm = self.shells["node"].host
        log = self.tmp / "emulator.log"
        self.processes.append(kvm.start(argv, log, env=reader_env(dev_path())))

    def start(self, role: str, log: Path) -> subprocess.Popen[bytes]:
        unit = {"management": "spcs-management.service", "node": "spcs-node.service"}[role]
        process = run_unit(self.shells[role].host, unit, log)
        self.processes.append(process)
        return process

    def registered(self) -> list[str]:
        operator = "grpcurl -cacert /etc/spcs/tls/ca.pem -cert ops.pem -key ops.key"
        return registered_nodes(self.shells["management"], operator, self.management_address)

    def cloudstack(self, method: str, data: dict) -> dict:
        """A call of CloudStack's shim (with the operator certificate of step 4)."""
        out = self.shells["management"].sh(
            "grpcurl -cacert /etc/spcs/tls/ca.pem -cert ops.pem -key ops.key "
            f"-d {shlex.quote(json.dumps(data))} {self.management_address} {method}"
        )
        return json.loads(out)

    def add_pool(self) -> None:
        """What CloudStack does when the pool is added (step 7's table), with the pool uuid
        step 7's GetPool asks about."""
        found = re.search(r'"pool_uuid": "([^"]+)"', "".join(c.text for c in self.steps["check"]))
        assert found is not None, "step 7 names no pool"
        pool = found[1]
        lifecycle = "spcs.v1.PrimaryDataStoreLifeCycle"
        url = f"storpool://{TOKEN}@sp-api.example.com:81/{TEMPLATE}"
        self.cloudstack(
            f"{lifecycle}/InitializePool",
            {
                "pool_uuid": pool,
                "name": "primary",
                "url": url,
                "zone_id": "zone-1",
                "capacity_bytes": str(1 << 40),
            },
        )
        self.cloudstack(
            f"{lifecycle}/AttachZone", {"pool_uuid": pool, "zone_id": "zone-1", "hypervisor": "KVM"}
        )
        connected = self.cloudstack(
            "spcs.v1.HostListener/HostConnect", {"host_id": "kvm-host-1", "pool_uuid": pool}
        )
        assert connected["connected"] is True, connected

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(AssertionError):
                terminate(process)
        for host in reversed(self.hosts):
            host.close()
        self.network.close()


@pytest.mark.root
@pytest.mark.timeout(1200)
def test_deploy_guide(tmp_path: Path):
    """docs/deploy.md from building the wheel to the health checks: the admin machine builds
    the wheel and the certificates; the management host and the KVM host install them, start
    their units and answer steps 7 to 9, with a StorPool API emulator as
    sp-api.example.com:81."""
    require_namespaces(network=True)
    require("openssl", "jq", "setpriv", "useradd", "getent")
    python3 = subprocess.run(
        [
            "env",
            f"PATH={SYSTEM_PATH}",
            "python3",
            "-c",
            "import ensurepip, sys; assert sys.version_info >= (3, 11)",
        ],
        capture_output=True,
    )
    if python3.returncode != 0:
        pytest.skip("the system python3 is not 3.11+ with venv (what step 2 needs)")
    tools = tool_dir(tmp_path)
    (tools / "jq").symlink_to(shutil.which("jq"))  # type: ignore[arg-type]
    commands = commands_of("deploy")
    steps = {role: [c for c in commands if deploy_role(c) == role] for role in DEPLOY_ROLES}
    names = certificate_names(steps["tls-admin"])
    deployment = Deployment(tmp_path, steps, names, tools, Network(tmp_path / "net"))
    try:
        deployment.admin_machine()
        management = deployment.install_management_host()
        deployment.install_kvm_host()
        deployment.start_storpool()
        logs = {name: tmp_path / f"{name}.log" for name in ("management", "node", "restarted")}
        management_service = deployment.start("management", logs["management"])
        node_service = deployment.start("node", logs["node"])
        wait_for(lambda: deployment.registered() == ["kvm-host-1"], timeout=60)
        for name in ("management", "node"):
            assert "(mutual TLS)" in logs[name].read_text()
        deployment.add_pool()
        for command in steps["check"] + steps["upgrade-look"]:
            management.run(command)
        for command in steps["upgrade-do"]:
            if command.text == "systemctl stop spcs-management":
                assert terminate(management_service) == 0, logs["management"].read_text()
            elif command.text == "systemctl start spcs-management":
                management_service = deployment.start("management", logs["restarted"])
                wait_for(lambda: deployment.registered() == ["kvm-host-1"])
            else:
                management.run(command, outside="pip" in command.text)
        for command in steps["health"]:
            management.run(command)
        assert terminate(node_service) == 0, logs["node"].read_text()
        assert terminate(management_service) == 0, logs["restarted"].read_text()
        for log in logs.values():
            assert "Traceback" not in log.read_text()
    finally:
        deployment.stop()
    assert_all_ran(commands, deployment.ran)
