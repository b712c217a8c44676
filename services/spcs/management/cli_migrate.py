"""`spcs migrate-db`: move a management service's SQLite state into MariaDB/MySQL.

Exit codes: 0 when moved (one summary line), 2 for a bad option (naming it), 1 when the move
is refused or a database fails (one line saying what to do). Passwords are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sqlalchemy.engine import URL

from spcs.common.errors import SpcsError
from spcs.common.settings import ConfigError
from spcs.common.sqlite import DatabaseError

PASSWORD_ENV = "SPCS_DATABASE_PASSWORD"  # as spcs management's
NAME = "spcs migrate-db"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Copy the state of a stopped spcs management (pools with their StorPool connections, "
        "connected hosts, template cache, nodes, finished operations) from its SQLite file "
        "into an empty MariaDB/MySQL database. The SQLite file's schema is upgraded first if "
        "it was made by an older spcs. Refused while a spcs management runs on the file, or "
        "when the target already holds pools, nodes or operations."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="source_url", metavar="URL", help="sqlite:///PATH")
    source.add_argument(
        "--from-db", dest="source_db", metavar="PATH", help="the SQLite file (spcs management --db)"
    )
    parser.add_argument(
        "--to",
        dest="target_url",
        required=True,
        metavar="URL",
        help="mysql+pymysql://USER@HOST[:PORT]/DATABASE (also mariadb+pymysql://), an empty "
        "database; put no password in it",
    )
    parser.add_argument(
        "--to-password-file",
        dest="password_file",
        metavar="FILE",
        help=f"file holding the password of --to's user (else env {PASSWORD_ENV})",
    )


def run(args: argparse.Namespace) -> int:
    from spcs.management.migrate import Refused, migrate_database

    try:
        source = _source(args)
        target = _target(args.target_url)
        password = _password(args.password_file, target)
    except ConfigError as error:
        print(f"{NAME}: {error}", file=sys.stderr)
        return 2
    try:
        print(migrate_database(source, target, password))
    except (Refused, DatabaseError, SpcsError, OSError) as error:
        print(f"{NAME}: {error}", file=sys.stderr)
        return 1
    return 0


def _source(args: argparse.Namespace) -> Path:
    from spcs.management.sql import database_url, is_sqlite

    if args.source_db is not None:
        setting, text = "--from-db", f"sqlite:///{args.source_db}"
    else:
        setting, text = "--from", args.source_url
    try:
        url = database_url(text)
    except ValueError as error:
        raise ConfigError(setting, str(error)) from None
    if not is_sqlite(url):
        raise ConfigError(
            setting, "the source is the SQLite file of spcs management: sqlite:///PATH"
        )
    path = Path(str(url.database))
    if not path.is_file():
        raise ConfigError(setting, f"{path} does not exist or is not a file")
    return path


def _target(text: str) -> URL:
    from spcs.management.sql import database_url, is_sqlite

    try:
        url = database_url(text)
    except ValueError as error:
        raise ConfigError("--to", str(error)) from None
    if is_sqlite(url):
        raise ConfigError("--to", "give a MariaDB/MySQL URL: mysql+pymysql://USER@HOST/DATABASE")
    if url.password is not None:
        raise ConfigError(
            "--to", f"put no password in the URL; use --to-password-file or env {PASSWORD_ENV}"
        )
    return url


def _password(path_text: str | None, url: URL) -> str | None:
    if path_text is None:
        return os.environ.get(PASSWORD_ENV) or None
    setting = "--to-password-file"
    try:
        password = Path(path_text).read_text().rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(setting, f"{path_text} is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(
            setting, f"{path_text} cannot be read: {error.strerror or error}"
        ) from None
    if not password:
        raise ConfigError(
            setting, f"{path_text} is empty (it holds the password of {url.username})"
        )
    return password
