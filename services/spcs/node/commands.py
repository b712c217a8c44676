"""The StorPool agent commands: every copy between StorPool and secondary storage on this host.

Each command is a long-running job (see spcs.common.operations) that holds what it reads
(shared) and writes (exclusive) as `spcs.common.holds` declares, attaches what it needs (the
first job using an object attaches it, the last one detaches it, and only if it was not
attached before: a volume a running VM uses stays attached), and lets the data mover write the
destination atomically: a file appears under its final name only once it is complete. Images
are read confined to their secondary store: a backing file outside it is refused.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from google.longrunning import operations_pb2
from google.protobuf.message import Message

from spcs import datamover
from spcs.common import errors, holds, secrets
from spcs.common.operations import JobContext, OperationRegistry, Runner, fingerprint
from spcs.common.secrets import LUKS_HEADER_BYTES, Passphrase
from spcs.node import direct_download, mover, template_properties
from spcs.node.adaptor import Adaptor
from spcs.node.partials import WriteJournal, partials_of
from spcs.node.secondary import SecondaryStorage, Store, check_relative
from spcs.storpool import names
from spcs.storpool.records import StorPoolObject
from spcs.v1 import node_pb2, types_pb2

log = logging.getLogger(__name__)

FORMATS: dict[types_pb2.ImageFormat.ValueType, datamover.Format] = {
    types_pb2.IMAGE_FORMAT_RAW: "raw",
    types_pb2.IMAGE_FORMAT_QCOW2: "qcow2",
}
COMPRESSIONS: dict[types_pb2.Compression.ValueType, datamover.Compression] = {
    types_pb2.COMPRESSION_ZLIB: "zlib",
    types_pb2.COMPRESSION_ZSTD: "zstd",
}
IMAGE_SUFFIXES = (".qcow2", ".raw", ".img")
SECTOR = 512
LUKS_MAGIC = b"LUKS\xba\xbe"
DEFAULT_ITER_TIME_MS = 2000  # PBKDF2 time per LUKS key slot, as cryptsetup and qemu

# The requests of the commands that run as jobs.
JobRequest = (
    node_pb2.DownloadTemplateRequest
    | node_pb2.DownloadVolumeRequest
    | node_pb2.NodeBackupSnapshotRequest
    | node_pb2.CopyVolumeToSecondaryRequest
    | node_pb2.BackupTemplateRequest
    | node_pb2.EncryptVolumeRequest
    | node_pb2.DirectDownloadTemplateRequest
)
_Request = TypeVar("_Request", bound=Message)


def output_format(value: types_pb2.ImageFormat.ValueType) -> datamover.Format:
    return FORMATS.get(value, "qcow2")


def compression(
    fmt: datamover.Format, value: types_pb2.Compression.ValueType
) -> datamover.Compression | None:
    algorithm = COMPRESSIONS.get(value)
    if algorithm and fmt != "qcow2":
        raise errors.InvalidArgument("compression needs QCOW2 output; RAW cannot be compressed")
    return algorithm


def _arguments(request: _Request) -> _Request:
    """A copy of the request without its operation_id: what its fingerprint covers."""
    args = type(request)()
    args.CopyFrom(request)
    args.ClearField("operation_id")
    return args


def _round_up(size: int) -> int:
    return (size + SECTOR - 1) // SECTOR * SECTOR


def remove_stale_partials(target: Path) -> None:
    """Temp files a killed copy left next to `target` (the caller holds the target)."""
    for stale in partials_of(target):
        log.info("removing %s left by an interrupted copy", stale)
        stale.unlink(missing_ok=True)


def take_key(encryption: node_pb2.Encryption, field: str) -> Passphrase | None:
    """The passphrase of an `Encryption` (moved out of the request); None when it is unset."""
    if not encryption.format and not encryption.passphrase:
        return None
    if encryption.format != types_pb2.ENCRYPTION_FORMAT_LUKS:
        raise errors.InvalidArgument(f"{field}.format must be ENCRYPTION_FORMAT_LUKS")
    key = secrets.take(encryption, "passphrase")
    if key is None:
        raise errors.InvalidArgument(f"{field}.passphrase is required with LUKS encryption")
    return key


def is_luks(path: Path) -> bool:
    """Whether the file starts with a LUKS header (a raw file is read as LUKS only then)."""
    with path.open("rb") as handle:
        return handle.read(len(LUKS_MAGIC)) == LUKS_MAGIC


def _settled(keys: mover.Keys, info: datamover.ImageInfo, what: str) -> mover.Keys:
    """The keys of a copy into a volume once the image is known: a plain image needs none
    to read; an encrypted one needs its passphrase and stays encrypted on the volume."""
    if info.encryption and keys.source is None:
        raise errors.FailedPrecondition(
            f"{what}: the image is encrypted ({info.encryption}); pass its passphrase "
            "(source_passphrase)"
        )
    if not info.encryption:
        return replace(keys, source=None)
    if keys.target is None:
        return replace(keys, target=keys.source)  # never decrypted on the way in
    return keys


def _encryption_enum(encrypted: bool) -> types_pb2.EncryptionFormat.ValueType:
    if encrypted:
        return types_pb2.ENCRYPTION_FORMAT_LUKS
    return types_pb2.ENCRYPTION_FORMAT_UNSPECIFIED


def file_md5(path: Path) -> str:
    """The checksum CloudStack records for template files (plain hex = MD5)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _Use:
    """The jobs of this node using one StorPool object at the same time (shared readers)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    ready: bool = False  # attached for these jobs
    detach: bool = False  # attached by them, not before: the last one detaches


class AgentCommands:
    def __init__(
        self,
        adaptor: Adaptor,
        stores: SecondaryStorage,
        registry: OperationRegistry,
        journal: WriteJournal,
        iter_time_ms: int = DEFAULT_ITER_TIME_MS,
        allowed_urls: tuple[direct_download.AllowedUrl, ...] = (),
        fetch: mover.Fetch | None = None,
    ) -> None:
        self.adaptor = adaptor
        self.stores = stores
        self.registry = registry
        self.journal = journal
        self.iter_time_ms = iter_time_ms
        self.allowed_urls = allowed_urls
        self.fetch = fetch or mover.Fetch()
        self._uses_guard = threading.Lock()
        self._uses: dict[str, _Use] = {}

    # ---- shared pieces -----------------------------------------------------------------

    @contextmanager
    def _attached(self, ctx: JobContext, obj: StorPoolObject, *, read_only: bool) -> Iterator[Path]:
        """Attach for the copy; the last job using the object detaches it, unless it was
        attached here before the first one started."""
        with self._uses_guard:
            use = self._uses.setdefault(obj.global_id, _Use())
            use.users += 1
        try:
            with use.lock:
                if not use.ready:
                    use.detach = self._attach_for_copy(ctx, obj, read_only)
                    use.ready = True
            yield self.adaptor.device(obj)
        finally:
            with use.lock:
                with self._uses_guard:
                    use.users -= 1
                    last = use.users == 0
                if last and use.ready:
                    use.ready = False
                    if use.detach:
                        self._detach_after_copy(ctx, obj)
                with self._uses_guard:
                    if use.users == 0:
                        self._uses.pop(obj.global_id, None)

    def _attach_for_copy(self, ctx: JobContext, obj: StorPoolObject, read_only: bool) -> bool:
        """Attach (or find attached) `obj`; True when this call attached it."""
        was_attached = self.adaptor.attachment(obj) is not None
        ctx.stage("attaching")
        mode = types_pb2.ACCESS_MODE_READ_ONLY if read_only else types_pb2.ACCESS_MODE_READ_WRITE
        if was_attached and read_only:
            self.adaptor.wait_device(obj)  # any attachment can be read
        else:
            self.adaptor.attach(obj, mode)
        return not was_attached

    def _detach_after_copy(self, ctx: JobContext, obj: StorPoolObject) -> None:
        ctx.stage("detaching")
        try:
            self.adaptor.detach(obj, force_allowed=True)
        except errors.SpcsError as error:
            log.warning("could not detach %s after the copy: %s", obj.ref, error.message)

    def _start(
        self, request: JobRequest, kind: str, target: str, runner: Runner, **objects: str
    ) -> operations_pb2.Operation:
        return self.registry.start(
            request.operation_id,
            kind=f"spcs.v1.AgentCommands/{kind}",
            fingerprint=fingerprint(_arguments(request)),
            target=target,
            runner=runner,
            holds=holds.holds(kind, **objects),
        )

    @staticmethod
    def _device(obj: StorPoolObject) -> str:
        return holds.storpool_object(obj.global_id)

    # ---- secondary → StorPool ------------------------------------------------------------

    def download_template(
        self, request: node_pb2.DownloadTemplateRequest
    ) -> operations_pb2.Operation:
        check_relative(request.source_path, "source_path")
        if request.source_file_name:
            check_relative(request.source_file_name, "source_file_name")
        self.stores.check_allowed(request.source.url)
        volume = self.adaptor.lookup(
            request.destination_path, node_pb2.DISK_KIND_VOLUME, "destination_path"
        )

        def run(ctx: JobContext) -> node_pb2.DownloadResult:
            with self.stores.open(request.source.url) as store:
                image = self._pick_image(store, request.source_path, request.source_file_name)
                return self._download(
                    ctx,
                    store,
                    image,
                    request.source_format,
                    volume,
                    request.target_is_zero,
                    # a template's volume becomes exactly the image's size (it may shrink)
                    resize="exact" if request.resize_to_virtual_size else "",
                    keys=mover.Keys(),
                )

        return self._start(
            request, "DownloadTemplate", volume.ref, run, destination=self._device(volume)
        )

    def download_volume(self, request: node_pb2.DownloadVolumeRequest) -> operations_pb2.Operation:
        check_relative(request.source_path, "source_path")
        self.stores.check_allowed(request.source.url)
        volume = self.adaptor.lookup(
            request.destination_path, node_pb2.DISK_KIND_VOLUME, "destination_path"
        )
        source_key = secrets.take(request, "source_passphrase")
        target_key = take_key(request.encryption, "encryption")

        def run(ctx: JobContext) -> node_pb2.DownloadResult:
            with (
                secrets.held(source_key, target_key),
                self.stores.open(request.source.url) as store,
            ):
                image = store.resolve(request.source_path, "source_path")
                if not image.is_file():
                    raise errors.NotFound(
                        f"{request.source_path} does not exist in {request.source.url}"
                    )
                keys = mover.Keys(
                    source_key,
                    target_key,
                    source_luks=source_key is not None
                    and request.source_format != types_pb2.IMAGE_FORMAT_QCOW2
                    and is_luks(image),
                    iter_time_ms=self.iter_time_ms,
                )
                return self._download(
                    ctx,
                    store,
                    image,
                    request.source_format,
                    volume,
                    request.target_is_zero,
                    # a volume keeps its (offering) size when the image is smaller
                    resize="grow" if request.resize_to_virtual_size else "",
                    keys=keys,
                )

        return self._start(
            request, "DownloadVolume", volume.ref, run, destination=self._device(volume)
        )

    def direct_download_template(
        self, request: node_pb2.DirectDownloadTemplateRequest
    ) -> operations_pb2.Operation:
        """An image at a URL into a volume set to its virtual size (createTemplateFrom-
        DirectDownloadFile), streamed and checksummed in one pass."""
        url = request.source.url
        direct_download.check_allowed(url, self.allowed_urls)
        checksum = direct_download.parse_checksum(request.source.checksum)
        volume = self.adaptor.lookup(
            request.destination_path, node_pb2.DISK_KIND_VOLUME, "destination_path"
        )
        src_format = FORMATS.get(request.source_format)

        def run(ctx: JobContext) -> node_pb2.DownloadResult:
            what = f"download the template into {volume.ref}"
            ctx.stage("inspecting image")
            info = mover.url_info(url, what, self.fetch)
            needed = _round_up(info.virtual_size)
            size = volume.size
            if size != needed:
                ctx.stage("resizing")
                self.adaptor.set_size(volume, needed, shrink_ok=size > needed)
            with self._attached(ctx, volume, read_only=False) as device:
                stats = mover.download(
                    ctx,
                    url,
                    device,
                    what=what,
                    src_format=src_format or info.format,
                    checksum=checksum,
                    fetch=self.fetch,
                    target_is_zero=request.target_is_zero,
                )
            return node_pb2.DownloadResult(
                destination_path=names.byid_path(volume.global_id),
                virtual_size_bytes=info.virtual_size,
                bytes_written=stats.bytes_written,
                volume_size_bytes=needed,
                checksum=direct_download.shown_checksum(checksum[0], stats.checksum or "")
                if checksum
                else "",
            )

        return self._start(
            request, "DirectDownloadTemplate", volume.ref, run, destination=self._device(volume)
        )

    def _pick_image(self, store: Store, path: str, file_name: str) -> Path:
        location = store.resolve(path, "source_path")
        if location.is_file():
            return location
        if not location.is_dir():
            raise errors.NotFound(f"template {path} does not exist in {store.url}")
        if file_name:
            image = store.resolve(f"{path.rstrip('/')}/{file_name}", "source_file_name")
            if not image.is_file():
                raise errors.NotFound(f"template file {file_name} is not in {path} ({store.url})")
            return image
        candidates = sorted(
            p
            for p in location.iterdir()
            if p.is_file()
            and not p.name.startswith(".")
            and p.name != template_properties.FILE_NAME
        )
        images = [p for p in candidates if p.suffix in IMAGE_SUFFIXES] or candidates
        if len(images) != 1:
            found = ", ".join(p.name for p in images) or "none"
            raise errors.InvalidArgument(
                f"template directory {path} in {store.url} must hold exactly one image file "
                f"(found: {found}); name it in source_file_name"
            )
        return images[0]

    def _download(
        self,
        ctx: JobContext,
        store: Store,
        image: Path,
        source_format: types_pb2.ImageFormat.ValueType,
        volume: StorPoolObject,
        target_is_zero: bool,
        resize: str,
        keys: mover.Keys,
    ) -> node_pb2.DownloadResult:
        """Copy an image into a volume; `resize` is "" (the volume must fit), "grow" or
        "exact" (set to the image's virtual size; a LUKS header more when `keys.target`
        encrypts it). Backing files must be in the same store."""
        what = f"copy {image.name} into {volume.ref}"
        ctx.stage("inspecting image")
        confine = store.root.resolve()
        info = mover.image_info(
            image, what, confine_to=confine, src_format="luks" if keys.source_luks else None
        )
        keys = _settled(keys, info, what)
        fmt = FORMATS.get(source_format) or info.format
        needed = _round_up(info.virtual_size)
        if keys.target is not None:
            needed += LUKS_HEADER_BYTES
        size = volume.size
        if size < needed and not resize:
            raise errors.OutOfRange(
                f"volume {volume.ref} is {size} bytes but the image {image.name} needs "
                f"{needed}; grow the volume or ask for resize_to_virtual_size"
            )
        if (resize == "exact" and size != needed) or (resize == "grow" and size < needed):
            ctx.stage("resizing")
            self.adaptor.set_size(volume, needed, shrink_ok=size > needed)
            size = needed
        with self._attached(ctx, volume, read_only=False) as device:
            stats = mover.copy(
                ctx,
                image,
                device,
                what=what,
                src_format=fmt,
                dst_format="raw",
                target_is_zero=target_is_zero,
                confine_to=confine,
                keys=keys,
            )
        return node_pb2.DownloadResult(
            destination_path=names.byid_path(volume.global_id),
            virtual_size_bytes=info.virtual_size,
            bytes_written=stats.bytes_written,
            volume_size_bytes=size,
            encryption_format=_encryption_enum(keys.target is not None),
        )

    # ---- StorPool → secondary ------------------------------------------------------------

    def backup_snapshot(
        self, request: node_pb2.NodeBackupSnapshotRequest
    ) -> operations_pb2.Operation:
        check_relative(request.destination_path, "destination_path")
        self.stores.check_allowed(request.destination.url)
        snapshot = self.adaptor.lookup(
            request.snapshot_path, node_pb2.DISK_KIND_SNAPSHOT, "snapshot_path"
        )
        fmt = output_format(request.format)
        algorithm = compression(fmt, request.compression)
        keys = self._export_keys(request.encryption, algorithm)

        def run(ctx: JobContext) -> node_pb2.BackupResult:
            with secrets.held(keys.source), self.stores.open(request.destination.url) as store:
                return self._export(
                    ctx, snapshot, store, request.destination_path, fmt, algorithm, keys
                )

        return self._start(
            request,
            "BackupSnapshot",
            request.destination_path,
            run,
            source=self._device(snapshot),
            destination=holds.secondary_file(request.destination.url, request.destination_path),
        )

    def copy_volume_to_secondary(
        self, request: node_pb2.CopyVolumeToSecondaryRequest
    ) -> operations_pb2.Operation:
        check_relative(request.destination_dir, "destination_dir")
        self.stores.check_allowed(request.destination.url)
        source = self.adaptor.lookup(request.source.path, request.source.kind, "source.path")
        fmt = output_format(request.format)
        algorithm = compression(fmt, request.compression)
        keys = self._export_keys(request.encryption, algorithm)
        relative = f"{request.destination_dir.rstrip('/')}/{request.volume_uuid}.{fmt}"

        def run(ctx: JobContext) -> node_pb2.BackupResult:
            with secrets.held(keys.source), self.stores.open(request.destination.url) as store:
                return self._export(ctx, source, store, relative, fmt, algorithm, keys)

        return self._start(
            request,
            "CopyVolumeToSecondary",
            relative,
            run,
            source=self._device(source),
            destination=holds.secondary_file(request.destination.url, relative),
        )

    def _export_keys(
        self, encryption: node_pb2.Encryption, algorithm: datamover.Compression | None
    ) -> mover.Keys:
        """An encrypted source stays encrypted on secondary storage, with its passphrase."""
        key = take_key(encryption, "encryption")
        if key is None:
            return mover.Keys()
        if algorithm is not None:
            key.wipe()
            raise errors.InvalidArgument(
                "an encrypted backup cannot be compressed (QCOW2 encryption and compression "
                "exclude each other); ask for COMPRESSION_NONE"
            )
        return mover.Keys(key, key, source_luks=True, iter_time_ms=self.iter_time_ms)

    def _target(self, store: Store, relative: str) -> Path:
        """The destination file inside the store, its directory created."""
        parent, _, name = relative.rstrip("/").rpartition("/")
        if not name:
            raise errors.InvalidArgument(f"destination {relative!r} needs a file name")
        if parent:
            store.output_dir(parent, "destination")
        # resolved after the directory exists, so a symlink in the way cannot lead outside
        return store.resolve(relative, "destination")

    def _export(
        self,
        ctx: JobContext,
        source: StorPoolObject,
        store: Store,
        relative: str,
        fmt: datamover.Format,
        algorithm: datamover.Compression | None,
        keys: mover.Keys,
    ) -> node_pb2.BackupResult:
        target = self._target(store, relative)
        with self.journal.writing(ctx.operation_id, store.url, relative, target):
            return self._export_to(ctx, source, store, relative, target, fmt, algorithm, keys)

    def _export_to(
        self,
        ctx: JobContext,
        source: StorPoolObject,
        store: Store,
        relative: str,
        target: Path,
        fmt: datamover.Format,
        algorithm: datamover.Compression | None,
        keys: mover.Keys | None = None,
    ) -> node_pb2.BackupResult:
        remove_stale_partials(target)
        keys = keys or mover.Keys()
        with self._attached(ctx, source, read_only=True) as device:
            stats = mover.copy(
                ctx,
                device,
                target,
                what=f"copy {source.ref} to {store.url}/{relative}",
                src_format="raw",
                dst_format=fmt,
                compression=algorithm,
                overwrite=True,
                keys=keys,
            )
        return node_pb2.BackupResult(
            path=relative,
            format=_format_enum(fmt),
            virtual_size_bytes=stats.virtual_size,
            physical_size_bytes=target.stat().st_size,
            bytes_written=stats.bytes_written,
            encryption_format=_encryption_enum(keys.target is not None),
        )

    def backup_template(self, request: node_pb2.BackupTemplateRequest) -> operations_pb2.Operation:
        check_relative(request.destination_dir, "destination_dir")
        self.stores.check_allowed(request.destination.url)
        source = self.adaptor.lookup(request.source.path, request.source.kind, "source.path")
        fmt = output_format(request.format)
        algorithm = compression(fmt, request.compression)
        file_name = f"{request.template.uuid}.{template_properties.EXTENSIONS[fmt]}"
        directory_rel = request.destination_dir.strip("/")
        relative = f"{directory_rel}/{file_name}"

        def run(ctx: JobContext) -> node_pb2.TemplateResult:
            with self.stores.open(request.destination.url) as store:
                image = self._target(store, relative)
                # the image counts as written only with its template.properties beside it
                with self.journal.writing(ctx.operation_id, store.url, relative, image) as placed:
                    result = self._export_to(ctx, source, store, relative, image, fmt, algorithm)
                    placed()
                    ctx.stage("checksum")
                    checksum = file_md5(image)
                    template_properties.write(
                        image.parent,
                        template_properties.template_values(
                            unique_name=request.template.name or request.template.uuid,
                            template_id=request.template.id,
                            file_name=file_name,
                            image_format=fmt,
                            physical_size=result.physical_size_bytes,
                            virtual_size=result.virtual_size_bytes,
                            checksum=checksum,
                            description=request.template.description,
                        ),
                    )
            return node_pb2.TemplateResult(
                install_path=directory_rel,
                file_name=file_name,
                format=result.format,
                virtual_size_bytes=result.virtual_size_bytes,
                physical_size_bytes=result.physical_size_bytes,
                checksum=checksum,
                bytes_written=result.bytes_written,
            )

        return self._start(
            request,
            "BackupTemplate",
            directory_rel,
            run,
            source=self._device(source),
            destination=holds.secondary_file(request.destination.url, relative),
        )

    # ---- encryption (StorPoolSetVolumeEncryptionCommand) ------------------------------------

    def format_volume(self, request: node_pb2.FormatVolumeRequest) -> node_pb2.FormatVolumeResponse:
        """Write a LUKS header on a volume (a new DATA volume: its payload is not touched).
        Runs as a job of this node (its holds, its slot, attach and detach), waits for it and
        forgets it."""
        key = take_key(request.encryption, "encryption")
        with secrets.held(key):
            if key is None:
                raise errors.InvalidArgument("encryption is required: LUKS and the passphrase")
            volume = self.adaptor.lookup(
                request.volume_path, node_pb2.DISK_KIND_VOLUME, "volume_path"
            )
            if volume.size <= LUKS_HEADER_BYTES:
                raise errors.OutOfRange(
                    f"volume {volume.ref} is {volume.size} bytes: a LUKS volume needs more than "
                    f"its {LUKS_HEADER_BYTES}-byte header; grow it first"
                )

            def run(ctx: JobContext) -> node_pb2.FormatVolumeResponse:
                with self._attached(ctx, volume, read_only=False) as device:
                    ctx.stage("writing the LUKS header")
                    try:
                        luks_uuid = datamover.luks_format(
                            str(device), key.value, iter_time_ms=self.iter_time_ms
                        )
                    except datamover.DataMoverError as error:
                        raise mover.translate(error, f"format {volume.ref} as LUKS") from None
                return node_pb2.FormatVolumeResponse(
                    volume_path=names.byid_path(volume.global_id),
                    luks_uuid=luks_uuid,
                    payload_offset_bytes=LUKS_HEADER_BYTES,
                )

            # every call formats anew (its own job): a retry must not meet an older answer
            job_id = f"format-{volume.global_id}-{uuid.uuid4().hex[:12]}"
            op = self.registry.start(
                job_id,
                kind="spcs.v1.AgentCommands/FormatVolume",
                fingerprint=job_id,
                target=volume.ref,
                runner=run,
                holds=holds.holds("FormatVolume", destination=self._device(volume)),
            )
            done = self.registry.wait(op.name, None)
            if done.done:
                self.registry.delete(op.name)  # the answer is this call's: no record stays
        if done.HasField("error"):
            raise errors.from_status(
                errors.code_of(done.error.code), done.error.message, errors.reason_of(done.error)
            )
        result = node_pb2.FormatVolumeResponse()
        done.response.Unpack(result)
        return result

    def encrypt_volume(self, request: node_pb2.EncryptVolumeRequest) -> operations_pb2.Operation:
        """A plain StorPool snapshot (a cached template) written encrypted into a volume."""
        key = take_key(request.encryption, "encryption")
        if key is None:
            raise errors.InvalidArgument("encryption is required: LUKS and the passphrase")
        source = self.adaptor.lookup(request.source.path, request.source.kind, "source.path")
        volume = self.adaptor.lookup(
            request.destination_path, node_pb2.DISK_KIND_VOLUME, "destination_path"
        )
        keys = mover.Keys(target=key, iter_time_ms=self.iter_time_ms)

        def run(ctx: JobContext) -> node_pb2.DownloadResult:
            with (
                secrets.held(key),
                self._attached(ctx, source, read_only=True) as src,
                self._attached(ctx, volume, read_only=False) as dst,
            ):
                stats = mover.copy(
                    ctx,
                    src,
                    dst,
                    what=f"encrypt {source.ref} into {volume.ref}",
                    src_format="raw",
                    dst_format="raw",
                    keys=keys,
                )
            return node_pb2.DownloadResult(
                destination_path=names.byid_path(volume.global_id),
                virtual_size_bytes=stats.virtual_size,
                bytes_written=stats.bytes_written,
                volume_size_bytes=volume.size,
                encryption_format=types_pb2.ENCRYPTION_FORMAT_LUKS,
            )

        return self._start(
            request,
            "EncryptVolume",
            volume.ref,
            run,
            source=self._device(source),
            destination=self._device(volume),
        )


def _format_enum(fmt: str) -> types_pb2.ImageFormat.ValueType:
    return types_pb2.IMAGE_FORMAT_QCOW2 if fmt == "qcow2" else types_pb2.IMAGE_FORMAT_RAW
