"""spcs: StorPool primary storage for Apache CloudStack."""

from functools import cache

__all__ = ["__version__"]


@cache
def _version() -> str:
    # importlib.metadata costs ~60 ms to import, most of a short `spcs convert`: only on use.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spcs")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'spcs' has no attribute {name!r}")
