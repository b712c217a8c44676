"""Type stub of the Rust extension `spcs._datamover` (see datamover/src/py.rs)."""

import os
from typing import Literal, final

__version__: str

_Path = str | os.PathLike[str]
_Format = Literal["raw", "qcow2"]
_Compression = Literal["zlib", "zstd"]
_Checksum = Literal["sha256", "blake3"]

class DataMoverError(Exception):
    path: str | None
    offset: int | None
    errno: int | None
    target_partial: bool

class SourceError(DataMoverError): ...
class FormatError(DataMoverError): ...
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
) -> Job: ...
def info(
    path: _Path,
    *,
    checksum: _Checksum | None = None,
    src_format: _Format | None = None,
    backing_chain_limit: int = 16,
    confine_to: _Path | None = None,
) -> ImageInfo: ...
