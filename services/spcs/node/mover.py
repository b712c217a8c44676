"""Running data-mover copies inside a node job: progress, cancellation, error translation.

The Rust mover runs on its own threads with the GIL released; this loop only polls its
progress every POLL_SECONDS into the operation's metadata and forwards a cancel. Data-mover
errors become domain errors here (the node's boundary with the mover), with the message the
mover wrote (it names the file and offset) and what the caller can do.
"""

from __future__ import annotations

import errno as errno_codes
from dataclasses import dataclass
from pathlib import Path

from spcs import datamover
from spcs.common import errors
from spcs.common.operations import JobContext
from spcs.common.secrets import Passphrase

POLL_SECONDS = 0.2  # how often a running copy's progress reaches its operation


@dataclass(frozen=True)
class Keys:
    """The passphrases of a copy: `source` unlocks an encrypted source (a raw LUKS volume when
    `source_luks`, else a LUKS-encrypted QCOW2); `target` encrypts the output (raw output
    becomes a LUKS volume, QCOW2 output a LUKS-encrypted QCOW2)."""

    source: Passphrase | None = None
    target: Passphrase | None = None
    source_luks: bool = False
    iter_time_ms: int = 2000


def translate(error: datamover.DataMoverError, what: str) -> errors.SpcsError:
    """The domain error for a data-mover failure while doing `what`."""
    detail = str(error)
    partial = " (the target holds partial data; rerun the copy)" if error.target_partial else ""
    if isinstance(error, datamover.BadPassphrase):
        return errors.InvalidArgument(
            f"{what}: {detail}; pass the passphrase the volume was encrypted with"
        )
    if isinstance(error, datamover.Cancelled):
        return errors.Cancelled(f"{what} was cancelled{partial}")
    if isinstance(error, datamover.NoSpace) or error.errno in (
        errno_codes.ENOSPC,
        errno_codes.EDQUOT,
    ):
        return errors.ResourceExhausted(
            f"{what}: no space left ({detail}); free space on the target and retry{partial}"
        )
    if isinstance(error, datamover.TargetTooSmall):
        return errors.OutOfRange(f"{what}: {detail}; grow the target volume first")
    if isinstance(error, datamover.TargetExists):
        return errors.AlreadyExists(f"{what}: {detail}")
    if isinstance(error, datamover.FormatError):
        return errors.InvalidArgument(f"{what}: the image is not usable: {detail}")
    if isinstance(error, datamover.SourceError):
        if error.errno == errno_codes.ENOENT:
            return errors.NotFound(f"{what}: {detail}")
        return errors.FailedPrecondition(f"{what}: cannot read the source: {detail}")
    if error.errno == errno_codes.EIO:
        return errors.DataLoss(f"{what}: I/O error ({detail}){partial}")
    return errors.Internal(f"{what}: {detail}{partial}")


def image_info(
    path: Path,
    what: str,
    *,
    confine_to: Path | None = None,
    src_format: datamover.Format | None = None,
) -> datamover.ImageInfo:
    """Describe `path`; with `confine_to`, its whole backing chain must lie in that directory."""
    try:
        return datamover.info(str(path), confine_to=confine_to, src_format=src_format)
    except datamover.DataMoverError as error:
        raise translate(error, what) from None
    except ValueError as error:
        raise errors.InvalidArgument(f"{what}: {error}") from None


def copy(
    ctx: JobContext,
    src: Path,
    dst: Path,
    *,
    what: str,
    src_format: datamover.Format | None,
    dst_format: datamover.Format,
    compression: datamover.Compression | None = None,
    target_is_zero: bool = False,
    overwrite: bool = False,
    confine_to: Path | None = None,
    keys: Keys | None = None,
) -> datamover.ConvertStats:
    """Copy with the data mover, reporting progress to `ctx`; cancel with the operation.

    With `confine_to` (for images from untrusted hands, e.g. templates on secondary storage)
    the source and its whole backing chain must lie in that directory: a backing name that
    leads out is refused as InvalidArgument before any byte of it is read.
    """
    ctx.check_cancelled()
    ctx.stage("copying")
    keys = keys or Keys()
    if keys.source is not None and keys.source_luks:
        src_format = "luks"
    encrypted = keys.target is not None
    try:
        job = datamover.start_convert(
            str(src),
            str(dst),
            src_format=src_format,
            dst_format="luks" if encrypted and dst_format == "raw" else dst_format,
            compression=compression,
            target_is_zero=target_is_zero,
            overwrite=overwrite,
            confine_to=confine_to,
            encryption="luks" if encrypted and dst_format == "qcow2" else None,
            passphrase=keys.target.value if keys.target is not None else None,
            src_passphrase=keys.source.value if keys.source is not None else None,
            iter_time_ms=keys.iter_time_ms,
        )
    except datamover.DataMoverError as error:
        raise translate(error, what) from None
    except ValueError as error:
        raise errors.InvalidArgument(f"{what}: {error}") from None
    return follow(ctx, job, what)


@dataclass(frozen=True)
class Fetch:
    """How a direct download reaches its server (the node's settings)."""

    ca_file: Path | None = None
    max_bytes: int | None = None
    max_redirects: int = 5
    stall_timeout: float = 30.0


def url_info(url: str, what: str, fetch: Fetch) -> datamover.ImageInfo:
    """The format and virtual size of an image at a URL (its header only)."""
    try:
        return datamover.url_info(
            url,
            ca_file=fetch.ca_file,
            max_redirects=fetch.max_redirects,
            max_bytes=fetch.max_bytes,
            stall_timeout=fetch.stall_timeout,
        )
    except datamover.DataMoverError as error:
        raise translate(error, what) from None
    except ValueError as error:
        raise errors.InvalidArgument(f"{what}: {error}") from None


def download(
    ctx: JobContext,
    url: str,
    dst: Path,
    *,
    what: str,
    src_format: datamover.Format | None,
    checksum: tuple[datamover.FileChecksum, str] | None,
    fetch: Fetch,
    target_is_zero: bool,
) -> datamover.ConvertStats:
    """Stream an image from a URL into `dst` (raw), checksummed, with progress and cancel."""
    ctx.check_cancelled()
    ctx.stage("downloading")
    if src_format not in (None, "raw", "qcow2"):
        raise errors.InvalidArgument(f"{what}: a download is RAW or QCOW2, not {src_format}")
    try:
        job = datamover.start_download(
            url,
            str(dst),
            src_format=src_format,
            checksum=checksum,
            ca_file=fetch.ca_file,
            max_redirects=fetch.max_redirects,
            max_bytes=fetch.max_bytes,
            stall_timeout=fetch.stall_timeout,
            target_is_zero=target_is_zero,
        )
    except datamover.DataMoverError as error:
        raise translate(error, what) from None
    except ValueError as error:
        raise errors.InvalidArgument(f"{what}: {error}") from None
    return follow(ctx, job, what)


def follow(ctx: JobContext, job: datamover.Job, what: str) -> datamover.ConvertStats:
    """Report a running data-mover job's progress to `ctx` until it ends; cancel with it."""
    ctx.on_cancel(job.cancel)
    while True:
        try:
            stats = job.wait(POLL_SECONDS)
        except datamover.DataMoverError as error:
            raise translate(error, what) from None
        progress = job.progress()
        if stats is not None:
            ctx.progress(stats.virtual_size, stats.virtual_size, written=stats.bytes_written)
            return stats
        ctx.progress(
            progress.done_bytes, progress.total_bytes, rate=int(progress.rate_bytes_per_sec)
        )
