"""Type stub of the Rust extension `spcs._datamover` (see datamover/src/py.rs)."""

import os
from typing import Literal, final

__version__: str

_Path = str | os.PathLike[str]
_Format = Literal["raw", "qcow2", "luks"]
_Compression = Literal["zlib", "zstd"]
_Checksum = Literal["sha256", "blake3"]
_Encryption = Literal["luks"]
_FileChecksum = Literal["md5", "sha1", "sha256", "sha512"]

class DataMoverError(Exception):
    path: str | None
    offset: int | None
    errno: int | None
    target_partial: bool

class SourceError(DataMoverError): ...
class FormatError(DataMoverError): ...

class BadPassphrase(FormatError):
    """An encrypted image: no LUKS key slot opens with the passphrase given, or none was
    given. The message names the image; it never contains the passphrase."""

class TargetTooSmall(DataMoverError): ...
class TargetExists(DataMoverError): ...
class Cancelled(DataMoverError): ...
class IoError(DataMoverError): ...
class NoSpace(IoError): ...

@final
class ConvertStats:
    @property
    def bytes_read(self) -> int: ...
    @property
    def bytes_written(self) -> int: ...
    @property
    def bytes_skipped(self) -> int: ...
    @property
    def virtual_size(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def checksum(self) -> str | None: ...

@final
class Progress:
    @property
    def done_bytes(self) -> int: ...
    @property
    def total_bytes(self) -> int: ...
    @property
    def rate_bytes_per_sec(self) -> float: ...
    @property
    def elapsed_seconds(self) -> float: ...

@final
class ImageInfo:
    @property
    def format(self) -> _Format: ...
    @property
    def virtual_size(self) -> int: ...
    @property
    def actual_size(self) -> int: ...
    @property
    def cluster_size(self) -> int | None: ...
    @property
    def compression(self) -> str | None: ...
    @property
    def backing_file(self) -> str | None: ...
    @property
    def backing_format(self) -> str | None: ...
    @property
    def compat(self) -> str | None: ...
    @property
    def extended_l2(self) -> bool: ...
    @property
    def dirty(self) -> bool: ...
    @property
    def checksum(self) -> str | None: ...
    @property
    def encryption(self) -> _Encryption | None:
        """ "luks" for a LUKS volume (``src_format="luks"``) or a LUKS-encrypted qcow2 image,
        read from the header without a passphrase."""
    @property
    def payload_offset(self) -> int | None:
        """Where a LUKS volume's encrypted payload starts (bytes); None otherwise."""

@final
class Job:
    def progress(self) -> Progress: ...
    def cancel(self) -> None: ...
    def wait(self, timeout: float | None = None) -> ConvertStats | None: ...
    @property
    def done(self) -> bool: ...

def convert(
    src: _Path,
    dst: _Path,
    *,
    src_format: _Format | None = None,
    dst_format: _Format = "raw",
    compression: _Compression | None = None,
    target_is_zero: bool = False,
    direct: bool | None = None,
    checksum: _Checksum | None = None,
    cluster_size: int = 65536,
    backing_chain_limit: int = 16,
    overwrite: bool = False,
    threads: int | None = None,
    confine_to: _Path | None = None,
    encryption: _Encryption | None = None,
    passphrase: bytes | bytearray | None = None,
    src_passphrase: bytes | bytearray | None = None,
    iter_time_ms: int = 2000,
) -> ConvertStats: ...
def start_convert(
    src: _Path,
    dst: _Path,
    *,
    src_format: _Format | None = None,
    dst_format: _Format = "raw",
    compression: _Compression | None = None,
    target_is_zero: bool = False,
    direct: bool | None = None,
    checksum: _Checksum | None = None,
    cluster_size: int = 65536,
    backing_chain_limit: int = 16,
    overwrite: bool = False,
    threads: int | None = None,
    confine_to: _Path | None = None,
    encryption: _Encryption | None = None,
    passphrase: bytes | bytearray | None = None,
    src_passphrase: bytes | bytearray | None = None,
    iter_time_ms: int = 2000,
) -> Job: ...
def download(
    url: str,
    dst: _Path,
    *,
    src_format: Literal["raw", "qcow2"] | None = None,
    checksum: tuple[_FileChecksum, str] | None = None,
    ca_file: _Path | None = None,
    max_redirects: int = 5,
    max_bytes: int | None = None,
    stall_timeout: float = 30.0,
    target_is_zero: bool = False,
    overwrite: bool = False,
    threads: int | None = None,
) -> ConvertStats:
    """Streams the image at `url` into `dst` as raw; see `spcs.datamover` for the rules."""

def start_download(
    url: str,
    dst: _Path,
    *,
    src_format: Literal["raw", "qcow2"] | None = None,
    checksum: tuple[_FileChecksum, str] | None = None,
    ca_file: _Path | None = None,
    max_redirects: int = 5,
    max_bytes: int | None = None,
    stall_timeout: float = 30.0,
    target_is_zero: bool = False,
    overwrite: bool = False,
    threads: int | None = None,
) -> Job:
    """`download` in the background."""

def url_info(
    url: str,
    *,
    src_format: Literal["raw", "qcow2"] | None = None,
    ca_file: _Path | None = None,
    max_redirects: int = 5,
    max_bytes: int | None = None,
    stall_timeout: float = 30.0,
) -> ImageInfo:
    """Describes the image at `url` (format, virtual size, ...) from its first bytes, never its
    body; `download`'s keywords and errors. See `spcs.datamover`."""

def info(
    path: _Path,
    *,
    checksum: _Checksum | None = None,
    src_format: _Format | None = None,
    backing_chain_limit: int = 16,
    confine_to: _Path | None = None,
    src_passphrase: bytes | bytearray | None = None,
) -> ImageInfo: ...
def luks_format(path: _Path, passphrase: bytes | bytearray, *, iter_time_ms: int = 2000) -> str:
    """Writes a LUKS1 header (aes-xts-plain64, 512-bit key, sha256; payload at 2 MiB) on an
    existing file or block device, leaving the payload unwritten; returns the UUID."""
