"""Direct download: images streamed from real HTTP servers on loopback (our misbehaving
`Origin` and nginx with TLS) into files and loop devices, bytes judged by qemu-img."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spcs import datamover

from .conftest import MiB, assert_same, qemu_img, requires_qemu, write_pattern
from .origin import Nginx, Origin, make_ca_and_cert, start_origin, stop_origin

pytestmark = requires_qemu

SIZE = 24 * MiB
IMAGES = ["raw", "qcow2", "zlib", "zstd"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`raw` (hex text, random bytes, zeros, holes) and qcow2 copies of it: plain, zlib,
    zstd with 4 KiB clusters (its L2 tables lie past the first 4 MiB: range requests) and
    2 MiB clusters; qcow2 images with a backing file, encryption, an external data file."""
    d = tmp_path_factory.mktemp("images")
    raw = d / "raw"
    write_pattern(raw, SIZE, seed=11)
    qemu_img("convert", "-O", "qcow2", raw, d / "qcow2")
    qemu_img("convert", "-c", "-O", "qcow2", raw, d / "zlib")
    opts = "compression_type=zstd,cluster_size=4096"
    qemu_img("convert", "-c", "-O", "qcow2", "-o", opts, raw, d / "zstd")
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", raw, d / "overlay")
    with (d / "random").open("wb") as f:
        f.write(os.urandom(40 * MiB))
    (d / "notqcow2").write_bytes(b"QFI\xfb" + b"\xff" * 8192)
    # For url_info: a first cluster larger than its probe, and what a download refuses.
    qemu_img("convert", "-O", "qcow2", "-o", "cluster_size=2M", raw, d / "bigcluster")
    secret = ["--object", "secret,id=s0,data=pw"]
    enc = "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10"
    qemu_img("create", "-f", "qcow2", *secret, "-o", enc, d / "encrypted", "1M")
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={d / 'data.raw'}", d / "datafile", "1M")
    return d


@pytest.fixture
def origin(images: Path) -> Iterator[Origin]:
    srv = start_origin(images)
    yield srv
    stop_origin(srv)


@pytest.fixture(scope="module")
def nginx(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.skip("needs nginx (Debian package nginx-light)")
    n = Nginx(images, tmp_path_factory.mktemp("nginx"))
    yield n
    n.stop()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def digest(path: Path, algo: str = "sha256") -> str:
    return hashlib.new(algo, path.read_bytes()).hexdigest()


def fails(exc: type[Exception], url: str, out: Path, **kw: object) -> Exception:
    """Downloads into a new file in `out`, expecting `exc`; nothing may be left behind."""
    with pytest.raises(exc) as e:
        datamover.download(url, out / "dst", **kw)  # type: ignore[arg-type]
    assert list(out.iterdir()) == [], "nothing may be left at the destination"
    return e.value


def device(loop_over: object, tmp_path: Path, size: int = SIZE) -> Path:
    """A loop device over a file full of 0xee (old data the download must zero)."""
    backing = tmp_path / "volume"
    with backing.open("wb") as f:
        for _ in range(size // MiB):
            f.write(b"\xee" * MiB)
    return loop_over(backing)  # type: ignore[operator,no-any-return]


# -- the bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
def test_images_to_a_new_file(origin: Origin, images: Path, out: Path, image: str) -> None:
    src = images / image
    want = digest(src)
    stats = datamover.download(
        f"{origin.url}/f/{image}", out / "t.raw", checksum=("sha256", want.upper())
    )
    assert_same(images / "raw", out / "t.raw")
    assert (out / "t.raw").stat().st_size == SIZE
    assert stats.checksum == want
    assert stats.virtual_size == SIZE
    assert stats.bytes_read == src.stat().st_size
    assert [p.name for p in out.iterdir()] == ["t.raw"]
    if image == "zstd":
        assert origin.ranged(), "its tables past the head come with range requests"


@pytest.mark.parametrize("image", IMAGES)
def test_images_to_a_loop_device(
    origin: Origin, images: Path, tmp_path: Path, loop_over: object, image: str
) -> None:
    dev = device(loop_over, tmp_path)
    stats = datamover.download(f"{origin.url}/f/{image}", dev, threads=2)
    assert_same(images / "raw", dev)
    assert stats.virtual_size == SIZE


def test_target_is_zero_skips_the_zeros(
    origin: Origin, images: Path, tmp_path: Path, loop_over: object
) -> None:
    backing = tmp_path / "zeroed"
    backing.write_bytes(bytes(SIZE))
    dev = loop_over(backing)  # type: ignore[operator]
    stats = datamover.download(f"{origin.url}/f/zstd", dev, target_is_zero=True)
    assert_same(images / "raw", dev)
    assert stats.bytes_skipped > 0


def test_nginx_plain_http_qcow2_to_a_loop_device(
    nginx: Nginx, images: Path, tmp_path: Path, loop_over: object
) -> None:
    dev = device(loop_over, tmp_path)
    stats = datamover.download(
        f"{nginx.http}/zstd", dev, checksum=("md5", digest(images / "zstd", "md5"))
    )
    assert_same(images / "raw", dev)
    assert stats.checksum == digest(images / "zstd", "md5")


def test_too_small_a_device_is_refused_before_any_write(
    origin: Origin, tmp_path: Path, loop_over: object
) -> None:
    dev = device(loop_over, tmp_path, size=SIZE // 2)
    with pytest.raises(datamover.TargetTooSmall):
        datamover.download(f"{origin.url}/f/qcow2", dev)
    with dev.open("rb") as f:
        assert f.read(MiB) == b"\xee" * MiB


# -- checksums ---------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["md5", "sha1", "sha256", "sha512"])
def test_each_checksum_right_and_wrong(origin: Origin, images: Path, out: Path, algo: str) -> None:
    want = digest(images / "zlib", algo)
    url = f"{origin.url}/f/zlib"
    stats = datamover.download(url, out / "ok", checksum=(algo, want))  # type: ignore[arg-type]
    assert stats.checksum == want
    (out / "ok").unlink()
    wrong = ("0" if want[0] != "0" else "1") + want[1:]
    e = fails(datamover.FormatError, url, out, checksum=(algo, wrong))
    assert url in str(e) and wrong in str(e) and want in str(e), str(e)


def test_a_wrong_checksum_on_a_device_is_partial(
    origin: Origin, tmp_path: Path, loop_over: object
) -> None:
    dev = device(loop_over, tmp_path)
    with pytest.raises(datamover.FormatError) as e:
        datamover.download(f"{origin.url}/f/raw", dev, checksum=("sha1", "0" * 40))
    assert e.value.target_partial  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "checksum",
    [("crc32", "0" * 8), ("md5", "0" * 31), ("sha256", "z" * 64)],
)
def test_bad_checksum_arguments(origin: Origin, out: Path, checksum: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        datamover.start_download(f"{origin.url}/f/raw", out / "x", checksum=checksum)  # type: ignore[arg-type]
    assert list(out.iterdir()) == []


# -- HTTP --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "words"),
    [("f/missing", "404"), ("status/403", "403"), ("status/500", "500"), ("status/418", "418")],
)
def test_http_errors(origin: Origin, out: Path, path: str, words: str) -> None:
    url = f"{origin.url}/{path}"
    e = fails(datamover.SourceError, url, out)
    assert words in str(e) and url in str(e), str(e)
    assert e.errno is None  # type: ignore[attr-defined]


def test_redirects_followed_up_to_the_limit(origin: Origin, images: Path, out: Path) -> None:
    datamover.download(f"{origin.url}/redirect/3/raw", out / "t", max_redirects=5)
    assert_same(images / "raw", out / "t")
    (out / "t").unlink()
    e = fails(datamover.SourceError, f"{origin.url}/redirect/3/raw", out, max_redirects=2)
    assert "redirects" in str(e)
    e = fails(datamover.SourceError, f"{origin.url}/redirect/1/raw", out, max_redirects=0)
    assert "not followed" in str(e)


def test_a_redirect_loop(origin: Origin, out: Path) -> None:
    url = f"{origin.url}/loop/x"
    e = fails(datamover.SourceError, url, out)
    assert "more than 5 redirects" in str(e) and url in str(e)


def test_tls_with_the_right_ca(nginx: Nginx, images: Path, out: Path) -> None:
    for image in ("raw", "zlib"):
        datamover.download(f"{nginx.https}/{image}", out / image, ca_file=nginx.ca)
        assert_same(images / "raw", out / image)


def test_tls_verification_failing(nginx: Nginx, out: Path, tmp_path: Path) -> None:
    other_ca, _, _ = make_ca_and_cert(tmp_path, "other")
    for kw in ({"ca_file": other_ca}, {}):
        e = fails(datamover.SourceError, f"{nginx.https}/raw", out, **kw)
        assert "certificate verification failed" in str(e), str(e)


def test_a_ca_file_that_is_not_pem(origin: Origin, out: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="PEM"):
        datamover.download(f"{origin.url}/f/raw", out / "x", ca_file=tmp_path / "bad.pem")


def test_max_bytes(origin: Origin, out: Path) -> None:
    e = fails(datamover.SourceError, f"{origin.url}/f/raw", out, max_bytes=SIZE - 1)
    assert "max_bytes" in str(e)
    datamover.download(f"{origin.url}/f/raw", out / "ok", max_bytes=SIZE)


def test_truncated_body(origin: Origin, out: Path) -> None:
    e = fails(datamover.SourceError, f"{origin.url}/short/raw", out)
    assert f"of {SIZE} bytes" in str(e) and "gave up" in str(e), str(e)


def test_not_an_image(origin: Origin, out: Path) -> None:
    e = fails(datamover.FormatError, f"{origin.url}/f/raw", out, src_format="qcow2")
    assert "magic" in str(e)
    fails(datamover.FormatError, f"{origin.url}/f/notqcow2", out)
    e = fails(datamover.FormatError, f"{origin.url}/f/overlay", out)
    assert "backing file" in str(e)


def test_stall(origin: Origin, out: Path) -> None:
    t = time.monotonic()
    e = fails(datamover.SourceError, f"{origin.url}/stall/raw", out, stall_timeout=0.5)
    assert "stall_timeout" in str(e)
    assert time.monotonic() - t < 5


@pytest.mark.parametrize("image", ["raw", "zstd"])
def test_drop_and_resume(origin: Origin, images: Path, out: Path, image: str) -> None:
    want = digest(images / image, "sha512")
    stats = datamover.download(f"{origin.url}/drop/{image}", out / "t", checksum=("sha512", want))
    assert stats.checksum == want
    assert_same(images / "raw", out / "t")
    assert any(r.startswith("bytes=") and r.endswith("-") for r in origin.ranged()), origin.hits


def test_resume_refused(origin: Origin, out: Path) -> None:
    e = fails(datamover.SourceError, f"{origin.url}/drop-norange/raw", out)
    assert "ignores Range" in str(e), str(e)
    e = fails(datamover.SourceError, f"{origin.url}/drop-changed/raw", out)
    assert "changed" in str(e), str(e)


def test_credentials_never_appear(origin: Origin, images: Path, out: Path) -> None:
    base = origin.url.replace("http://", "http://user:s3cret@")
    datamover.download(f"{base}/auth/raw", out / "t")
    assert_same(images / "raw", out / "t")
    (out / "t").unlink()
    e = fails(datamover.SourceError, f"{base}/auth/missing?token=s3cret", out)
    assert "s3cret" not in str(e) and "404" in str(e), str(e)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "127.0.0.1/x", "http:///x"])
def test_bad_urls(url: str, out: Path) -> None:
    with pytest.raises(ValueError):
        datamover.download(url, out / "x")


# -- jobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["slow", "stall"])
def test_cancel_is_prompt_and_leaves_nothing(origin: Origin, out: Path, mode: str) -> None:
    job = datamover.start_download(f"{origin.url}/{mode}/random", out / "t")
    time.sleep(0.5)
    p = job.progress()
    assert p.total_bytes == 40 * MiB and 0 < p.done_bytes < p.total_bytes
    t = time.monotonic()
    job.cancel()
    with pytest.raises(datamover.Cancelled):
        job.wait(timeout=5)
    assert time.monotonic() - t < 1.0
    assert list(out.iterdir()) == []


def test_progress_and_wait(origin: Origin, images: Path, out: Path) -> None:
    job = datamover.start_download(f"{origin.url}/f/random", out / "t")
    stats = job.wait(timeout=60)
    assert stats is not None and job.done
    assert job.progress().done_bytes == 40 * MiB
    assert (out / "t").read_bytes() == (images / "random").read_bytes()


# -- url_info ----------------------------------------------------------------------------

#: The most of the file `url_info` asks for in its first request.
PROBE = 64 << 10
INFO_FIELDS = (
    "format",
    "virtual_size",
    "cluster_size",
    "compression",
    "backing_file",
    "backing_format",
    "compat",
    "extended_l2",
    "dirty",
    "checksum",
    "encryption",
    "payload_offset",
)


def assert_describes(i: datamover.ImageInfo, path: Path) -> None:
    """`i` says what `qemu-img info` and `datamover.info` say of `path`; its actual_size is
    the file's length (the Content-Length)."""
    q = json.loads(qemu_img("info", "--output=json", path).stdout)
    assert (i.format, i.virtual_size) == (q["format"], q["virtual-size"])
    assert i.cluster_size == q.get("cluster-size")
    if q["format"] == "qcow2":
        data = q["format-specific"]["data"]
        assert (i.compression, i.compat) == (data["compression-type"], data["compat"])
    assert i.actual_size == path.stat().st_size
    local = datamover.info(path)
    assert {f: getattr(i, f) for f in INFO_FIELDS} == {f: getattr(local, f) for f in INFO_FIELDS}


def raised(exc: type[Exception], call: Callable[[], object]) -> Exception:
    with pytest.raises(exc) as e:
        call()
    return e.value


def same_error_as_download(exc: type[Exception], url: str, out: Path, **kw: object) -> str:
    """`url_info(url)` raises what `download(url)` raises, word for word; returns it."""
    d = fails(exc, url, out, **kw)
    i = raised(exc, lambda: datamover.url_info(url, **kw))  # type: ignore[arg-type]
    assert str(i) == str(d)
    assert (i.path, i.errno) == (d.path, d.errno)  # type: ignore[attr-defined]
    return str(i)


@pytest.mark.parametrize("image", ["raw", "qcow2", "zlib", "zstd", "bigcluster"])
def test_url_info_reads_only_the_start(origin: Origin, images: Path, image: str) -> None:
    path = images / image
    assert_describes(datamover.url_info(f"{origin.url}/f/{image}"), path)
    ranges = [r for _, r in origin.hits]
    if image == "bigcluster":
        # The rest of the 2 MiB first cluster, with a range request more.
        assert ranges == [f"bytes=0-{PROBE - 1}", f"bytes={PROBE}-{2 * MiB - 1}"]
        assert origin.served == 2 * MiB
    else:
        assert ranges == [f"bytes=0-{PROBE - 1}"]
        assert origin.served == PROBE
    assert origin.served < path.stat().st_size // 8


def test_url_info_from_a_server_ignoring_ranges(origin: Origin, images: Path) -> None:
    """A 200 to the range request: the first bytes are read, the connection dropped."""
    bodies = 0
    for image in ("random", "qcow2"):
        assert_describes(datamover.url_info(f"{origin.url}/norange/{image}"), images / image)
        bodies += (images / image).stat().st_size
    # What the kernel took into socket buffers before the drop, never the bodies.
    assert origin.served < bodies // 4


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("image", ["raw", "qcow2", "zlib"])
def test_url_info_from_nginx(nginx: Nginx, images: Path, scheme: str, image: str) -> None:
    base = nginx.https if scheme == "https" else nginx.http
    before = len(nginx.sent())
    assert_describes(datamover.url_info(f"{base}/{image}", ca_file=nginx.ca), images / image)
    deadline = time.monotonic() + 5
    while len(nginx.sent()) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert nginx.sent()[before:] == [PROBE], "one range request of the first 64 KiB"


def test_url_info_src_format(origin: Origin, images: Path, out: Path) -> None:
    i = datamover.url_info(f"{origin.url}/f/zlib", src_format="raw")
    size = (images / "zlib").stat().st_size
    assert (i.format, i.virtual_size, i.actual_size, i.cluster_size) == ("raw", size, size, None)
    url = f"{origin.url}/f/raw"
    assert "magic" in same_error_as_download(datamover.FormatError, url, out, src_format="qcow2")
    with pytest.raises(ValueError):
        datamover.url_info(f"{origin.url}/f/raw", src_format="luks")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("image", "words"),
    [("overlay", "backing file"), ("encrypted", "encrypted"), ("datafile", "external data file")],
)
def test_url_info_refuses_what_download_refuses(
    origin: Origin, out: Path, image: str, words: str
) -> None:
    e = same_error_as_download(datamover.FormatError, f"{origin.url}/f/{image}", out)
    assert words in e, e


@pytest.mark.parametrize("path", ["f/missing", "status/403", "status/500"])
def test_url_info_http_errors(origin: Origin, out: Path, path: str) -> None:
    url = f"{origin.url}/{path}"
    e = same_error_as_download(datamover.SourceError, url, out)
    assert path.rpartition("/")[2].replace("missing", "404") in e and url in e, e


def test_url_info_credentials_and_redirects(origin: Origin, images: Path, out: Path) -> None:
    base = origin.url.replace("http://", "http://user:s3cret@")
    assert_describes(datamover.url_info(f"{base}/auth/qcow2"), images / "qcow2")
    e = same_error_as_download(datamover.SourceError, f"{base}/auth/missing?token=s3cret", out)
    assert "s3cret" not in e and "404" in e, e
    assert_describes(datamover.url_info(f"{origin.url}/redirect/3/zlib"), images / "zlib")
    e = same_error_as_download(
        datamover.SourceError, f"{origin.url}/redirect/3/raw", out, max_redirects=2
    )
    assert "more than 2 redirects" in e, e


def test_url_info_tls(nginx: Nginx, images: Path, out: Path, tmp_path: Path) -> None:
    other_ca, _, _ = make_ca_and_cert(tmp_path, "other")
    for kw in ({"ca_file": other_ca}, {}):
        e = same_error_as_download(datamover.SourceError, f"{nginx.https}/zlib", out, **kw)
        assert "certificate verification failed" in e, e


def test_url_info_max_bytes(origin: Origin, images: Path, out: Path) -> None:
    size = (images / "zlib").stat().st_size
    url = f"{origin.url}/f/zlib"
    e = same_error_as_download(datamover.SourceError, url, out, max_bytes=size - 1)
    assert f"the file is {size} bytes, more than max_bytes ({size - 1})" in e, e
    assert datamover.url_info(url, max_bytes=size).virtual_size == SIZE


def test_url_info_stall_and_the_gil(origin: Origin) -> None:
    """A server that never answers: stall_timeout, with Python free to run meanwhile."""
    got: list[Exception] = []

    def probe() -> None:
        try:
            datamover.url_info(f"{origin.url}/mute/raw", stall_timeout=1.0)
        except datamover.SourceError as e:
            got.append(e)

    t = time.monotonic()
    th = threading.Thread(target=probe)
    th.start()
    ticks = 0
    while th.is_alive():
        ticks += 1
        time.sleep(0.01)
    assert time.monotonic() - t < 5
    assert len(got) == 1 and "stall_timeout" in str(got[0]), got
    assert ticks > 30, "the GIL is released while url_info waits"
    # Only the first bytes are read: a body that stalls halfway does not matter.
    assert datamover.url_info(f"{origin.url}/stall/raw", stall_timeout=1.0).virtual_size == SIZE
