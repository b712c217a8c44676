"""Service settings from flags, environment and an optional TOML file, validated at start.

Each setting is declared once as an `Option`: that declaration gives the command-line flag,
the environment variable (`SPCS_<NAME>`) and the key in the `--config` file. Precedence is
flag > environment > file > default. A bad value stops the service before it listens, with a
message naming the setting and where the value came from.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting is missing or invalid; the message says which and where it came from."""


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    default: Any = None
    parse: Callable[[str], Any] = str
    metavar: str | None = None
    flag: str | None = None
    is_bool: bool = False
    repeated: bool = False

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return "SPCS_" + self.name.upper()


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) → (host, port); port 0 picks a free one."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        ipaddress.IPv6Address(host[1:-1])
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} in {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} in {value!r} is out of range 0-65535")
    return host, port


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def parse_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{value!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return level


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{value!r} must be a positive integer")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"{value!r} must be a positive number")
    return number


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{value} does not exist or is not a file")
    return path


def existing_dir(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise ValueError(f"{value} does not exist or is not a directory")
    return path


def writable_parent(value: str) -> Path:
    path = Path(value)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"directory {parent} of {value} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"directory {parent} of {value} is not writable")
    return path


# Settings every spcs server has.
SERVER_OPTIONS: tuple[Option, ...] = (
    Option(
        "log_file",
        "write logs to this file instead of stderr",
        parse=writable_parent,
        metavar="PATH",
    ),
    Option(
        "log_level",
        "DEBUG, INFO, WARNING or ERROR",
        default="INFO",
        parse=parse_level,
        metavar="LEVEL",
    ),
    Option(
        "tls_cert",
        "serve TLS with this PEM certificate (needs --tls-key)",
        parse=existing_file,
        metavar="PEM",
    ),
    Option("tls_key", "PEM private key of --tls-cert", parse=existing_file, metavar="PEM"),
    Option(
        "tls_ca",
        "PEM CA bundle that signs the peers' certificates (used to verify the "
        "services we call, and clients when --tls-client-auth)",
        parse=existing_file,
        metavar="PEM",
    ),
    Option(
        "tls_client_auth",
        "require clients to present a certificate signed by --tls-ca (mutual TLS)",
        default=False,
        parse=parse_bool,
        is_bool=True,
    ),
    Option("workers", "threads serving RPCs", default=16, parse=positive_int, metavar="N"),
    Option(
        "max_concurrent_rpcs",
        "RPCs in flight before new ones get RESOURCE_EXHAUSTED",
        default=1024,
        parse=positive_int,
        metavar="N",
    ),
    Option(
        "grace_seconds",
        "on SIGTERM, how long in-flight RPCs may take to finish",
        default=10.0,
        parse=positive_float,
        metavar="SECONDS",
    ),
    Option(
        "port_file",
        "once listening, write the bound port here (handy with port 0)",
        parse=writable_parent,
        metavar="PATH",
    ),
)


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with settings (keys as the flag names with '_' for '-'); env SPCS_CONFIG",
    )
    for opt in options:
        default_note = f" (default: {opt.default})" if opt.default not in (None, False) else ""
        help_text = f"{opt.help}{default_note}; env {opt.env_var}"
        if opt.is_bool:
            parser.add_argument(
                opt.cli_flag,
                dest=opt.name,
                action="store_const",
                const="true",
                default=None,
                help=help_text,
            )
        elif opt.repeated:
            parser.add_argument(
                opt.cli_flag,
                dest=opt.name,
                action="append",
                default=None,
                metavar=opt.metavar,
                help=help_text + " (repeatable)",
            )
        else:
            parser.add_argument(
                opt.cli_flag, dest=opt.name, default=None, metavar=opt.metavar, help=help_text
            )


def _load_file(path_text: str, source: str) -> Mapping[str, Any]:
    path = Path(path_text)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} ({source}) does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"config file {path} ({source}) cannot be read: {error}") from None


def _convert(opt: Option, raw: Any, source: str) -> Any:
    values = raw if opt.repeated else [raw]
    if opt.repeated and not isinstance(raw, list):
        values = [part for part in str(raw).split(",") if part] if isinstance(raw, str) else [raw]
    out = []
    for value in values:
        if isinstance(value, bool) and opt.is_bool:
            out.append(value)
            continue
        try:
            out.append(opt.parse(str(value)))
        except (ValueError, OSError) as error:
            where = opt.cli_flag if source.startswith("flag") else f"{opt.cli_flag} (from {source})"
            raise ConfigError(f"{where}: {error}") from None
    return out if opt.repeated else out[0]


def resolve(
    args: argparse.Namespace,
    options: Iterable[Option],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The value of every option, by precedence flag > env > file > default."""
    env = os.environ if environ is None else environ
    file_values: Mapping[str, Any] = {}
    config_path = getattr(args, "config", None) or env.get("SPCS_CONFIG")
    if config_path:
        source = "--config" if getattr(args, "config", None) else "SPCS_CONFIG"
        file_values = _load_file(config_path, source)
    known = {opt.name for opt in options} | {"config"}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"config file {config_path}: unknown settings {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for opt in options:
        flag_value = getattr(args, opt.name, None)
        if flag_value is not None:
            values[opt.name] = _convert(opt, flag_value, f"flag {opt.cli_flag}")
        elif opt.env_var in env:
            values[opt.name] = _convert(opt, env[opt.env_var], f"environment {opt.env_var}")
        elif opt.name in file_values:
            values[opt.name] = _convert(opt, file_values[opt.name], f"config file {config_path}")
        else:
            values[opt.name] = opt.default
    return values


@dataclass(frozen=True)
class ServerSettings:
    """What `spcs.common.server` needs, whichever service it runs."""

    listen: tuple[str, int]
    log_file: Path | None
    log_level: str
    tls_cert: Path | None
    tls_key: Path | None
    tls_ca: Path | None
    tls_client_auth: bool
    workers: int
    max_concurrent_rpcs: int
    grace_seconds: float
    port_file: Path | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> ServerSettings:
        settings = cls(**{name: values[name] for name in cls.__dataclass_fields__})
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key must be given together")
        if settings.tls_client_auth and (settings.tls_ca is None or settings.tls_cert is None):
            raise ConfigError("--tls-client-auth needs --tls-cert, --tls-key and --tls-ca")
        return settings

    @property
    def listen_address(self) -> str:
        host, port = self.listen
        return f"{host}:{port}"
