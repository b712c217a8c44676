"""`confine_to`: a template's backing chain may not reach files outside the allowed directory.

Hostile images are made by qemu-img (`rebase -u` writes any backing name into the header);
the "secret" they point at lives in the test's tmp dir, outside the allowed directory, and
its bytes must appear in no output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from spcs import datamover
from spcs.common import errors
from spcs.common.operations import JobContext
from spcs.node import mover

from .conftest import MiB, assert_same, qemu_img, requires_qemu, write_pattern

SECRET = b"SPCS-TEST-SECRET storpool api token 7f3a9c\n"
ABSOLUTE = "absolute backing file names are not allowed here"
PARENT = '".." components are not allowed here'
SYMLINK = "it resolves outside through a symlink"

pytestmark = [requires_qemu, pytest.mark.fast]


@dataclass
class Layout:
    root: Path  # the allowed directory ("secondary storage")
    tpl: Path  # root/tpl: where the templates are
    base: Path  # root/tpl/base.raw: a legit backing file
    secret: Path  # outside/secret.raw: must never be read through a confined image
    out: Path  # where the copies go (outside root, empty)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    root = tmp_path / "secondary"
    tpl = root / "tpl"
    tpl.mkdir(parents=True)
    base = tpl / "base.raw"
    write_pattern(base, 2 * MiB, seed=31, holes=False)
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.raw"
    secret.write_bytes((SECRET * (2 * MiB // len(SECRET) + 1))[: 2 * MiB])
    out = tmp_path / "out"
    out.mkdir()
    return Layout(root, tpl, base, secret, out)


def overlay(path: Path, backing_name: str, backing_fmt: str) -> Path:
    """A qcow2 whose header names `backing_name` verbatim (not opened by qemu-img)."""
    qemu_img("create", "-f", "qcow2", path, "2M")
    qemu_img("rebase", "-u", "-f", "qcow2", "-b", backing_name, "-F", backing_fmt, path)
    return path


def _absolute(lo: Layout) -> tuple[Path, Path, str, str]:
    top = overlay(lo.tpl / "t.qcow2", str(lo.secret), "raw")
    return top, top, str(lo.secret), ABSOLUTE


def _absolute_etc(lo: Layout) -> tuple[Path, Path, str, str]:
    # Refused on its name alone: the file is never opened.
    top = overlay(lo.tpl / "t.qcow2", "/etc/hostname", "raw")
    return top, top, "/etc/hostname", ABSOLUTE


def _dotdot(lo: Layout) -> tuple[Path, Path, str, str]:
    top = overlay(lo.tpl / "t.qcow2", "../../outside/secret.raw", "raw")
    return top, top, "../../outside/secret.raw", PARENT


def _dotdot_staying_inside(lo: Layout) -> tuple[Path, Path, str, str]:
    top = overlay(lo.tpl / "t.qcow2", "../tpl/base.raw", "raw")
    return top, top, "../tpl/base.raw", PARENT


def _symlink_out(lo: Layout) -> tuple[Path, Path, str, str]:
    os.symlink(lo.secret, lo.tpl / "evil.raw")
    top = overlay(lo.tpl / "t.qcow2", "evil.raw", "raw")
    return top, top, "evil.raw", SYMLINK


def _dir_symlink_out(lo: Layout) -> tuple[Path, Path, str, str]:
    os.symlink(lo.secret.parent, lo.tpl / "shared")
    top = overlay(lo.tpl / "t.qcow2", "shared/secret.raw", "raw")
    return top, top, "shared/secret.raw", SYMLINK


def _nested(lo: Layout) -> tuple[Path, Path, str, str]:
    # The top names a harmless qcow2 inside; that one's own backing file escapes.
    mid = overlay(lo.tpl / "mid.qcow2", "../../outside/secret.raw", "raw")
    top = overlay(lo.tpl / "t.qcow2", "mid.qcow2", "qcow2")
    return top, mid, "../../outside/secret.raw", PARENT


def _nested_symlink(lo: Layout) -> tuple[Path, Path, str, str]:
    (lo.tpl / "deep").mkdir()
    os.symlink(lo.secret, lo.tpl / "deep" / "evil.raw")
    mid = overlay(lo.tpl / "deep" / "mid.qcow2", "evil.raw", "raw")
    top = overlay(lo.tpl / "t.qcow2", "deep/mid.qcow2", "qcow2")
    return top, mid, "evil.raw", SYMLINK


HOSTILE: dict[str, Callable[[Layout], tuple[Path, Path, str, str]]] = {
    "absolute": _absolute,
    "absolute-etc": _absolute_etc,
    "dotdot": _dotdot,
    "dotdot-staying-inside": _dotdot_staying_inside,
    "symlink-out": _symlink_out,
    "dir-symlink-out": _dir_symlink_out,
    "nested-dotdot": _nested,
    "nested-symlink": _nested_symlink,
}


def _expected(lo: Layout, of: Path, name: str, why: str) -> str:
    return f'{of}: backing file "{name}" is outside {lo.root} ({why})'


def _assert_no_secret(text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    assert SECRET.strip() not in data


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_backing_is_refused(layout: Layout, case: str) -> None:
    top, of, name, why = HOSTILE[case](layout)
    want = _expected(layout, of, name, why)

    with pytest.raises(datamover.FormatError) as e:
        datamover.info(top, confine_to=layout.root)
    assert str(e.value) == want
    assert e.value.path == str(of)
    with pytest.raises(datamover.FormatError) as e:
        datamover.info(str(top), checksum="sha256", confine_to=str(layout.root))
    assert str(e.value) == want

    dst = layout.out / "vol.raw"
    with pytest.raises(datamover.FormatError) as e:
        datamover.convert(top, dst, confine_to=layout.root)
    assert str(e.value) == want
    _assert_no_secret(str(e.value))
    job = datamover.start_convert(top, layout.out / "vol.qcow2", dst_format="qcow2",
                                  confine_to=layout.root)  # fmt: skip
    with pytest.raises(datamover.FormatError) as e:
        job.wait()
    assert str(e.value) == want
    assert list(layout.out.iterdir()) == [], "a refused copy creates nothing"


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink-out", "nested-symlink"])
def test_without_confinement_qemu_behaviour_stays(layout: Layout, case: str) -> None:
    top, of, name, _ = HOSTILE[case](layout)
    assert datamover.info(of).backing_file == name
    dst = layout.out / "followed.raw"
    datamover.convert(top, dst)
    assert_same(top, dst)
    assert dst.read_bytes() == layout.secret.read_bytes()


def test_backing_inside_is_followed(layout: Layout) -> None:
    (layout.tpl / "sub").mkdir()
    os.symlink("../base.raw", layout.tpl / "sub" / "alias.raw")  # a symlink that stays inside
    os.symlink("tpl", layout.root / "tpl-link")
    mid = overlay(layout.tpl / "sub" / "mid.qcow2", "alias.raw", "raw")
    top = overlay(layout.tpl / "t.qcow2", "sub/mid.qcow2", "qcow2")
    direct = overlay(layout.tpl / "d.qcow2", "./base.raw", "raw")

    assert datamover.info(top, confine_to=layout.root).backing_file == "sub/mid.qcow2"
    for src, dst in ((top, "top.raw"), (mid, "mid.qcow2"), (direct, "d.raw")):
        out = layout.out / dst
        datamover.convert(src, out, dst_format=out.suffix[1:], confine_to=layout.root)  # type: ignore[arg-type]
        assert_same(src, out)
        assert_same(layout.base, out)
    # The top image named through a symlink inside the directory is fine too.
    via = layout.root / "tpl-link" / "t.qcow2"
    stats = datamover.convert(via, layout.out / "via.raw", confine_to=layout.root)
    assert stats.virtual_size == 2 * MiB
    assert (layout.out / "via.raw").read_bytes() == layout.base.read_bytes()


def test_top_image_outside_is_refused(layout: Layout) -> None:
    os.symlink(layout.secret, layout.tpl / "t.raw")
    for src in (layout.secret, layout.tpl / "t.raw"):
        with pytest.raises(datamover.FormatError, match="image is outside"):
            datamover.info(src, confine_to=layout.root)
        with pytest.raises(datamover.FormatError, match="image is outside"):
            datamover.convert(src, layout.out / "x.raw", confine_to=layout.root)
    assert list(layout.out.iterdir()) == []


def test_missing_backing_is_a_source_error(layout: Layout) -> None:
    top = overlay(layout.tpl / "t.qcow2", "gone.raw", "raw")
    with pytest.raises(datamover.SourceError) as e:
        datamover.info(top, confine_to=layout.root)
    assert "gone.raw" in str(e.value) and "backing file of" in str(e.value)
    assert e.value.errno == 2


def test_external_data_file_is_refused(layout: Layout) -> None:
    top = layout.tpl / "ext.qcow2"
    data = layout.secret.parent / "ext.data"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={data}", top, "1M")
    data.write_bytes(SECRET * 1000)
    for confine in (None, layout.root):
        with pytest.raises(datamover.FormatError, match="external data file"):
            datamover.info(top, confine_to=confine)
        with pytest.raises(datamover.FormatError, match="external data file"):
            datamover.convert(top, layout.out / "x.raw", confine_to=confine)
    assert list(layout.out.iterdir()) == []


def test_confine_dir_must_be_a_directory(layout: Layout) -> None:
    for bad in (layout.root / "missing", layout.base):
        with pytest.raises(ValueError, match="confine_to"):
            datamover.info(layout.base, confine_to=bad)
        with pytest.raises(ValueError, match="confine_to"):
            datamover.start_convert(layout.base, layout.out / "x.raw", confine_to=bad)
    assert list(layout.out.iterdir()) == []


# --- the CLIs -----------------------------------------------------------------------------


def spcs(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "spcs.cli", *map(str, args)], capture_output=True)


@pytest.mark.parametrize("case", ["absolute", "nested-symlink"])
def test_cli_confine_to(layout: Layout, case: str) -> None:
    top, of, name, why = HOSTILE[case](layout)
    want = _expected(layout, of, name, why)
    dst = layout.out / "vol.raw"
    for cmd, args in (
        ("convert", ("-p", top, dst)),
        ("info", (top,)),
        ("info", ("--json", "--checksum", "sha256", top)),
    ):
        r = spcs(cmd, "--confine-to", layout.root, *args)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.decode().strip().splitlines()
        assert lines[-1] == f"spcs {cmd}: error: {want}"
        assert len([ln for ln in lines if ln.strip()]) <= 2  # -p may leave one progress line
        assert b"Traceback" not in r.stderr
        _assert_no_secret(r.stdout + r.stderr)
    assert not dst.exists()

    # Without the flag, qemu-img's behaviour: the name is followed.
    r = spcs("convert", top, dst)
    assert r.returncode == 0, r.stderr
    assert_same(top, dst)
    assert dst.read_bytes() == layout.secret.read_bytes()


def test_cli_confine_to_legit_and_bad_dir(layout: Layout) -> None:
    top = overlay(layout.tpl / "t.qcow2", "base.raw", "raw")
    dst = layout.out / "vol.qcow2"
    r = spcs("convert", "--confine-to", layout.root, "-O", "qcow2", top, dst)
    assert r.returncode == 0, r.stderr
    assert_same(layout.base, dst)
    r = spcs("info", "--confine-to", layout.root, top)
    assert r.returncode == 0 and b"backing file: base.raw" in r.stdout

    r = spcs("info", "--confine-to", layout.root / "missing", top)
    assert r.returncode == 1 and b"spcs info: error: confine_to" in r.stderr
    assert b"Traceback" not in r.stderr
    r = spcs("convert", "--confine-to", layout.base, top, layout.out / "x.raw")
    assert r.returncode == 1 and b"spcs convert: error: confine_to" in r.stderr
    assert b"Traceback" not in r.stderr and not (layout.out / "x.raw").exists()


# --- the node's wrapper -------------------------------------------------------------------


class _Ctx:
    """The part of JobContext that mover.copy uses."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.cancels: list[Callable[[], None]] = []

    def check_cancelled(self) -> None:
        pass

    def stage(self, text: str) -> None:
        self.stages.append(text)

    def on_cancel(self, fn: Callable[[], None]) -> None:
        self.cancels.append(fn)

    def progress(self, done: int, total: int, **_: object) -> None:
        pass


def test_node_mover_passes_confine_to(layout: Layout) -> None:
    top, of, name, why = HOSTILE["symlink-out"](layout)
    want = _expected(layout, of, name, why)
    what = "copying template 7"
    with pytest.raises(errors.InvalidArgument) as e:
        mover.image_info(top, what, confine_to=layout.root)
    assert str(e.value) == f"{what}: the image is not usable: {want}"
    fake = _Ctx()
    ctx = cast(JobContext, fake)
    dst = layout.out / "vol.raw"
    with pytest.raises(errors.InvalidArgument) as e:
        mover.copy(
            ctx, top, dst, what=what, src_format=None, dst_format="raw", confine_to=layout.root
        )
    assert str(e.value) == f"{what}: the image is not usable: {want}"
    assert not dst.exists()
    with pytest.raises(errors.InvalidArgument, match="confine_to"):
        mover.image_info(top, what, confine_to=layout.root / "missing")

    # Unconfined (the default), qemu-img's behaviour.
    assert mover.image_info(top, what).backing_file == name
    good = overlay(layout.tpl / "good.qcow2", "base.raw", "raw")
    stats = mover.copy(
        ctx, good, dst, what=what, src_format=None, dst_format="raw", confine_to=layout.root
    )
    assert stats.virtual_size == 2 * MiB
    assert dst.read_bytes() == layout.base.read_bytes()
    assert fake.stages == ["copying", "copying"] and len(fake.cancels) == 2
