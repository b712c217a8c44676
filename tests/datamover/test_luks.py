"""LUKS1 encryption: raw LUKS volumes and LUKS-encrypted qcow2, judged by qemu-img, qemu-io
and cryptsetup on real files and loop devices (assertions on bytes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from spcs import datamover

from .conftest import MiB, qemu_img, requires_qemu, write_pattern

PASS = b"correct horse battery staple"
SECRET = f"--object=secret,id=s,data={PASS.decode()}"
PAYLOAD = 2 * MiB

requires_cryptsetup = pytest.mark.skipif(
    shutil.which("cryptsetup") is None, reason="cryptsetup judges the LUKS headers"
)
pytestmark = requires_qemu


def luks_opts(path: Path) -> str:
    return f"driver=luks,key-secret=s,file.filename={path}"


def qcow2_opts(path: Path) -> str:
    return f"driver=qcow2,encrypt.key-secret=s,file.filename={path}"


def raw_opts(path: Path) -> str:
    return f"driver=raw,file.filename={path}"


def assert_identical(encrypted_opts: str, plain: Path) -> None:
    """`qemu-img compare` of an encrypted image (opened by qemu with the secret) and plain."""
    r = subprocess.run(
        ["qemu-img", "compare", SECRET, "--image-opts", encrypted_opts, raw_opts(plain)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, f"qemu-img compare: {r.stdout}{r.stderr}"
    assert "Images are identical" in r.stdout


def luks_dump(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["cryptsetup", "luksDump", str(path)], check=True, capture_output=True, text=True
    ).stdout
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    return fields


def plain_source(tmp_path: Path, size: int = 12 * MiB, seed: int = 7) -> Path:
    src = tmp_path / "plain.raw"
    write_pattern(src, size, seed=seed)
    return src


def cryptsetup_format(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.truncate(size)
    subprocess.run(
        [*("cryptsetup", "luksFormat", "--type", "luks1", "--batch-mode"), *_FAST, str(path)],
        input=PASS,
        check=True,
        capture_output=True,
    )


_FAST = ("--pbkdf-force-iterations", "1000", "--key-file", "-")


@pytest.fixture
def loop_device(tmp_path: Path, loop_over: Callable[[Path], Path]) -> Path:
    backing = tmp_path / "loop-backing"
    backing.write_bytes(b"\xee" * (16 * MiB))
    return loop_over(backing)


# ------------------------------------------------------------------ raw LUKS output


@requires_cryptsetup
def test_luks_file_is_read_by_qemu_and_cryptsetup(tmp_path: Path) -> None:
    src = plain_source(tmp_path)
    dst = tmp_path / "out.luks"
    stats = datamover.convert(
        src, dst, dst_format="luks", passphrase=PASS, iter_time_ms=5, checksum="sha256"
    )
    assert dst.stat().st_size == 12 * MiB + PAYLOAD
    # Every byte is written, zeros too (their ciphertext is not zeros): whole zero chunks
    # count as zeroed, the rest as written.
    assert stats.bytes_written + stats.bytes_skipped >= 12 * MiB + PAYLOAD
    assert stats.checksum == datamover.info(src, checksum="sha256").checksum
    assert_identical(luks_opts(dst), src)
    dump = luks_dump(dst)
    assert dump["Version"] == "1"
    assert (dump["Cipher name"], dump["Cipher mode"], dump["Hash spec"]) == (
        "aes",
        "xts-plain64",
        "sha256",
    )
    assert dump["Payload offset"] == "4096"
    assert dump["MK bits"] == "512"
    assert dump["Key Slot 0"] == "ENABLED" and dump["Key Slot 1"] == "DISABLED"
    assert dump["AF stripes"] == "4000"
    # No plaintext block of the source is left in the volume.
    body = dst.read_bytes()[PAYLOAD:]
    plain = src.read_bytes()
    for at in range(0, len(plain), 1 << 20):
        block = plain[at : at + 4096]
        if any(block):
            assert body[at : at + 4096] != block

    info = datamover.info(dst, src_format="luks")
    assert (info.format, info.encryption, info.payload_offset) == ("luks", "luks", PAYLOAD)
    assert info.virtual_size == 12 * MiB
    assert "correct horse" not in repr(info)

    back = tmp_path / "back.raw"
    datamover.convert(dst, back, src_format="luks", src_passphrase=PASS)
    assert back.read_bytes() == plain


@pytest.mark.root
@requires_cryptsetup
def test_luks_onto_a_loop_device(tmp_path: Path, loop_device: Path) -> None:
    src = plain_source(tmp_path, size=12 * MiB, seed=8)
    datamover.convert(src, loop_device, dst_format="luks", passphrase=PASS, iter_time_ms=5)
    assert luks_dump(loop_device)["Payload offset"] == "4096"
    # The device is 2 MiB longer than the source: qemu sees it as 14 MiB whose tail is the
    # device's old bytes decrypted, so compare the source's range only.
    out = tmp_path / "from-qemu.raw"
    qemu_img("convert", SECRET, "--image-opts", luks_opts(loop_device), "-O", "raw", out)
    assert out.read_bytes()[: 12 * MiB] == src.read_bytes()
    back = tmp_path / "back.raw"
    datamover.convert(loop_device, back, src_format="luks", src_passphrase=PASS)
    assert back.read_bytes() == out.read_bytes()

    small = tmp_path / "big.raw"
    write_pattern(small, 15 * MiB, seed=3)
    with pytest.raises(datamover.TargetTooSmall, match="needs 17825792"):
        datamover.convert(small, loop_device, dst_format="luks", passphrase=PASS, iter_time_ms=5)


def test_luks_in_place_file_is_checked_first(tmp_path: Path) -> None:
    src = plain_source(tmp_path, size=4 * MiB)
    dst = tmp_path / "volume"
    dst.write_bytes(b"\xee" * (5 * MiB))
    with pytest.raises(datamover.TargetTooSmall):
        datamover.convert(src, dst, dst_format="luks", passphrase=PASS, iter_time_ms=5)
    assert dst.read_bytes() == b"\xee" * (5 * MiB)
    with dst.open("r+b") as f:
        f.truncate(6 * MiB + 512)
    datamover.convert(src, dst, dst_format="luks", passphrase=PASS, iter_time_ms=5)
    assert dst.stat().st_size == 6 * MiB + 512
    back = tmp_path / "back.raw"
    qemu_img("convert", SECRET, "--image-opts", luks_opts(dst), "-O", "raw", back)
    assert back.read_bytes()[: 4 * MiB] == src.read_bytes()


@requires_cryptsetup
def test_we_read_qemu_and_cryptsetup_volumes(tmp_path: Path) -> None:
    src = plain_source(tmp_path, size=10 * MiB, seed=9)
    ql = tmp_path / "qemu.luks"
    qemu_img("convert", SECRET, "-O", "luks", "-o", "key-secret=s,iter-time=10", src, ql)
    back = tmp_path / "back.raw"
    datamover.convert(ql, back, src_format="luks", src_passphrase=PASS)
    assert back.read_bytes() == src.read_bytes()
    # qemu puts its payload right after the key slots (sector 4040): we follow the header.
    assert datamover.info(ql, src_format="luks").payload_offset == 4040 * 512

    cs = tmp_path / "cryptsetup.luks"
    cryptsetup_format(cs, 10 * MiB + PAYLOAD)
    qemu_img("convert", SECRET, "-f", "raw", "-n", "--target-image-opts", src, luks_opts(cs))
    back2 = tmp_path / "back2.raw"
    datamover.convert(cs, back2, src_format="luks", src_passphrase=PASS)
    assert back2.read_bytes() == src.read_bytes()


@requires_cryptsetup
def test_header_only_format(tmp_path: Path) -> None:
    vol = tmp_path / "data.vol"
    with vol.open("wb") as f:
        f.write(b"\xee" * (6 * MiB))
    uuid = datamover.luks_format(vol, PASS, iter_time_ms=5)
    data = vol.read_bytes()
    assert data[PAYLOAD:] == b"\xee" * (4 * MiB), "the payload is left alone"
    dump = luks_dump(vol)
    assert dump["UUID"] == uuid
    assert dump["Payload offset"] == "4096" and dump["MK bits"] == "512"
    # qemu writes through the header we made; we read back what it wrote.
    subprocess.run(
        ["qemu-io", SECRET, "--image-opts", luks_opts(vol), "-c", "write -P 0x5a 1M 1M"],
        check=True,
        capture_output=True,
    )
    r = subprocess.run(
        ["qemu-io", SECRET, "--image-opts", luks_opts(vol), "-c", "read -P 0x5a 1M 1M"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "Pattern verification failed" not in r.stdout
    back = tmp_path / "back.raw"
    datamover.convert(vol, back, src_format="luks", src_passphrase=PASS)
    assert back.read_bytes()[MiB : 2 * MiB] == b"\x5a" * MiB

    small = tmp_path / "small.vol"
    small.write_bytes(bytes(PAYLOAD))
    with pytest.raises(datamover.TargetTooSmall):
        datamover.luks_format(small, PASS, iter_time_ms=5)
    with pytest.raises(datamover.IoError):
        datamover.luks_format(tmp_path / "missing", PASS, iter_time_ms=5)


# ------------------------------------------------------------------ qcow2 with LUKS


def test_encrypted_qcow2_is_read_by_qemu(tmp_path: Path) -> None:
    src = tmp_path / "sparse.raw"
    with src.open("wb") as f:
        f.truncate(64 * MiB)
        f.seek(3 * MiB)
        f.write(os.urandom(MiB))
        f.seek(40 * MiB + 4096)
        f.write(b"hello" * 1000)
    dst = tmp_path / "out.qcow2"
    datamover.convert(
        src, dst, dst_format="qcow2", encryption="luks", passphrase=PASS, iter_time_ms=5
    )
    assert_identical(qcow2_opts(dst), src)
    r = subprocess.run(
        ["qemu-img", "check", SECRET, "--image-opts", qcow2_opts(dst)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    meta = json.loads(qemu_img("info", "--output=json", dst).stdout)
    assert meta["encrypted"] is True
    assert meta["format-specific"]["data"]["encrypt"]["format"] == "luks"
    # Zero clusters stay unallocated: 1 MiB + one 64 KiB cluster of data.
    mapping = json.loads(
        qemu_img("map", "--output=json", SECRET, "--image-opts", qcow2_opts(dst)).stdout
    )
    data = sum(m["length"] for m in mapping if m["data"])
    assert data == MiB + 65536
    info = datamover.info(dst)
    assert (info.format, info.encryption, info.payload_offset) == ("qcow2", "luks", None)

    back = tmp_path / "back.raw"
    datamover.convert(dst, back, src_passphrase=PASS)
    assert back.read_bytes() == src.read_bytes()

    with pytest.raises(ValueError, match="compression cannot be used with encryption"):
        datamover.convert(
            src,
            tmp_path / "c.qcow2",
            dst_format="qcow2",
            encryption="luks",
            compression="zlib",
            passphrase=PASS,
        )


def test_we_read_qemus_encrypted_qcow2(tmp_path: Path) -> None:
    src = plain_source(tmp_path, size=9 * MiB, seed=11)
    q = tmp_path / "qemu.qcow2"
    qemu_img(
        "convert",
        SECRET,
        "-O",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,cluster_size=4096",
        src,
        q,
    )
    back = tmp_path / "back.raw"
    stats = datamover.convert(q, back, src_passphrase=PASS, checksum="sha256")
    assert back.read_bytes() == src.read_bytes()
    digest = datamover.info(q, checksum="sha256", src_passphrase=PASS).checksum
    assert stats.checksum == digest == datamover.info(src, checksum="sha256").checksum
    # Re-encrypted into our own qcow2 and a raw LUKS volume with another passphrase.
    ours = tmp_path / "ours.qcow2"
    datamover.convert(
        q,
        ours,
        dst_format="qcow2",
        encryption="luks",
        src_passphrase=PASS,
        passphrase=PASS,
        iter_time_ms=5,
    )
    assert_identical(qcow2_opts(ours), src)


# ------------------------------------------------------------------ errors and secrets


def test_wrong_or_missing_passphrase(tmp_path: Path) -> None:
    src = plain_source(tmp_path, size=3 * MiB)
    vol = tmp_path / "v.luks"
    q = tmp_path / "v.qcow2"
    datamover.convert(src, vol, dst_format="luks", passphrase=PASS, iter_time_ms=5)
    datamover.convert(
        src, q, dst_format="qcow2", encryption="luks", passphrase=PASS, iter_time_ms=5
    )
    for image, fmt in ((vol, "luks"), (q, None)):
        out = tmp_path / "out.raw"
        with pytest.raises(datamover.BadPassphrase) as e:
            datamover.convert(image, out, src_format=fmt, src_passphrase=b"wrong horse")
        assert str(e.value) == (
            f"{image}: no LUKS key slot opened with the given passphrase (1 active slot(s) tried)"
        )
        assert e.value.path == str(image)
        assert isinstance(e.value, datamover.FormatError)
        assert "horse" not in repr(e.value)
        assert not out.exists()
        with pytest.raises(datamover.BadPassphrase, match="no passphrase was given"):
            datamover.convert(image, out, src_format=fmt)
        with pytest.raises(datamover.BadPassphrase):
            datamover.info(image, src_format=fmt, checksum="sha256")


def test_bad_arguments(tmp_path: Path) -> None:
    src = plain_source(tmp_path, size=MiB)
    dst = tmp_path / "x"
    with pytest.raises(ValueError, match="encrypted output needs a passphrase"):
        datamover.convert(src, dst, dst_format="luks")
    with pytest.raises(ValueError, match="not encrypted"):
        datamover.convert(src, dst, passphrase=PASS)
    with pytest.raises(ValueError, match="raw output cannot be encrypted"):
        datamover.convert(src, dst, encryption="luks", passphrase=PASS)
    with pytest.raises(ValueError, match="must not be empty"):
        datamover.convert(src, dst, dst_format="luks", passphrase=b"")
    with pytest.raises(ValueError, match="iter_time_ms"):
        datamover.convert(src, dst, dst_format="luks", passphrase=PASS, iter_time_ms=0)
    with pytest.raises(ValueError, match='unknown encryption "aes"'):
        datamover.convert(src, dst, dst_format="qcow2", encryption="aes", passphrase=PASS)  # type: ignore[arg-type]
    assert not dst.exists()


def _hostile(tmp_path: Path, name: str, at: int, data: bytes) -> Path:
    good = tmp_path / "good.luks"
    if not good.exists():
        datamover.luks_format(_sized(good, 3 * MiB), PASS, iter_time_ms=5)
    p = tmp_path / name
    b = bytearray(good.read_bytes())
    b[at : at + len(data)] = data
    p.write_bytes(b)
    return p


def _sized(p: Path, size: int) -> Path:
    with p.open("wb") as f:
        f.truncate(size)
    return p


@pytest.mark.parametrize(
    ("at", "data", "message"),
    [
        (164, (0xFFFFFFFF).to_bytes(4, "big"), "master key digest asks for 4294967295 PBKDF2"),
        (212, (0xFFFFFFFF).to_bytes(4, "big"), "key slot 0 asks for 4294967295 PBKDF2 iterations"),
        (248, (100_000).to_bytes(4, "big"), "key slot 0's key material (bytes 51200000..51456000)"),
        (8, b"twofish\0", 'unsupported LUKS cipher "twofish-xts-plain64"'),
        (72, b"sha512\0", 'unsupported LUKS hash "sha512"'),
        (6, b"\0\2", "LUKS2 headers are not supported"),
        (104, (1 << 20).to_bytes(4, "big"), "payload offset 536870912 lies past the end"),
    ],
)
def test_hostile_headers_are_format_errors(
    tmp_path: Path, at: int, data: bytes, message: str
) -> None:
    p = _hostile(tmp_path, "bad.luks", at, data)
    started = time.monotonic()
    for call in (
        lambda: datamover.info(p, src_format="luks"),
        lambda: datamover.convert(p, tmp_path / "o", src_format="luks", src_passphrase=PASS),
    ):
        with pytest.raises(datamover.FormatError, match=re.escape(message)) as e:
            call()
        assert not isinstance(e.value, datamover.BadPassphrase)
        assert e.value.path == str(p)
    assert time.monotonic() - started < 10


def test_truncated_and_foreign_volumes(tmp_path: Path) -> None:
    good = tmp_path / "good.luks"
    datamover.luks_format(_sized(good, 3 * MiB), PASS, iter_time_ms=5)
    short = tmp_path / "short.luks"
    short.write_bytes(good.read_bytes()[:100])
    with pytest.raises(datamover.FormatError, match=r"too short \(100 bytes\)"):
        datamover.info(short, src_format="luks")
    cut = tmp_path / "cut.luks"
    cut.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(datamover.FormatError, match="lies past the end of the volume"):
        datamover.info(cut, src_format="luks")
    plain = plain_source(tmp_path, size=MiB)
    with pytest.raises(datamover.FormatError, match="not a LUKS volume"):
        datamover.info(plain, src_format="luks")
    # A raw volume holding a LUKS container is raw unless named (never probed).
    assert datamover.info(good).format == "raw"


def test_hostile_qcow2_encryption_extension(tmp_path: Path) -> None:
    src = plain_source(tmp_path, size=MiB)
    q = tmp_path / "q.qcow2"
    datamover.convert(
        src, q, dst_format="qcow2", encryption="luks", passphrase=PASS, iter_time_ms=5
    )
    b = bytearray(q.read_bytes())
    assert b[112:116] == bytes.fromhex("0537be77")
    b[128:136] = (1 << 40).to_bytes(8, "big")  # length of the LUKS header area
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b)
    with pytest.raises(datamover.FormatError, match="lies past the end of the file"):
        datamover.info(bad)


# ------------------------------------------------------------------ jobs and CLI


def test_progress_and_cancel_of_an_encrypted_copy(tmp_path: Path) -> None:
    src = tmp_path / "big.raw"
    with src.open("wb") as f:
        f.truncate(2048 * MiB)  # all zeros: every byte is still encrypted and written
    dst = tmp_path / "out.luks"
    job = datamover.start_convert(
        src, dst, dst_format="luks", passphrase=PASS, iter_time_ms=5, threads=1
    )
    deadline = time.monotonic() + 20
    while job.progress().done_bytes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    p = job.progress()
    assert p.total_bytes == 2048 * MiB and 0 < p.done_bytes < p.total_bytes
    job.cancel()
    with pytest.raises(datamover.Cancelled):
        job.wait(timeout=30)
    assert not dst.exists()
    assert not [x for x in tmp_path.iterdir() if "spcs-partial" in x.name]


def test_cli_convert_and_info(tmp_path: Path) -> None:
    src = plain_source(tmp_path, size=4 * MiB)
    key = tmp_path / "key"
    key.write_bytes(PASS)
    spcs = [sys.executable, "-m", "spcs.cli"]
    vol = tmp_path / "cli.luks"
    r = subprocess.run(
        [*spcs, "convert", "-O", "luks", "-o", "iter-time=5", "--passphrase-file", key, src, vol],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert_identical(luks_opts(vol), src)
    q = tmp_path / "cli.qcow2"
    r = subprocess.run(
        [
            *(*spcs, "convert", "-f", "luks", "--src-passphrase-file", key, "-O", "qcow2"),
            *("-o", "encrypt.format=luks,encrypt.iter-time=5", "--passphrase-file", key, vol, q),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert_identical(qcow2_opts(q), src)
    r = subprocess.run([*spcs, "info", "--json", q], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["encryption"], doc["payload_offset"]) == ("luks", None)
    r = subprocess.run([*spcs, "info", "-f", "luks", vol], capture_output=True, text=True)
    assert "encrypted: yes" in r.stdout and "payload offset: 2097152" in r.stdout
    bad = tmp_path / "bad-key"
    bad.write_bytes(b"nope")
    r = subprocess.run(
        [*spcs, "convert", "-f", "luks", "--src-passphrase-file", bad, vol, tmp_path / "o.raw"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "no LUKS key slot opened" in r.stderr
    assert "nope" not in r.stderr and PASS.decode() not in r.stderr
