"""Direct-download templates over gRPC (CloudStack's `createTemplateFromDirectDownloadFile`):
a template given by its URL is streamed by a node from a real HTTP server on loopback into a
new StorPool volume (a loop device), its checksum checked in the same pass, and cached as a
StorPool snapshot like any template; later volumes are clones. A wrong checksum, a missing file
and a URL the node does not allow leave no volume and no cache entry."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from spcs.v1 import driver_pb2, types_pb2
from tests.datamover.origin import Origin, start_origin, stop_origin
from tests.management.helpers import MIB, Mgmt, new_id, running_stack
from tests.support import pattern, patterned_raw, qemu_img


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Iterator[Origin]:
    root = tmp_path_factory.mktemp("images")
    raw = patterned_raw(
        root / "t.raw", 40 * MIB, {0: pattern(7, 3 * MIB), 20 * MIB: pattern(8, MIB)}
    )
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-c", str(raw), str(root / "t.qcow2"))
    (root / "notes.txt").write_text("not a disk image\n")
    server = start_origin(root)
    yield server
    stop_origin(server)


@pytest.fixture(scope="module")
def mgmt(tmp_path_factory, origin: Origin) -> Iterator[Mgmt]:
    allowed = ("--direct-download-url", f"{origin.url}/f/")
    with running_stack(tmp_path_factory.mktemp("dd"), node_args=allowed, loop=True) as stack:
        yield stack


def sha(path: Path, algorithm: str) -> str:
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


def template(url: str, checksum: str = "", **fields) -> types_pb2.Template:
    return types_pb2.Template(
        uuid=fields.pop("uuid", new_id("tmpl")),
        store=types_pb2.DataStore(
            direct_download=types_pb2.DirectDownloadSource(url=url, checksum=checksum)
        ),
        **fields,
    )


def root_volume(mgmt: Mgmt) -> types_pb2.Volume:
    return types_pb2.Volume(uuid=new_id("root"), size_bytes=40 * MIB, store=mgmt.primary())


def start(mgmt: Mgmt, source: types_pb2.Template, destination: types_pb2.DataObject) -> str:
    return mgmt.driver.CopyData(
        driver_pb2.CopyDataRequest(
            operation_id=new_id("op"),
            source=types_pb2.DataObject(template=source),
            destination=destination,
        )
    ).name


def test_a_root_volume_from_a_template_url(mgmt: Mgmt, origin: Origin, tmp_path: Path):
    image = origin.root / "t.qcow2"
    source = template(f"{origin.url}/f/t.qcow2", "{SHA-256}" + sha(image, "sha256"))
    first = mgmt.copy(
        types_pb2.DataObject(template=source), types_pb2.DataObject(volume=root_volume(mgmt))
    )
    assert first.kind == "template-to-volume" and first.bytes_written > 0
    volume = first.result.volume
    assert volume.size_bytes == 40 * MIB
    device = mgmt.attach_here(volume.path)
    try:
        compare = subprocess.run(
            ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(device), str(image)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert compare.returncode == 0, compare.stdout + compare.stderr
    finally:
        mgmt.detach_here(volume.path)
    cached = [
        s for s in mgmt.api.snapshots()
        if s.tags.get("uuid") == source.uuid and s.tags.get("cs") == "template"
    ]  # fmt: skip
    assert len(cached) == 1 and cached[0].size == 40 * MIB
    # the next deploy of the same template is a clone of the cache: nothing is fetched
    hits = len(origin.hits)
    second = mgmt.copy(
        types_pb2.DataObject(template=source), types_pb2.DataObject(volume=root_volume(mgmt))
    )
    assert second.bytes_written == 0 and len(origin.hits) == hits


def test_a_raw_template_cached_from_its_url_with_an_md5(mgmt: Mgmt, origin: Origin):
    raw = origin.root / "t.raw"
    source = template(f"{origin.url}/f/t.raw", sha(raw, "md5"), format=types_pb2.IMAGE_FORMAT_RAW)
    result = mgmt.copy(
        types_pb2.DataObject(template=source),
        types_pb2.DataObject(template=types_pb2.Template(uuid=source.uuid, store=mgmt.primary())),
    )
    cached = result.result.template
    assert result.kind == "template-to-primary" and cached.size_bytes == 40 * MIB
    assert mgmt.read(cached.path, snapshot=True) == raw.read_bytes()


@pytest.mark.parametrize(
    ("path", "checksum", "code", "words"),
    [
        ("t.qcow2", "{SHA-256}" + "0" * 64, grpc.StatusCode.INVALID_ARGUMENT, "checksum"),
        ("missing.qcow2", "", grpc.StatusCode.FAILED_PRECONDITION, "404"),
        ("t.qcow2", "{SHA-3}abc", grpc.StatusCode.INVALID_ARGUMENT, "source.checksum"),
    ],
    ids=["wrong-checksum", "not-found", "bad-checksum-form"],
)
def test_a_failed_download_leaves_no_volume_and_no_cache(
    mgmt: Mgmt, origin: Origin, path: str, checksum: str, code: grpc.StatusCode, words: str
):
    before = mgmt.storpool_names()
    source = template(f"{origin.url}/f/{path}", checksum)
    done = mgmt.wait(start(mgmt, source, types_pb2.DataObject(volume=root_volume(mgmt))))
    assert done.HasField("error"), done
    assert done.error.code == code.value[0], done.error
    assert words in done.error.message
    assert mgmt.storpool_names() == before


def test_a_url_the_node_does_not_allow_is_refused(mgmt: Mgmt, origin: Origin):
    before, hits = mgmt.storpool_names(), len(origin.hits)
    for url in (
        f"{origin.url}/other/t.qcow2",  # another path on the allowed server
        f"http://localhost:{origin.server_port}/f/t.qcow2",  # another host name
        f"{origin.url}/f/../status/500",
    ):
        done = mgmt.wait(start(mgmt, template(url), types_pb2.DataObject(volume=root_volume(mgmt))))
        assert done.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0], (url, done.error)
        assert "direct_download_url" in done.error.message
    assert mgmt.storpool_names() == before and len(origin.hits) == hits
