"""docs/grpcurl.md, run as a reader runs it: every command of its ```sh blocks, as written, in
order, and the output checked against the one the page shows after the block.

The page has the reader start `just up` in one terminal and type the rest into a second one at
the repository root, where later commands use the variables earlier ones set ($M, $VOL, ...).
So the test runs the commands in one bash (fed one command at a time, like a terminal) in a
`Host` of tests/e2e/sandbox.py: a private mount namespace where the checkout is an overlay (the
page writes to .spcs-run/) and /tmp is the test's own directory (the page writes /tmp/*.json),
in a private network namespace, so `spcs up`'s fixed ports (9710 to 9713) cannot meet anything
on the machine. The reader's PATH is the system's until the page's `export PATH=...` adds
.venv/bin (grpcurl). grpcurl runs on server reflection only: the page gives it no .proto file.

The output a block prints (standard output and error, as a terminal shows them) must be the
one shown after it, up to what differs between runs: the patterns of VARIES (times, StorPool
global ids, which node runs a copy), the JSON keys of VALUE_VARIES and, for the commands of
TIMING, how far a copy had got when it was asked. The same global id on the page must be the
same id in the run throughout (and distinct ids distinct). A command that prints nothing is
checked for what the page says it does (EFFECTS: the file it makes, the variable it sets, ...);
some commands get extra checks there (the exported image has the template's bytes, StorPool is
empty once everything is deleted).

A command on the page that is neither run nor listed in NOT_RUN fails the test, as does an
entry of NOT_RUN, TIMING, UNORDERED or PAUSES that names no command of the page.

The TLS section is about a real installation, not `spcs up`: its command runs in a shell of its
own on a second host, against a management service serving mutual TLS as mgmt.example.com with
certificates from deploy/tls/make-certs.sh, which is what the page tells the reader to have.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.doc_commands import SYSTEM_PATH, reader_env, sh_blocks, split_commands
from tests.e2e.helpers import MISSING
from tests.e2e.sandbox import Host, Network, require_namespaces, terminate
from tests.support import REPO, log_containing

PAGE = "docs/grpcurl.md"
TLS_SECTION = "## TLS"
UP = "just up        # or: .venv/bin/spcs up --workdir .spcs-run"
NOT_RUN = {
    UP: (
        "`just up` runs `just setup` first, which needs PyPI, and the fixed ports need a "
        "private network without it; the test runs what the recipe runs after setup, the "
        "line's own alternative `.venv/bin/spcs up --workdir .spcs-run`, as written, in a "
        "terminal of its own (test_just_up_is_the_alternative_the_page_gives checks the recipe)"
    ),
}
# the first line of a command → the JSON keys whose presence and value depend on when it runs
TIMING: dict[str, tuple[frozenset[str], str]] = {
    """grpcurl -plaintext -d '{"name": "operations/copy-root-1"}' $M """
    "google.longrunning.Operations/GetOperation": (
        frozenset(
            {
                "state",
                "stage",
                "host_id",
                "waiting_for",
                "bytes_done",
                "bytes_total",
                "bytes_written",
                "update_time",
                "end_time",
                "done",
                "response",
            }
        ),
        "asked right after CopyData, the copy is wherever it got to: queued, waiting for a "
        "node, copying, or (on a fast machine) done",
    ),
    """grpcurl -plaintext -d '{"name": "operations/copy-root-3", "timeout": "60s"}' $M """
    "google.longrunning.Operations/WaitOperation": (
        frozenset({"bytes_done", "stage"}),
        "how far the copy had got, and what it was doing, when the node stopped it",
    ),
}
# the first line of a command → why the lines it prints come in any order
UNORDERED = {
    "for node in $N1 $N2; do": "which node ran which job differs between runs (the page says so)",
}
# a command → why the test waits before it for what a reader's typing gives for free
PAUSES = {
    "grep 'ticket-4711' .spcs-run/logs/node1.log": (
        "a service writes its log from a queue, up to spcs.common.logs.WRITE_INTERVAL (50 ms) "
        "after the call; a reader types this line later than that, the test waits until the "
        "line is in the file (at most 5 s) and then runs the grep"
    ),
}
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"
COPIES = ("## Copies: start, watch, list", "## Cancel a copy")


@dataclass(frozen=True)
class Varies:
    """Something in a shown output that differs between runs: `shown` (a pattern) on the page
    stands for whatever matches `accepts` in the run."""

    shown: str
    accepts: str
    why: str
    sections: tuple[str, ...] = ()  # only in these sections (every section when empty)
    bound: bool = False  # the same value on the page is the same value in the run throughout


VARIES = (
    Varies(TIMESTAMP, TIMESTAMP, "a time"),
    Varies(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", "log"),
    Varies(r"(?<=ms=)\d+\.\d\d", r"\d+\.\d\d", "how long a call took (the log line's ms=)"),
    Varies(
        r"emu\.a\.\d+",
        r"emu\.a\.\d+",
        "StorPool global ids: handed out in the order objects are made, which the concurrent "
        "export and backup change",
        bound=True,
    ),
    Varies(
        r"host-[12]",
        r"host-[12]",
        "the host a copy runs on: the least busy node, among equals the one heard from last",
        sections=COPIES,
    ),
    Varies(r"localhost:971[13]", r"localhost:971[13]", "the node a copy ran on", sections=COPIES),
    Varies(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
        "when StorPool made an object, as spcs ctl shows it",
        sections=("## The same with spcs ctl",),
    ),
)
# JSON keys with a value of the run's own (of the type the page shows)
VALUE_VARIES = {"used_bytes": "the emulator reports as free what its file system has free"}
# JSON keys that may be there or not, with any value
LOOSE_EVERYWHERE = {
    "rate_bytes_per_second": "the machine's throughput, there once a copy has run a second",
}


# ------------------------------------------------------------------ the page


@dataclass(frozen=True)
class Block:
    section: str  # the Markdown heading above it
    index: int  # its n-th ```sh block in the section
    commands: tuple[str, ...]  # as written (continuation lines, here-documents included)
    shown: str | None  # the output block right after it (```text or ```json), if any

    def __str__(self) -> str:
        return f"{PAGE} {self.section!r} block {self.index}"


def page_blocks(text: str | None = None) -> list[Block]:
    """The ```sh blocks of the page, each with the output block that follows it."""
    lines = (REPO / PAGE).read_text().splitlines() if text is None else text.splitlines()
    blocks: list[Block] = []
    section, counts = "", dict[str, int]()
    inside: tuple[str, list[str]] | None = None
    after_sh = False  # only blank lines since the last ```sh block closed
    for line in lines:
        if inside is None:
            fence = re.match(r"^```(\w*)\s*$", line)
            if fence:
                inside = (fence[1], [])
            elif line.strip():
                after_sh = False
                if line.startswith("#"):
                    section = line.strip()
            continue
        language, body = inside
        if line.strip() != "```":
            body.append(line)
            continue
        inside = None
        if language == "sh":
            index = counts.get(section, 0)
            counts[section] = index + 1
            commands = tuple(command for command, _ in split_commands(body))
            blocks.append(Block(section, index, commands, None))
            after_sh = True
        elif language in ("text", "json") and after_sh:
            last = blocks[-1]
            blocks[-1] = Block(last.section, last.index, last.commands, "\n".join(body))
            after_sh = False
        else:
            after_sh = False
    return blocks


def page_commands() -> list[str]:
    return [command for block in page_blocks() for command in block.commands]


def first_line(command: str) -> str:
    return command.splitlines()[0]


def one_line(command: str) -> str:
    """The command on one line: continuations joined, spaces collapsed."""
    return " ".join(command.replace("\\\n", " ").split())


# ------------------------------------------------------------------ comparing outputs

Item = tuple[str, Any]  # ("json", a JSON value) or ("text", a line)


def items(text: str) -> list[Item]:
    """An output as a terminal shows it, cut into JSON documents and other lines."""
    found: list[Item] = []
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end == -1 else end
        line = text[pos:end]
        stripped = line.lstrip()
        if not stripped:
            pos = end + 1
            continue
        if stripped[0] in "{[":
            try:
                value, after = decoder.raw_decode(text, pos + len(line) - len(stripped))
            except ValueError:
                pass
            else:
                found.append(("json", value))
                pos = after
                continue
        found.append(("text", line.rstrip()))
        pos = end + 1
    return found


@dataclass
class Matcher:
    """Compares shown outputs with the run's, keeping the bound values (global ids) seen so far
    across the page: page value → run value."""

    bindings: dict[str, str] = field(default_factory=dict)

    def rules(self, section: str) -> list[Varies]:
        return [rule for rule in VARIES if not rule.sections or section in rule.sections]

    def string(
        self, shown: str, actual: str, rules: list[Varies], bindings: dict[str, str]
    ) -> dict[str, str] | None:
        """The bindings after matching `actual` to the page's `shown` (None: no match)."""
        pattern, groups, pos = "", [], 0
        combined = re.compile("|".join(f"(?P<r{n}>{rule.shown})" for n, rule in enumerate(rules)))
        while rules and (m := combined.search(shown, pos)):
            assert m.lastgroup is not None and m.end() > m.start()
            rule = rules[int(m.lastgroup[1:])]
            pattern += re.escape(shown[pos : m.start()])
            pattern += f"(?P<g{len(groups)}>{rule.accepts})"
            groups.append((m[0], rule))
            pos = m.end()
        pattern += re.escape(shown[pos:])
        found = re.fullmatch(pattern, actual, flags=re.S)
        if found is None:
            return None
        bindings = dict(bindings)
        for n, (value, rule) in enumerate(groups):
            if not rule.bound:
                continue
            got = found[f"g{n}"]
            if bindings.get(value, got) != got:
                return None
            if value not in bindings and got in bindings.values():
                return None  # another value of the page already stands for it
            bindings[value] = got
        return bindings

    def value(
        self,
        shown: Any,
        actual: Any,
        rules: list[Varies],
        loose: frozenset[str],
        bindings: dict[str, str],
    ) -> dict[str, str] | None:
        if isinstance(shown, dict):
            if not isinstance(actual, dict):
                return None
            return self.mapping(shown, actual, rules, loose, bindings)
        if isinstance(shown, list):
            if not isinstance(actual, list) or len(shown) != len(actual):
                return None
            for one, other in zip(shown, actual, strict=True):
                next_bindings = self.value(one, other, rules, loose, bindings)
                if next_bindings is None:
                    return None
                bindings = next_bindings
            return bindings
        if isinstance(shown, str):
            return self.string(shown, actual, rules, bindings) if isinstance(actual, str) else None
        return bindings if (type(shown), shown) == (type(actual), actual) else None

    def mapping(
        self,
        shown: dict[str, Any],
        actual: dict[str, Any],
        rules: list[Varies],
        loose: frozenset[str],
        bindings: dict[str, str] | None,
    ) -> dict[str, str] | None:
        """The same keys (but `loose` ones) with matching values (any, for VALUE_VARIES)."""
        for key in [*shown, *(k for k in actual if k not in shown)]:
            if bindings is None:
                return None
            if key in loose or key in LOOSE_EVERYWHERE:
                continue
            if key not in shown or key not in actual:
                return None
            if key in VALUE_VARIES:
                if type(shown[key]) is not type(actual[key]):
                    return None
                continue
            bindings = self.value(shown[key], actual[key], rules, loose, bindings)
        return bindings

    def item(
        self, shown: Item, actual: Item, rules: list[Varies], loose: frozenset[str]
    ) -> dict[str, str] | None:
        if shown[0] != actual[0]:
            return None
        if shown[0] == "text":
            return self.string(shown[1], actual[1], rules, self.bindings)
        return self.value(shown[1], actual[1], rules, loose, self.bindings)

    def block(self, block: Block, printed: list[tuple[str, str]]) -> None:
        """The outputs (command, what it printed) of `block` against what the page shows."""
        actual = [(command, item) for command, out in printed for item in items(out)]
        shown = items(block.shown or "")
        whole = "".join(out for _, out in printed)
        context = f"{block}\n--- the page shows:\n{block.shown}\n--- the run printed:\n{whole}"
        assert len(shown) == len(actual), context
        rules = self.rules(block.section)
        positions: dict[str, list[int]] = {}
        for n, (command, _) in enumerate(actual):
            positions.setdefault(command, []).append(n)
        for command, where in positions.items():
            loose = TIMING.get(first_line(command), (frozenset(), ""))[0]
            if first_line(command) in UNORDERED:
                left = list(where)
                for n in where:
                    match = None
                    for candidate in left:
                        match = self.item(shown[candidate], actual[n][1], rules, loose)
                        if match is not None:
                            left.remove(candidate)
                            break
                    assert match is not None, f"{context}\n--- no line on the page for {actual[n]}"
                    self.bindings = match
                continue
            for n in where:
                match = self.item(shown[n], actual[n][1], rules, loose)
                assert match is not None, f"{context}\n--- differs: {shown[n]}\n--- != {actual[n]}"
                self.bindings = match


# ------------------------------------------------------------------ the reader's shell


class Session:
    """One bash on a host, fed one command at a time as a terminal would; each command's
    standard output and error go to a file (`capture` here, `inside` on the host)."""

    def __init__(
        self, host: Host, cwd: Path, env: dict[str, str], capture: Path, inside: str, log: Path
    ):
        capture.mkdir(parents=True, exist_ok=True)
        self.capture, self.inside, self.count, self.log = capture, inside, 0, log
        with log.open("wb") as bash_log:
            self.popen = subprocess.Popen(
                [*host.nsenter(), "sh", "-c", f"cd {shlex.quote(str(cwd))} && exec bash --norc"],
                stdin=subprocess.PIPE,
                stdout=bash_log,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
            )

    def run(self, command: str, timeout: float = 300) -> tuple[int, str]:
        """(exit status, output) of `command`, run in this shell (its variables stay set)."""
        n, self.count = self.count, self.count + 1
        out, status = f"{self.inside}/{n}.out", f"{self.inside}/{n}.status"
        assert self.popen.stdin is not None
        self.popen.stdin.write(
            f"{{\n{command}\n}} </dev/null >{out} 2>&1\necho $? >{status}.new && "
            f"mv {status}.new {status}\n"
        )
        self.popen.stdin.flush()
        done = self.capture / f"{n}.status"
        deadline = time.monotonic() + timeout
        while not done.exists():
            assert self.popen.poll() is None, f"the shell exited: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"{command}\n  still running after {timeout}s"
            time.sleep(0.01)
        return int(done.read_text()), (self.capture / f"{n}.out").read_text()

    def value(self, name: str) -> str:
        status, out = self.run(f'printf %s "${name}"')
        assert status == 0
        return out

    def close(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


@dataclass
class Walk:
    """Where the page's commands run: the shell, its host and the `spcs up` it talks to."""

    session: Session
    host: Host
    cwd: Path
    up_log: Path | None = None

    def sh(self, script: str) -> str:
        """A command of the test's own on the host (not one of the page)."""
        result = self.host.run(script, cwd=self.cwd)
        assert result.returncode == 0, f"{script}: {result.stdout}{result.stderr}"
        return result.stdout

    def grpc(self, method: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str]:
        """A call of the test's own, from the reader's shell (its $M and PATH)."""
        data = shlex.quote(json.dumps(body))
        status, out = self.session.run(f"grpcurl -plaintext -d {data} $M {method}")
        return status, json.loads(out) if status == 0 else out


# ------------------------------------------------------------------ what silent commands do

Effect = Callable[[Walk, re.Match[str]], None]
EFFECTS: list[tuple[re.Pattern[str], Effect]] = []


def effect(pattern: str) -> Callable[[Effect], Effect]:
    """What a command matching `pattern` (on one line) is documented to do."""

    def register(function: Effect) -> Effect:
        EFFECTS.append((re.compile(pattern), function))
        return function

    return register


def check_effect(walk: Walk, command: str, printed: str) -> None:
    line = one_line(command)
    for pattern, function in EFFECTS:
        if m := pattern.fullmatch(line):
            function(walk, m)
            return
    assert printed, f"{PAGE}: teach the test what this command, which prints nothing, does:\n{line}"


@effect(r'export PATH="\$PWD/\.venv/bin:\$PATH"')
def _path(walk: Walk, m: re.Match[str]) -> None:
    status, out = walk.session.run("command -v grpcurl")
    assert (status, out.strip()) == (0, str(walk.cwd / ".venv" / "bin" / "grpcurl")), out


@effect(r"(?P<name>[A-Za-z_]\w*)=(?P<value>.+?)(?: +# (?P<comment>.*))?")
def _variable(walk: Walk, m: re.Match[str]) -> None:
    value = walk.session.value(m["name"])
    assert value, f"{m[0]}: ${m['name']} is empty"
    assert walk.up_log is not None
    up = walk.up_log.read_text()  # what `spcs up` printed in the first terminal
    comment = m["comment"] or ""
    node = re.fullmatch(r"node of (host-\d+)", comment)
    if comment == "management" or node:
        # "  management  127.0.0.1:9710" and "  node 1      127.0.0.1:9711  (host-1, ..."
        line = r"management +\S+:(\d+)" if node is None else rf"node \d+ +\S+:(\d+) +\({node[1]},"
        served = re.search(rf"(?m)^ +{line}", up)
        assert served is not None and value == f"localhost:{served[1]}", (value, up)
    elif "secondary" in comment:
        assert f"secondary   {value}\n" in up, (value, up)
    elif comment == "zone 2's StorPool token":
        # "  zone 2      http://127.0.0.1:9720  (another StorPool location, token in <file>)"
        conf = re.search(r"(?m)^  zone 2 +\S+ +\(another StorPool location, token in (\S+)\)$", up)
        assert conf is not None, up
        assert walk.sh(f"sed -n 's/^SP_AUTH_TOKEN=//p' {conf[1]}").strip() == value
    elif "jq -r" in m["value"] and ".path" in m["value"]:
        assert re.fullmatch(r"/dev/storpool-byid/emu\.a\.\d+", value), value
    elif "| base64" in m["value"]:
        # a passphrase, as grpcurl's JSON takes bytes
        plain = re.fullmatch(r"\$\(printf %s '([^']+)' \| base64\)", m["value"])
        assert plain is not None and base64.b64decode(value) == plain[1].encode(), value
    else:
        raise AssertionError(f"teach the test what ${m['name']} holds: {m[0]}")


@effect(r"mkdir -p (?P<dir>\S+)")
def _mkdir(walk: Walk, m: re.Match[str]) -> None:
    walk.sh(f"test -d {m['dir']}")


SIZES = {"M": 1 << 20, "G": 1 << 30}


@effect(
    r"head -c (?P<size>\d+[MG]) /dev/urandom > (?P<file>\S+)"
    r"(?: && truncate -s (?P<to>\d+[MG]) (?P=file))?"
)
def _random_file(walk: Walk, m: re.Match[str]) -> None:
    size = m["to"] or m["size"]
    assert int(walk.sh(f"stat -c %s {m['file']}")) == int(size[:-1]) * SIZES[size[-1]]


@effect(r"qemu-img convert -f raw -O qcow2 (?P<raw>\S+) (?P<qcow2>\S+)")
def _convert(walk: Walk, m: re.Match[str]) -> None:
    info = json.loads(walk.sh(f"qemu-img info --output=json {m['qcow2']}"))
    assert info["format"] == "qcow2", info
    assert info["virtual-size"] == int(walk.sh(f"stat -c %s {m['raw']}")), info


@effect(r"rm (?P<file>\S+)")
def _rm(walk: Walk, m: re.Match[str]) -> None:
    walk.sh(f"test ! -e {m['file']}")


@effect(r"cat > (?P<file>\S+) <<EOF .*")
def _request_file(walk: Walk, m: re.Match[str]) -> None:
    request = json.loads(walk.sh(f"cat {m['file']}"))
    assert "$" not in json.dumps(request), "the shell variables are expanded"
    url = request["source"]["template"]["store"]["secondary"]["url"]
    assert url == walk.session.value("SEC"), request


@effect(r"sed 's/copy-root-1/(?P<op>[\w-]+)/; .*CopyData >/dev/null")
def _copy_started(walk: Walk, m: re.Match[str]) -> None:
    status, op = walk.grpc(
        "google.longrunning.Operations/GetOperation", {"name": f"operations/{m['op']}"}
    )
    assert status == 0, op


@effect(
    r"until grpcurl .*-d '\{\"name\": \"(?P<name>[^\"]+)\"\}' .*GetOperation \| "
    r"jq -e '\.metadata\.stage \| endswith\(\"(?P<stage>[^\"]+)\"\)' >/dev/null; "
    r"do sleep \S+; done"
)
def _copying(walk: Walk, m: re.Match[str]) -> None:
    """The loop ends once the copy is at that stage, still running (the cancel that follows
    stops a copy in progress)."""
    status, op = walk.grpc("google.longrunning.Operations/GetOperation", {"name": m["name"]})
    assert status == 0 and isinstance(op, dict), op
    assert op["metadata"]["stage"].endswith(m["stage"]) and not op.get("done"), op


@effect(r"for op in (?P<ops>[\w -]+); do grpcurl .*DeleteOperation >/dev/null;? done")
def _operations_deleted(walk: Walk, m: re.Match[str]) -> None:
    for op in m["ops"].split():
        status, error = walk.grpc(
            "google.longrunning.Operations/GetOperation", {"name": f"operations/{op}"}
        )
        assert status == 64 + 5 and "Code: NotFound" in str(error), error


@effect(r"for op in export-root-1 backup-snap-1; do .*WaitOperation .*done")
def _exported_and_backed_up(walk: Walk, m: re.Match[str]) -> None:
    """The bytes went template → StorPool volume → exported image; the backup has the
    snapshot's size."""
    secondary = ".spcs-run/secondary"
    compared = walk.sh(
        f"qemu-img compare {secondary}/template/tmpl/2/201/201.qcow2 "
        f"{secondary}/volumes/exported/vol-root-1.qcow2"
    )
    assert compared.strip() == "Images are identical.", compared
    backup = json.loads(walk.sh(f"qemu-img info --output=json {secondary}/snapshots/2/15/snap-1"))
    assert (backup["format"], backup["virtual-size"]) == ("qcow2", 1 << 30), backup


STORPOOL_CONTENTS = """
from pathlib import Path
from spcs.storpool import conf
from spcs.storpool.api import StorPoolApi
sp = conf.load(Path(".spcs-run/storpool.conf"), section="vm")
api = StorPoolApi(sp.api_host, sp.api_port, sp.auth_token or "")
print([v.name for v in api.volumes()], [s.name for s in api.snapshots() if not s.deleted])
"""


@effect(r"grpcurl -plaintext \$M google\.longrunning\.Operations/ListOperations")
def _nothing_left(walk: Walk, m: re.Match[str]) -> None:
    """Once the page deleted everything, StorPool holds nothing of it."""
    python = shlex.quote(str(REPO / ".venv" / "bin" / "python"))
    left = walk.sh(f"{python} -c {shlex.quote(STORPOOL_CONTENTS)}")
    assert left.strip() == "[] []", left


@effect(
    r"grpcurl -cacert (?P<ca>\S+) -cert \S+ -key \S+ (?P<target>\S+) grpc\.health\.v1\.Health/Check"
)
def _tls_needs_the_certificate(walk: Walk, m: re.Match[str]) -> None:
    """The page's next sentence: without -cert/-key grpcurl cannot connect."""
    status, out = walk.session.run(
        f"grpcurl -max-time 10 -cacert {m['ca']} {m['target']} grpc.health.v1.Health/Check"
    )
    assert status != 0 and "Failed to dial target host" in out, out


# ------------------------------------------------------------------ running the page


def run_block(walk: Walk, block: Block, matcher: Matcher, ran: set[str]) -> None:
    printed = []
    for command in block.commands:
        if command in NOT_RUN:
            continue
        if command in PAUSES:
            wait_for_pause(walk, command)
        status, out = walk.session.run(command)
        assert status == 0, f"{block}: {command}\n  exit {status}\n{out}"
        ran.add(command)
        check_effect(walk, command, out)
        printed.append((command, out))
    if block.shown is None:
        noisy = [(command, out) for command, out in printed if out]
        assert noisy == [], f"{block}: the page shows no output, but these printed: {noisy}"
    else:
        matcher.block(block, printed)


def wait_for_pause(walk: Walk, command: str) -> None:
    m = re.fullmatch(r"grep '(?P<text>[^']+)' (?P<file>\S+)", command)
    assert m is not None, f"teach wait_for_pause about {command}"
    deadline = time.monotonic() + 5
    grep = f"grep -qF {shlex.quote(m['text'])} {m['file']}"
    while walk.host.run(grep, cwd=walk.cwd).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def start_up(host: Host, log: Path) -> subprocess.Popen[bytes]:
    """The first terminal: the alternative the page gives to `just up`, from the repository
    root of a checkout without an earlier run's state."""
    alternative = re.search(r"# or: (.+)$", UP)
    assert alternative is not None
    result = host.run("rm -rf .spcs-run", cwd=REPO)
    assert result.returncode == 0, result.stderr
    # the words of the line as written; Host.start runs `exec` + them, so a signal reaches it
    up = host.start(shlex.split(alternative[1]), log, cwd=REPO, env=reader_env(SYSTEM_PATH))
    deadline = time.monotonic() + 90
    while "Ctrl-C stops everything." not in log.read_text():  # what the reader waits for
        assert up.poll() is None, f"spcs up exited {up.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"spcs up did not come up:\n{log.read_text()}"
        time.sleep(0.1)
    return up


def stop_up(up: subprocess.Popen[bytes], log: Path) -> None:
    """Ctrl-C, as the page says; `spcs up` stops every service and exits 0."""
    up.send_signal(signal.SIGINT)
    try:
        status = up.wait(60)
    except subprocess.TimeoutExpired:
        terminate(up)
        raise AssertionError(f"spcs up did not stop on Ctrl-C:\n{log.read_text()}") from None
    assert status == 0, log.read_text()
    assert "stopping..." in log.read_text()


def installation(tmp_path: Path) -> tuple[Host, Network, subprocess.Popen[bytes], Path]:
    """What the TLS section presumes: a management host named mgmt.example.com serving mutual
    TLS with a certificate from deploy/tls/make-certs.sh, the CA in /etc/spcs/tls/ca.pem and
    an operator pair (ops.pem, ops.key) in the operator's directory."""
    network = Network(tmp_path / "tls-net")
    host = Host(tmp_path / "tls-host", overlays=["/etc"], network=network)
    pki, operator = tmp_path / "pki", tmp_path / "operator"
    operator.mkdir()
    make = shlex.quote(str(REPO / "deploy" / "tls" / "make-certs.sh"))
    setup = [
        f"{make} {pki} ca",
        f"{make} {pki} management mgmt.example.com",
        f"{make} {pki} operator ops",
        f"install -d -m 0755 /etc/spcs/tls && install -m 0644 {pki}/ca.pem /etc/spcs/tls/ca.pem",
        f"cp {pki}/ops.pem {pki}/ops.key {operator}/",
        "echo '127.0.0.1 mgmt.example.com' >> /etc/hosts",
    ]
    for script in setup:
        result = host.run(script)
        assert result.returncode == 0, f"{script}: {result.stderr}"
    log = tmp_path / "tls-management.log"
    management = host.start(
        [
            str(REPO / ".venv" / "bin" / "spcs"),
            "management",
            "--listen",
            "0.0.0.0:9710",
            "--db",
            str(tmp_path / "tls-management.db"),
            "--tls-cert",
            f"{pki}/mgmt.example.com.pem",
            "--tls-key",
            f"{pki}/mgmt.example.com.key",
            "--tls-ca",
            f"{pki}/ca.pem",
            "--tls-client-auth",
            "--port-file",
            str(tmp_path / "tls-management.port"),
        ],
        log,
        env=reader_env(SYSTEM_PATH),
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "tls-management.port").exists():
        assert management.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert "(mutual TLS)" in log_containing(log, "(mutual TLS)"), log.read_text()
    return host, network, management, operator


def require_tools() -> None:
    if not (REPO / ".venv" / "bin" / "grpcurl").exists():
        pytest.skip(f"no .venv/bin/grpcurl, where the page has it: {MISSING}")
    missing = [tool for tool in ("qemu-img", "jq", "openssl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (the page uses them)")


@pytest.mark.root
@pytest.mark.timeout(600)
def test_the_page_runs_as_written(tmp_path: Path):
    require_namespaces(network=True)
    require_tools()
    blocks = page_blocks()
    walk_blocks = [b for b in blocks if b.section != TLS_SECTION]
    tls_blocks = [b for b in blocks if b.section == TLS_SECTION]
    matcher, ran = Matcher(), set[str]()
    network = Network(tmp_path / "net")
    reader_tmp = tmp_path / "reader-tmp"  # the host's /tmp
    repo = Host(
        tmp_path / "repo", overlays=[str(REPO)], binds={"/tmp": reader_tmp}, network=network
    )
    up_log = tmp_path / "up.log"
    up = session = None
    try:
        up = start_up(repo, up_log)
        env = reader_env(SYSTEM_PATH)
        session = Session(
            repo, REPO, env, reader_tmp / ".walk", "/tmp/.walk", tmp_path / "bash.log"
        )
        walk = Walk(session, repo, REPO, up_log)
        for block in walk_blocks:
            run_block(walk, block, matcher, ran)
        session.close()
        stop_up(up, up_log)
        logs = repo.run("cat .spcs-run/logs/*", cwd=REPO).stdout
        assert "Traceback" not in logs, logs
        for log, name in (("management", "management"), ("node1", "node"), ("node2", "node")):
            drained = repo.run(
                f"grep -c ' spcs-{name} stopped$' .spcs-run/logs/{log}.log", cwd=REPO
            )
            assert drained.stdout.strip() == "1", f"{log} did not drain and stop: {logs}"
    finally:
        if session is not None:
            session.close()
        if up is not None and up.poll() is None:
            terminate(up)
        # the templates, their raw images and the exported one are GiBs; outputs and logs stay
        for raw in reader_tmp.glob("*.raw"):
            raw.unlink()
        upper = tmp_path / "repo" / "layers" / str(REPO).strip("/").replace("/", "_") / "upper"
        shutil.rmtree(upper / ".spcs-run" / "secondary", ignore_errors=True)
        repo.close()
        network.close()

    host, tls_network, management, operator = installation(tmp_path)
    tls_session = None
    try:
        tools = tmp_path / "tools"  # the operator has grpcurl on PATH
        tools.mkdir()
        (tools / "grpcurl").symlink_to(REPO / ".venv" / "bin" / "grpcurl")
        env = reader_env(f"{tools}:{SYSTEM_PATH}")
        capture = tmp_path / "tls-walk"
        log = tmp_path / "tls-bash.log"
        tls_session = Session(host, operator, env, capture, str(capture), log)
        for block in tls_blocks:
            run_block(Walk(tls_session, host, operator), block, matcher, ran)
        assert terminate(management) == 0, (tmp_path / "tls-management.log").read_text()
    finally:
        if tls_session is not None:
            tls_session.close()
        terminate(management)
        host.close()
        tls_network.close()

    missed = [c for c in page_commands() if c not in ran and c not in NOT_RUN]
    assert missed == [], "the walk skipped commands of the page:\n" + "\n".join(missed)


# ------------------------------------------------------------------ the tables and the tools


def test_every_command_is_run_or_listed():
    """The tables name commands the page has, each exactly once; the walk runs every other
    command (test_the_page_runs_as_written fails on one it skipped), the TLS section last."""
    commands = page_commands()
    assert len(commands) > 60, "the extraction found too few commands"
    assert len(set(commands)) == len(commands), "a command appears twice; the tables need one"
    assert set(NOT_RUN) <= set(commands), "NOT_RUN lists commands the page no longer has"
    for table in (TIMING, UNORDERED):
        for line in table:
            assert [first_line(c) for c in commands].count(line) == 1, f"not one command: {line}"
    assert set(PAUSES) <= set(commands), "PAUSES lists commands the page no longer has"
    # the same blocks and commands test_documented_commands.py sees in the other pages
    assert [(b.section, b.index, list(b.commands)) for b in page_blocks()] == [
        (section, index, [c for c, _ in split_commands(lines)])
        for section, index, lines in sh_blocks(PAGE)
    ]
    sections = [b.section for b in page_blocks()]
    assert TLS_SECTION in sections
    assert sections[sections.index(TLS_SECTION) :] == [TLS_SECTION] * sections.count(TLS_SECTION)


def test_just_up_is_the_alternative_the_page_gives():
    """`just up` is `setup` and then the line's alternative (run from the repository root)."""
    justfile = (REPO / "justfile").read_text()
    assert 'venv := justfile_directory() / ".venv"' in justfile
    assert 'run_dir := justfile_directory() / ".spcs-run"' in justfile
    recipe = re.search(r"(?m)^up: setup\n((?:    .*\n)+)", justfile)
    assert recipe is not None, "the justfile's `up` recipe changed; check NOT_RUN's reason"
    assert recipe[1].strip() == '"{{venv}}/bin/spcs" up --workdir "{{run_dir}}"'
    assert UP.endswith("# or: .venv/bin/spcs up --workdir .spcs-run")


def test_page_blocks_pair_commands_with_outputs():
    page = "\n".join(
        [
            "## One",
            "```sh",
            "a=1",
            "echo $a",
            "```",
            "",
            "```text",
            "1",
            "```",
            "prose",
            "```text",
            "not an output of a command",
            "```",
            "```sh",
            "true",
            "```",
            "text between",
            "```json",
            "{}",
            "```",
        ]
    )
    assert page_blocks(page) == [
        Block("## One", 0, ("a=1", "echo $a"), "1"),
        Block("## One", 1, ("true",), None),
    ]


def test_items():
    assert items('POOL_STATE_UP\n{"a": 1}\n{\n  "b": [\n    2\n  ]\n}\n}exit 1\n\n  x\t1 \n') == [
        ("text", "POOL_STATE_UP"),
        ("json", {"a": 1}),
        ("json", {"b": [2]}),
        ("text", "}exit 1"),
        ("text", "  x\t1"),
    ]


def shown_block(section: str, shown: str) -> Block:
    return Block(section, 0, ("cmd",), shown)


def test_matcher_accepts_what_varies_and_nothing_else():
    matcher = Matcher()
    block = shown_block(
        "## A",
        '{"path": "/dev/storpool-byid/emu.a.1", "t": "2026-11-25T00:59:16.419205120Z"}\n'
        "2026-11-25 00:59:48,798 INFO rpc status=OK ms=0.12 storpool_ms=0.00",
    )
    out = (
        '{"path": "/dev/storpool-byid/emu.a.7", "t": "2030-01-02T03:04:05Z"}\n'
        "2030-01-02 03:04:05,006 INFO rpc status=OK ms=13.20 storpool_ms=1.05\n"
    )
    matcher.block(block, [("cmd", out)])
    assert matcher.bindings == {"emu.a.1": "emu.a.7"}
    for wrong in (
        out.replace("OK", "ERROR"),  # other text
        out.replace('"t"', '"u"'),  # another key
        out.replace("}", ', "extra": 1}', 1),  # a key the page does not show
        out.replace("emu.a.7", "emu.a.8"),  # the page's emu.a.1 is emu.a.7 in this run
        out + "one more line\n",
    ):
        with pytest.raises(AssertionError):
            Matcher(dict(matcher.bindings)).block(block, [("cmd", wrong)])
    with pytest.raises(AssertionError):  # two ids of the page cannot be one id of the run
        Matcher({"emu.a.2": "emu.a.7"}).block(block, [("cmd", out)])


def test_matcher_scopes():
    hosts = shown_block(COPIES[0], '{"host_id":"host-2"}')
    Matcher().block(hosts, [("cmd", '{"host_id":"host-1"}')])
    with pytest.raises(AssertionError):  # outside the copies, host-1 is host-1
        Matcher().block(
            shown_block("## Nodes", hosts.shown or ""), [("cmd", '{"host_id":"host-1"}')]
        )
    timing = next(iter(TIMING))
    racy = Block(COPIES[0], 0, (timing,), '{"metadata": {"stage": "queued", "kind": "k"}}')
    Matcher().block(
        racy,
        [(timing, '{"metadata": {"stage": "x", "bytes_done": "5", "kind": "k"}, "done": true}')],
    )
    with pytest.raises(AssertionError):  # the keys TIMING does not name stay checked
        Matcher().block(racy, [(timing, '{"metadata": {"stage": "x", "kind": "other"}}')])
    unordered = next(iter(UNORDERED))
    lines = Block(COPIES[0], 0, (unordered,), "localhost:9711\ta\nlocalhost:9713\tb")
    Matcher().block(lines, [(unordered, "localhost:9713\tb\nlocalhost:9713\ta\n")])
    with pytest.raises(AssertionError):
        Matcher().block(lines, [(unordered, "localhost:9713\tb\nlocalhost:9713\tc\n")])


def test_effects_know_the_silent_commands():
    """Each command of the page that prints nothing (one of a block without an output after
    it, one that sets a variable, writes a file or discards its output) has an effect the walk
    checks; found by the patterns alone, without running anything."""
    silent = re.compile(r"[A-Za-z_]\w*=.*|cat > .*|.*>/dev/null.*")
    for block in page_blocks():
        for command in block.commands:
            line = one_line(command)
            if command in NOT_RUN or (block.shown is not None and not silent.fullmatch(line)):
                continue
            assert any(p.fullmatch(line) for p, _ in EFFECTS), f"no check for: {line}"
