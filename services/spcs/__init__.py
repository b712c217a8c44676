"""spcs: StorPool primary storage for Apache CloudStack."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spcs")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
