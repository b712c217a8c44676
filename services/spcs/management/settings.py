"""Settings of the management service (flags, SPCS_* environment, --config TOML)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from spcs.common import logs
from spcs.common.settings import (
    SERVER_OPTIONS,
    ConfigError,
    Option,
    ServerSettings,
    existing_file,
    parse_listen,
    path_value,
    positive_float,
    resolve,
    state_directory,
)
from spcs.management.sql import database_url, is_sqlite, shown
from spcs.storpool import conf as storpool_conf

# The password of --database-url's user, when no --database-password-file names a file with it.
PASSWORD_ENV = "SPCS_DATABASE_PASSWORD"

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
        "database_url",
        "the state database instead of --db: sqlite:///PATH, or "
        "mysql+pymysql://USER@HOST[:PORT]/DATABASE (MariaDB/MySQL, which several replicas "
        "share; also mariadb+pymysql://); put no password in it",
        parse=database_url,
        metavar="URL",
    ),
    Option(
        "database_password_file",
        f"file holding the password of --database-url's user (else env {PASSWORD_ENV})",
        parse=existing_file,
        metavar="FILE",
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
    Option(
        "zone_copy_stall_seconds",
        "how long a snapshot copy to another zone (StorPool location) may receive no data "
        "before it fails; StorPool is asked to resume the transfer meanwhile",
        default="600",
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
    zone_copy_stall_seconds: float = 600.0
    # the state database: None is SQLite at `db`
    database_url: URL | None = None
    database_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ManagementSettings:
        values = resolve(args, OPTIONS)
        server = ServerSettings.from_values(values)
        storpool = storpool_conf.load(values["storpool_conf"])
        url, password = _state_database(values)
        return cls(
            server=server,
            db=values["db"],
            storpool=storpool,
            storpool_retry_seconds=values["storpool_retry_seconds"],
            node_retry_seconds=values["node_retry_seconds"],
            volume_stats_seconds=values["volume_stats_seconds"],
            zone_copy_stall_seconds=values["zone_copy_stall_seconds"],
            database_url=url,
            database_password=password,
        )

    @property
    def state_url(self) -> URL:
        """Where the state is: --database-url, or the SQLite file --db."""
        return self.database_url or URL.create("sqlite", database=str(self.db))


SQLITE_HEADER = b"SQLite format 3\0"


def _database(db: Path, setting: str = "--db") -> Path:
    """The database file: its directory is the service's own state directory, created (0750)
    when missing; an existing file must be an SQLite database this process can write."""
    if db.is_dir():
        raise ConfigError(setting, f"{db} is a directory; give a file path")
    state_directory(db.parent, setting)
    if db.exists():
        try:
            with db.open("rb+") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as error:
            reason = f"{db} cannot be opened: {error.strerror or error}"
            raise ConfigError(setting, reason) from None
        if header and header != SQLITE_HEADER:
            raise ConfigError(setting, f"{db} is not an SQLite database")
    return db


def _state_database(values: dict[str, Any]) -> tuple[URL | None, str | None]:
    """--database-url (None: SQLite at --db, checked as such) and the password of its user."""
    url: URL | None = values["database_url"]
    password_file: Path | None = values["database_password_file"]
    if url is None or is_sqlite(url):
        if url is None:
            _database(values["db"])
        else:
            _database(Path(str(url.database)), "--database-url")
        if password_file is not None:
            raise ConfigError(
                "--database-password-file",
                "is for a MariaDB/MySQL --database-url; the state database is SQLite",
            )
        if os.environ.get(PASSWORD_ENV):
            raise ConfigError(
                PASSWORD_ENV, "is for a MariaDB/MySQL --database-url; the state database is SQLite"
            )
        return url, None
    password = (
        _password_from(password_file, url)
        if password_file is not None
        else os.environ.get(PASSWORD_ENV) or None
    )
    logs.add_secret(password)
    return url, password


def _password_from(path: Path, url: URL) -> str:
    setting = "--database-password-file"
    try:
        password = path.read_text().rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(setting, f"{path} is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(setting, f"{path} cannot be read: {error.strerror or error}") from None
    if not password:
        raise ConfigError(setting, f"{path} is empty (it holds the password for {shown(url)})")
    return password
