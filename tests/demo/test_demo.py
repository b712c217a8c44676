"""`spcs demo` runs the whole story, verifies every data step and leaves nothing running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spcs.demo.story import DemoFailure, Story
from spcs.demo.webserver import TemplateServer
from tests.stacks import stack
from tests.support import REPO


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_demo_command_end_to_end(tmp_path: Path):
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spcs.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--template-gib",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line for line in result.stdout.splitlines() if re.match(r"^\s*\d+\. ", line)]
    assert len(steps) == 22
    assert all(" ok: " in line or "sha256" in line for line in steps)
    assert "all steps passed" in result.stdout
    assert "Traceback" not in result.stderr
    assert processes_mentioning(str(workdir)) == []  # nothing left running
    for name in ("management", "node1", "node2"):
        assert "stopped" in (workdir / "logs" / f"{name}.log").read_text()


class TamperingStory(Story):
    """Corrupts the snapshot backup on secondary storage right after it is written."""

    def copy(self, source, destination, step, **options):
        result = super().copy(source, destination, step, **options)
        if result.kind == "snapshot-to-secondary":
            backup = self.stack.secondary / result.result.snapshot.path
            raw = backup.with_suffix(".raw")
            subprocess.run(["qemu-img", "convert", "-O", "raw", str(backup), str(raw)], check=True)
            with raw.open("r+b") as handle:
                handle.seek(5 << 20)
                handle.write(b"bit rot")
            subprocess.run(
                ["qemu-img", "convert", "-O", "qcow2", str(raw), str(backup)], check=True
            )
            raw.unlink()
        return result


def test_demo_stops_on_a_checksum_mismatch(tmp_path: Path):
    # the stack `spcs demo` runs: two hosts, the services on their own settings, and the
    # direct-download web server its nodes allow
    (tmp_path / "secondary").mkdir()
    web = TemplateServer(tmp_path / "secondary").start()
    try:
        with (
            stack(
                tmp_path, test_defaults=False, node_args=["--direct-download-url", web.url]
            ) as running,
            pytest.raises(DemoFailure, match="sha256"),
        ):
            TamperingStory(running, template_size=1 << 30, web_url=web.url).run()
    finally:
        web.stop()
    assert all(code == 0 for code in running.last_exit_codes.values())
