"""StorPool host configuration: `/etc/storpool.conf`, `/etc/storpool.conf.d/*.conf`, environment.

Parsing is done by StorPool's own bindings (`storpool.spconfig.SPConfig`: the unnamed section,
then the `[hostname]` section of each file, files in order), so spcs reads exactly what
StorPool's tools read. Like the bindings, the environment overrides `SP_AUTH_TOKEN`,
`SP_API_HTTP_HOST` and `SP_API_HTTP_PORT`; spcs also takes `SP_OURID` and `SP_CLUSTER_ID` from
it, so a host without a config file can run from the environment alone.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from spcs.common import logs
from spcs.common.settings import ConfigError, Option, positive_float
from spcs.storpool.bindings import spconfig

DEFAULT_PATH = Path("/etc/storpool.conf")

# The setting both services have for riding out StorPool API hiccups.
RETRY_OPTION = Option(
    "storpool_retry_seconds",
    "how long StorPool API calls are retried on transient errors and connection failures",
    default="30",
    parse=positive_float,
    metavar="SECONDS",
)
KEYS = ("SP_API_HTTP_HOST", "SP_API_HTTP_PORT", "SP_AUTH_TOKEN", "SP_OURID", "SP_CLUSTER_ID")


@dataclass(frozen=True)
class StorPoolConf:
    api_host: str
    api_port: int
    auth_token: str | None
    our_id: int | None
    cluster_id: str | None
    # Where the values were looked for, for error messages.
    sources: str

    @property
    def endpoint(self) -> str:
        return f"{self.api_host}:{self.api_port}"

    def require(self, *keys: str) -> None:
        """Fail with a message naming the first missing key and where it was looked for."""
        present = {
            "SP_AUTH_TOKEN": self.auth_token,
            "SP_OURID": self.our_id,
            "SP_CLUSTER_ID": self.cluster_id,
            "SP_API_HTTP_HOST": self.api_host,
            "SP_API_HTTP_PORT": self.api_port,
        }
        for key in keys:
            if not present.get(key):
                raise ConfigError(
                    key,
                    f"StorPool setting {key} is missing: looked in {self.sources} and the "
                    f"environment variable {key}; set it in the [hostname] section of the "
                    "StorPool config or in the environment",
                )


def _files_for(path: Path) -> type[spconfig.SPConfig]:
    # The bindings take their paths from class attributes; point them at `path`.
    return type(
        "SPConfigAt",
        (spconfig.SPConfig,),
        {"PATH_CONFIG": str(path), "PATH_CONFIG_DIR": str(path) + ".d"},
    )


def load(
    path: Path | None = None,
    *,
    section: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> StorPoolConf:
    """Read the StorPool config; `path` None means the default file, which may be missing."""
    env = os.environ if environ is None else environ
    explicit = path is not None
    conf_path = path if path is not None else DEFAULT_PATH
    setting = "--storpool-conf" if explicit else f"--storpool-conf (default {DEFAULT_PATH})"
    if explicit and not conf_path.is_file():
        raise ConfigError(setting, f"StorPool config {conf_path} does not exist or is not a file")
    section = section or platform.node()
    try:
        # use_env=False: every override comes from `env` below, so callers can pass their own.
        cfg = _files_for(conf_path)(section=section, missing_ok=not explicit, use_env=False)
    except spconfig.SPConfigException as error:
        raise ConfigError(setting, str(error)) from None
    except OSError as error:  # e.g. an unreadable storpool.conf.d directory
        where = error.filename or conf_path
        raise ConfigError(setting, f"{where} cannot be read: {error.strerror or error}") from None
    values = {key: env.get(key, cfg.get(key)) for key in KEYS}
    logs.add_secret(values["SP_AUTH_TOKEN"])
    sources = f"{conf_path} and {conf_path}.d/*.conf (section [{section}])"
    return StorPoolConf(
        api_host=str(values["SP_API_HTTP_HOST"] or "127.0.0.1"),
        api_port=_port(values["SP_API_HTTP_PORT"] or "81", sources),
        auth_token=values["SP_AUTH_TOKEN"] or None,
        our_id=_client_id(values["SP_OURID"], sources),
        cluster_id=values["SP_CLUSTER_ID"] or None,
        sources=sources,
    )


def _int_setting(key: str, value: str, sources: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            key, f"{value!r} is not a number (from {sources} or the environment)"
        ) from None


def _port(value: str, sources: str) -> int:
    number = _int_setting("SP_API_HTTP_PORT", value, sources)
    if not 1 <= number <= 65535:
        raise ConfigError(
            "SP_API_HTTP_PORT", f"{number} is outside 1-65535 (from {sources} or the environment)"
        )
    return number


def _client_id(value: str | None, sources: str) -> int | None:
    if value is None or not value.strip():
        return None
    number = _int_setting("SP_OURID", value, sources)
    if not 1 <= number <= 4095:
        raise ConfigError(
            "SP_OURID", f"{number} is outside 1-4095 (from {sources} or the environment)"
        )
    return number
