"""A Debian machine booted with systemd as PID 1, for installing packages on it "clean".

The machine's root is an overlay of this machine's / (writes stay in the test's directory) in
private PID, mount and UTS namespaces, chrooted, in the network namespace of a
`sandbox.Network`. What systemd-nspawn would give it and what keeps it off the real machine:
a private /dev with only the basic devices (the real one has consoles a getty would take),
read-only /sys and /proc/sys, tmpfs /run and /tmp, its own cgroup subtree, and a boot target
of its own that starts only systemd's basics, with the units that touch kernel-wide state
(modules, sysctl, the clock, udev) or are this machine's services (databases, gettys) masked.
Commands run in it through `nsenter`.

Needs root, util-linux (unshare, nsenter) and systemd installed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.e2e.doc_commands import SYSTEM_PATH
from tests.e2e.sandbox import Network

SYSTEMD = "/lib/systemd/systemd"
TARGET = "spcs-test.target"
MASKED = [
    # kernel-wide state: modules, sysctl, binfmt, the clock, the random seed, devices
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-timesyncd.service",
    "systemd-random-seed.service",
    "systemd-pstore.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-hwdb-update.service",
    "systemd-journald-audit.socket",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    # first-boot and TPM machinery of a real machine
    "systemd-firstboot.service",
    "systemd-repart.service",
    "systemd-machine-id-commit.service",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    # this machine's own services, should anything pull them in
    "getty.target",
    "console-getty.service",
    "serial-getty@.service",
    "getty@.service",
    "mariadb.service",
    "postgresql.service",
    "networking.service",
    "systemd-networkd.service",
    "NetworkManager.service",
    "cron.service",
]
BOOT_TARGET = """\
[Unit]
Description=spcs test machine: systemd's basics only
Requires=sysinit.target
After=sysinit.target
AllowIsolate=yes
"""
# (name, type, major, minor) of the private /dev, as systemd-nspawn makes it
DEVICES = [
    ("null", "c", 1, 3),
    ("zero", "c", 1, 5),
    ("full", "c", 1, 7),
    ("random", "c", 1, 8),
    ("urandom", "c", 1, 9),
    ("tty", "c", 5, 0),
    ("console", "c", 1, 3),  # systemd's status output goes nowhere
]
ENV = {"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8"}


def cgroup_mounts() -> list[Path]:
    """The cgroup hierarchies systemd uses: the unified one and the named v1 `systemd` one
    (a hybrid layout has both)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        options = fields[-1].split(",")
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options):
            found.append(Path(fields[4]))
    return found


class Machine:
    """A booted machine named `hostname`, with `hosts` lines added to its /etc/hosts."""

    def __init__(self, workdir: Path, *, hostname: str, network: Network, hosts: str = ""):
        self.workdir = workdir
        self.hostname = hostname
        upper, work, self.root = workdir / "upper", workdir / "work", workdir / "root"
        for directory in (upper / "etc" / "systemd" / "system", work, self.root):
            directory.mkdir(parents=True)
        # the image as it boots: written into the overlay's upper layer before it is mounted
        etc = upper / "etc"
        (etc / "hostname").write_text(f"{hostname}\n")
        (etc / "hosts").write_text(Path("/etc/hosts").read_text() + hosts)
        for unit in MASKED:
            (etc / "systemd" / "system" / unit).symlink_to("/dev/null")
        (etc / "systemd" / "system" / TARGET).write_text(BOOT_TARGET)
        for path in (etc, etc / "systemd", etc / "systemd" / "system"):
            os.chmod(path, 0o755)
        # a cgroup of its own in each hierarchy, so that its systemd manages only that subtree
        self.cgroups = [mount / f"spcs-test-{uuid.uuid4().hex[:12]}" for mount in cgroup_mounts()]
        for cgroup in self.cgroups:
            cgroup.mkdir()
        root = shlex.quote(str(self.root))
        overlay = f"lowerdir=/,upperdir={upper},workdir={work}"
        lines = [
            "set -e",
            # "0": the writing process, which goes on to be PID 1
            *(f"echo 0 > {shlex.quote(str(cgroup))}/cgroup.procs" for cgroup in self.cgroups),
            f"mount -t overlay overlay -o {shlex.quote(overlay)} {root}",
            f"mount -t proc proc {root}/proc",
            f"mount --bind {root}/proc/sys {root}/proc/sys",
            f"mount -o remount,bind,ro {root}/proc/sys",
            f"mount --rbind /sys {root}/sys",
            f"mount -o remount,bind,ro {root}/sys",
            f"mount -t tmpfs -o mode=0755,nosuid tmpfs {root}/dev",
            *(
                f"mknod -m 0666 {root}/dev/{n} {t} {major} {minor}"
                for n, t, major, minor in DEVICES
            ),
            f"mkdir {root}/dev/pts {root}/dev/shm",
            f"mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts {root}/dev/pts",
            f"ln -s pts/ptmx {root}/dev/ptmx",
            f"mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {root}/dev/shm",
            f"ln -s /proc/self/fd {root}/dev/fd",
            f"mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs {root}/run",
            f"mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {root}/tmp",
            f"exec env -i container=spcs-test PATH={SYSTEM_PATH} "
            f"chroot {root} {SYSTEMD} --unit={TARGET}",
        ]
        self._log = (workdir / "boot.log").open("wb")
        argv = ["nsenter", f"--net={network.ns}", "--"]
        argv += ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--uts"]
        argv += ["--propagation", "private"]
        self._holder = subprocess.Popen(
            [*argv, "sh", "-c", "\n".join(lines)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = 0
        try:
            self.pid = self._init_pid()
            self._wait_booted()
        except BaseException:
            self.close()
            raise

    def _init_pid(self, timeout: float = 20) -> int:
        """The host's pid of the machine's PID 1: the child `unshare --fork` made."""
        children = Path(f"/proc/{self._holder.pid}/task/{self._holder.pid}/children")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._holder.poll() is not None:
                raise AssertionError(f"the machine did not boot:\n{self.boot_log()}")
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids and Path(f"/proc/{pids[0]}/comm").read_text().strip() == "systemd":
                    return int(pids[0])
            time.sleep(0.05)
        raise AssertionError(f"systemd did not start in {timeout}s:\n{self.boot_log()}")

    def _wait_booted(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl is-system-running", timeout=10).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        failed = self.run("systemctl --failed --no-legend; journalctl -b --no-pager | tail -50")
        raise AssertionError(f"boot did not finish ({state!r}):\n{failed.stdout}")

    def boot_log(self) -> str:
        return (self.workdir / "boot.log").read_text(errors="replace")

    def nsenter(self) -> list[str]:
        """The prefix that runs a command in the machine, at its root."""
        namespaces = ["--mount", "--uts", "--net", "--pid", "--root", "--wd"]
        return ["nsenter", f"--target={self.pid}", *namespaces, "--"]

    def run(
        self,
        script: str,
        *,
        cwd: str = "/root",
        timeout: float = 120,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`sh -c script` in the machine as its root user; output as text."""
        argv = [*self.nsenter(), "sh", "-c", f"cd {shlex.quote(cwd)} && {script}"]
        if input is None:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=ENV,
                stdin=subprocess.DEVNULL,
            )
        done = subprocess.run(argv, capture_output=True, timeout=timeout, env=ENV, input=input)
        return subprocess.CompletedProcess(
            argv, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode()
        )

    def sh(self, script: str, *, cwd: str = "/root", input: bytes | None = None) -> str:
        """Like `run`, requiring exit status 0; its stdout."""
        result = self.run(script, cwd=cwd, input=input)
        assert result.returncode == 0, f"{script}: exit {result.returncode}\n{result.stderr}"
        return result.stdout

    def put(self, source: Path, directory: str = "/root") -> None:
        """Copy a file of this machine into `directory` of the machine."""
        target = shlex.quote(f"{directory}/{source.name}")
        self.sh(f"cat > {target}", input=source.read_bytes())

    def journal(self, unit: str) -> str:
        return self.run(f"journalctl -u {unit} -b --no-pager -o cat").stdout

    def close(self) -> None:
        """Power off (systemd as PID 1 ignores SIGTERM); whatever is left in its cgroups then
        (a boot that failed half-way, a hung shutdown) is killed, and the cgroups removed."""
        if self.pid and self._holder.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    [*self.nsenter(), "systemctl", "poweroff"],
                    capture_output=True,
                    timeout=20,
                    env=ENV,
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._holder.wait(30)
        for procs in (path for cgroup in self.cgroups for path in cgroup.rglob("cgroup.procs")):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        if self._holder.poll() is None:
            self._holder.kill()
        self._holder.wait(30)
        self._log.close()
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        """Depth first; a cgroup is busy until its last process has been reaped."""
        names = {cgroup.name for cgroup in self.cgroups}
        # its systemd makes the same paths in the v1 controllers' hierarchies (hybrid layout)
        mounts = {cgroup.parent for cgroup in self.cgroups}
        base = Path("/sys/fs/cgroup")
        mounts |= {path for path in base.iterdir() if path.is_dir()} if base.is_dir() else set()
        tops = [mount / name for mount in mounts for name in names if (mount / name).is_dir()]
        deadline = time.monotonic() + 10
        for top in tops:
            while top.exists():
                with contextlib.suppress(OSError):
                    for directory in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):
                        if directory.is_dir():
                            directory.rmdir()
                    top.rmdir()
                if time.monotonic() > deadline:
                    raise AssertionError(f"cgroup {top} is still in use")
                time.sleep(0.1)
