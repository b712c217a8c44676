"""RAW/QCOW2 data mover: the Rust extension `spcs._datamover`, re-exported.

Typical use::

    from spcs import datamover

    stats = datamover.convert("tpl.qcow2", "/dev/storpool-byid/abc", dst_format="raw",
                              checksum="sha256")
    job = datamover.start_convert(src, dst, dst_format="qcow2", compression="zstd")
    while (stats := job.wait(timeout=1.0)) is None:
        print(job.progress().done_bytes)

Destination rules: an existing block device or regular file (symlinks followed) receiving
raw output is written in place and must hold the virtual size (else `TargetTooSmall`, before
any write); zero regions of the source are zeroed on it unless ``target_is_zero=True``. A
new destination is written to a temporary file in the same directory and renamed into
place after a successful flush, so a failed or cancelled copy leaves nothing behind. Any
other existing destination raises `TargetExists` unless ``overwrite=True``.

I/O: ``direct=None`` uses O_DIRECT where the target supports it (every aligned write on a
block device; runs of at least 1 MiB on a regular file, shorter ones through the page cache
with early writeback); ``direct=True`` requires O_DIRECT, ``direct=False`` never uses it.
Every copy ends with fdatasync. ``threads`` sets the worker count (default: cores + 2).

Raw images keep their exact byte size (qemu pads odd sizes to whole sectors); QCOW2 output
sizes are rounded up to 512 bytes, as QEMU addresses them. ``checksum`` is the hex digest of
the virtual disk contents (zeros included), computed in the same pass.

Backing files: by default a QCOW2 backing file name is followed as qemu-img does (absolute
names, and relative ones from the directory of the image naming them). With
``confine_to=DIR`` (on `info`, `convert` and `start_convert`) the source and every file of
its backing chain must really lie inside DIR (symlinks followed), and backing names may be
neither absolute nor contain ``..``; otherwise `FormatError`, before the file is read, e.g.
``/srv/sec/t.qcow2: backing file "/etc/passwd" is outside /srv/sec (absolute backing file
names are not allowed here)``. A missing backing file is still a `SourceError`; DIR must be
an existing directory (else `ValueError`). Use it for images from untrusted hands.
External data files are always refused (`FormatError`).

Encryption (LUKS1: aes-xts-plain64, 512-bit key, sha256 PBKDF2 key slots, as CloudStack,
qemu and cryptsetup use it): ``dst_format="luks"`` writes a raw LUKS volume (header, then the
payload from 2 MiB, cryptsetup's layout; an existing file or device must hold the virtual size
+ 2 MiB), ``dst_format="qcow2", encryption="luks"`` a LUKS-encrypted qcow2 image (zero
clusters stay unallocated; no compression with encryption), both with ``passphrase=b"..."``
and ``iter_time_ms`` (PBKDF2 time per key slot, 2000 as qemu and cryptsetup). Every byte of a
LUKS payload is written, zeros included. ``src_passphrase`` unlocks an encrypted source:
``src_format="luks"`` for a raw LUKS volume (never probed: a raw volume holding a LUKS
container is copied raw unless named), probed for qcow2. `luks_format` writes only the header
(``cryptsetup luksFormat``). A passphrase that opens no key slot raises `BadPassphrase` (a
`FormatError`) naming the image; passphrases never appear in messages or reprs.

Direct download (CloudStack's direct-download templates): `download` / `start_download`
stream an image from an ``http://`` or ``https://`` URL into ``dst`` as raw, with the same
destination rules, `Job` and `ConvertStats`, and no copy of the file on the host::

    stats = datamover.download("https://tpl.example/t.qcow2", "/dev/storpool-byid/abc",
                               checksum=("sha256", "9f86d0..."))

A raw file is one GET written as it arrives. A qcow2 image (probed by its magic unless
``src_format`` says) has its header and tables read first, from the start of the body and
with range requests beyond it, then the body is read once in file order, each data cluster
(plain, zlib or zstd) written to its virtual offset; zero and unallocated clusters are
zeroed on an existing target unless ``target_is_zero``. A qcow2 image with a backing file,
an external data file or encryption is refused (`FormatError`). ``checksum=(algorithm,
hex)`` (md5, sha1, sha256, sha512) is of the file as served, computed in the same pass;
``stats.checksum`` is the digest found. A mismatch is a `FormatError` naming the URL, the
expected and the actual digest: a new destination is removed, an existing one is
``target_partial``. Progress counts bytes of the file received (``total_bytes`` is its
Content-Length, which the server must send).

HTTP: certificates are verified against the host's trust store, or against the PEM bundle
``ca_file`` *instead of* it (as ``curl --cacert``); at most ``max_redirects`` redirects; a
Content-Length above ``max_bytes`` is refused before anything is written; no byte for
``stall_timeout`` seconds (connecting, waiting, or mid-body) is an error. A connection that
drops mid-body is resumed with a range request (up to 5 times, with a short backoff, the
digest continuing); a server that then ignores the range or whose file changed (ETag or
Last-Modified) fails the download. HTTP errors (404, 403, other 4xx, 5xx), refused or
failed TLS (``certificate verification failed``), too many redirects and short bodies are
`SourceError`s naming the URL and the status; credentials in the URL (``user:pass@``, sent
as basic authentication to that URL only) and query strings never appear in messages.
Cancel stops a download within about a second, even while a read waits on the network.

Sizing a destination first: `url_info` describes the image at a URL as `info` describes a
file, without reading its body, so that a volume can be created before `download` writes
into it::

    i = datamover.url_info("https://tpl.example/t.qcow2")
    # i.format "qcow2", i.virtual_size, i.actual_size (the file's length), i.cluster_size, ...

It asks for the first 64 KiB of the file with a range request (the file's length from the
Content-Range; a server that ignores ranges answers 200 and the connection is dropped after
those bytes). A raw file's virtual size is its length; a qcow2 image's comes from its header,
read from those bytes (a range request more for the rest of a first cluster above 64 KiB).
``src_format``, ``ca_file``, ``max_redirects``, ``max_bytes`` and ``stall_timeout`` are
`download`'s, and so are its errors: HTTP and TLS failures are the same `SourceError`s, a
length above ``max_bytes`` is refused, and a qcow2 image with a backing file, an external
data file or encryption is the `FormatError` `download` would raise. ``checksum`` is None
and ``encryption`` too. The GIL is released while it works.

Every error is a `DataMoverError` subclass with ``path``, ``offset``, ``errno`` and
``target_partial`` attributes (``target_partial`` is true when an in-place target was
written to before the failure). Invalid arguments raise `ValueError`.
"""

from __future__ import annotations

from typing import Literal

from spcs._datamover import (
    BadPassphrase,
    Cancelled,
    ConvertStats,
    DataMoverError,
    FormatError,
    ImageInfo,
    IoError,
    Job,
    NoSpace,
    Progress,
    SourceError,
    TargetExists,
    TargetTooSmall,
    __version__,
    convert,
    download,
    info,
    luks_format,
    start_convert,
    start_download,
    url_info,
)

#: An image format read and written (``src_format``, ``dst_format``, `ImageInfo.format`).
Format = Literal["raw", "qcow2", "luks"]
#: A QCOW2 compression algorithm (``compression``).
Compression = Literal["zlib", "zstd"]
#: A digest of the virtual disk (``checksum``).
Checksum = Literal["sha256", "blake3"]
#: A checksum algorithm of a downloaded file (``checksum=(algorithm, hex)`` of `download`).
FileChecksum = Literal["md5", "sha1", "sha256", "sha512"]
#: An encryption of qcow2 output (``encryption``), and what `ImageInfo.encryption` reports.
Encryption = Literal["luks"]

#: Accepted values of ``compression``.
COMPRESSIONS: tuple[Compression, ...] = ("zlib", "zstd")
#: Accepted values of ``checksum``.
CHECKSUMS: tuple[Checksum, ...] = ("sha256", "blake3")
#: Accepted algorithms of a download's ``checksum``.
FILE_CHECKSUMS: tuple[FileChecksum, ...] = ("md5", "sha1", "sha256", "sha512")
#: Image formats read and written.
FORMATS: tuple[Format, ...] = ("raw", "qcow2", "luks")

__all__ = [
    "CHECKSUMS",
    "COMPRESSIONS",
    "FILE_CHECKSUMS",
    "FORMATS",
    "BadPassphrase",
    "Cancelled",
    "Checksum",
    "Compression",
    "ConvertStats",
    "DataMoverError",
    "Encryption",
    "FileChecksum",
    "Format",
    "FormatError",
    "ImageInfo",
    "IoError",
    "Job",
    "NoSpace",
    "Progress",
    "SourceError",
    "TargetExists",
    "TargetTooSmall",
    "__version__",
    "convert",
    "download",
    "info",
    "luks_format",
    "start_convert",
    "start_download",
    "url_info",
]
