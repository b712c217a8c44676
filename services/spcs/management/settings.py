"""Settings of the management service (flags, SPCS_* environment, --config TOML)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from spcs.common.settings import (
    SERVER_OPTIONS,
    ConfigError,
    Option,
    ServerSettings,
    parse_listen,
    path_value,
    positive_float,
    resolve,
    state_directory,
)
from spcs.storpool import conf as storpool_conf

DEFAULT_LISTEN = "127.0.0.1:9710"

OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        "address to serve gRPC on",
        default=DEFAULT_LISTEN,
        parse=parse_listen,
        metavar="HOST:PORT",
    ),
    Option(
        "db",
        "SQLite database (pools, nodes, template cache, operations journal)",
        default="/var/lib/spcs/management.db",
        parse=path_value,
        metavar="PATH",
    ),
    Option(
        "storpool_conf",
        "StorPool config for pools added by bare template name "
        "(default /etc/storpool.conf + /etc/storpool.conf.d/*.conf, may be missing)",
        parse=path_value,
        metavar="FILE",
    ),
    storpool_conf.RETRY_OPTION,
    Option(
        "node_retry_seconds",
        "how long calls to a node are retried while it is unreachable",
        default="30",
        parse=positive_float,
        metavar="SECONDS",
    ),
    Option(
        "volume_stats_seconds",
        "how old the cached volume space of a StorPool cluster (one VolumesSpace call for all "
        "its volumes) may be when GetVolumeStats answers from it; GetVolumesStats always reads "
        "it anew",
        default="30",
        parse=positive_float,
        metavar="SECONDS",
    ),
    *SERVER_OPTIONS,
)


@dataclass(frozen=True)
class ManagementSettings:
    server: ServerSettings
    db: Path
    storpool: storpool_conf.StorPoolConf
    storpool_retry_seconds: float
    node_retry_seconds: float
    volume_stats_seconds: float = 30.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ManagementSettings:
        values = resolve(args, OPTIONS)
        server = ServerSettings.from_values(values)
        storpool = storpool_conf.load(values["storpool_conf"])
        db = _database(values["db"])
        return cls(
            server=server,
            db=db,
            storpool=storpool,
            storpool_retry_seconds=values["storpool_retry_seconds"],
            node_retry_seconds=values["node_retry_seconds"],
            volume_stats_seconds=values["volume_stats_seconds"],
        )


SQLITE_HEADER = b"SQLite format 3\0"


def _database(db: Path) -> Path:
    """The database file: its directory is the service's own state directory, created (0750)
    when missing; an existing file must be an SQLite database this process can write."""
    if db.is_dir():
        raise ConfigError("--db", f"{db} is a directory; give a file path")
    state_directory(db.parent, "--db")
    if db.exists():
        try:
            with db.open("rb+") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as error:
            raise ConfigError("--db", f"{db} cannot be opened: {error.strerror or error}") from None
        if header and header != SQLITE_HEADER:
            raise ConfigError("--db", f"{db} is not an SQLite database")
    return db
