"""Service settings from flags, environment and an optional TOML file, validated at start.

Each setting is declared once as an `Option`: that declaration gives the command-line flag,
the environment variable (`SPCS_<NAME>`) and the key in the `--config` file. Precedence is
flag > environment > file > default. Defaults are written as the text a user would type and
go through the same parsing as every other value. A bad value stops the service before it
listens with a `ConfigError`: `<setting>: <why>`, naming the setting and where its value came
from.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import ssl
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting is missing or invalid. `setting` names it the way the user gave it (a flag,
    an environment variable, a config file key, a StorPool key) and `reason` says why; the
    message is `<setting>: <reason>`."""

    def __init__(self, setting: str, reason: str):
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason


@dataclass(frozen=True)
class Option:
    """One setting. `default` is written as a user would type it on the command line (or
    None: not set); it goes through `parse` like a flag, environment or file value does."""

    name: str
    help: str
    default: str | None = None
    parse: Callable[[str], Any] = str
    metavar: str | None = None
    flag: str | None = None
    is_bool: bool = False
    repeated: bool = False

    def __post_init__(self) -> None:
        if self.default is not None and not isinstance(self.default, str):
            raise TypeError(
                f"Option {self.name}: default {self.default!r} must be the text a user would "
                "type (a str), so that it is parsed like any other value"
            )

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return "SPCS_" + self.name.upper()


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) → (host, port); port 0 picks a free one."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or any(char.isspace() for char in value):
        raise ValueError(f"{value!r} is not HOST:PORT")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"{value!r}: an IPv6 address is written [ADDRESS]:PORT")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host} in {value!r} is not an IPv6 address") from None
    if not port_text.isdigit():
        raise ValueError(f"port {port_text!r} in {value!r} is not a number")
    port = int(port_text)
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


def parse_log_format(value: str) -> str:
    chosen = value.strip().lower()
    if chosen not in ("text", "json"):
        raise ValueError(f"{value!r} is not text or json")
    return chosen


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not a whole number") from None
    if number <= 0:
        raise ValueError(f"{value!r} must be a positive whole number")
    return number


# Longer waits than this are a typo (and past threading.TIMEOUT_MAX they would crash a timer).
MAX_SECONDS = 86400.0


def positive_float(value: str) -> float:
    """Seconds: a number above 0, at most MAX_SECONDS (a day)."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not a number") from None
    if not 0 < number <= MAX_SECONDS:  # also refuses nan
        raise ValueError(f"{value!r} must be a number of seconds above 0 and at most 86400")
    return number


def _path(value: str) -> Path:
    if not value.strip():
        raise ValueError("an empty path")
    if "\0" in value:
        raise ValueError(f"{value!r} is not a path (NUL character)")
    return Path(value)


def path_value(value: str) -> Path:
    """A path that need not exist yet (checked where it is used)."""
    return _path(value)


def existing_file(value: str) -> Path:
    """A regular file this process can read."""
    path = _path(value)
    if not path.is_file():
        raise ValueError(f"{value} does not exist or is not a file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise ValueError(f"{value} cannot be read: {error.strerror or error}") from None
    return path


def existing_dir(value: str) -> Path:
    path = _path(value)
    if not path.is_dir():
        raise ValueError(f"{value} does not exist or is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ValueError(f"directory {value} cannot be read")
    return path


def writable_file(value: str) -> Path:
    """A file this process creates or appends to, in an existing directory."""
    path = _path(value)
    if path.is_dir():
        raise ValueError(f"{value} is a directory; give a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{value} is not writable")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"directory {parent} of {value} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"directory {parent} of {value} is not writable")
    return path


def state_directory(path: Path, setting: str) -> Path:
    """A directory the service owns (database, journal, mounts): created with mode 0750 when
    missing, as systemd's StateDirectory= would, and checked to be usable."""
    if path.exists() and not path.is_dir():
        raise ConfigError(setting, f"{path} exists and is not a directory")
    if not path.exists():
        try:
            path.mkdir(mode=0o750, parents=True)
        except FileExistsError:
            if not path.is_dir():
                raise ConfigError(setting, f"{path} exists and is not a directory") from None
        except OSError as error:
            raise ConfigError(
                setting, f"cannot create directory {path}: {error.strerror or error}"
            ) from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(setting, f"directory {path} is not writable by this user")
    return path


# Settings every spcs server has.
SERVER_OPTIONS: tuple[Option, ...] = (
    Option(
        "log_file",
        "write logs to this file instead of stderr",
        parse=writable_file,
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
        "log_format",
        "text (the default) or json (one object per line)",
        default="text",
        parse=parse_log_format,
        metavar="FORMAT",
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
        default="false",
        parse=parse_bool,
        is_bool=True,
    ),
    Option(
        "metrics_listen",
        "serve Prometheus metrics over HTTP on this HOST:PORT (GET /metrics); off when unset",
        parse=parse_listen,
        metavar="HOST:PORT",
    ),
    Option("workers", "threads serving RPCs", default="16", parse=positive_int, metavar="N"),
    Option(
        "max_concurrent_rpcs",
        "RPCs in flight before new ones get RESOURCE_EXHAUSTED",
        default="1024",
        parse=positive_int,
        metavar="N",
    ),
    Option(
        "grace_seconds",
        "on SIGTERM, how long in-flight RPCs may take to finish",
        default="10",
        parse=positive_float,
        metavar="SECONDS",
    ),
    Option(
        "port_file",
        "once listening, write the bound port here (handy with port 0)",
        parse=writable_file,
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
        default_note = f" (default: {opt.default})" if opt.default and not opt.is_bool else ""
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


def _load_file(path_text: str, setting: str) -> Mapping[str, Any]:
    if not path_text.strip():
        raise ConfigError(setting, "an empty path")
    path = Path(path_text)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(setting, f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(setting, f"{path} is a directory, not a config file") from None
    except OSError as error:
        raise ConfigError(
            setting, f"config file {path} cannot be read: {error.strerror or error}"
        ) from None
    except ValueError as error:  # tomllib.TOMLDecodeError, or bytes that are not UTF-8
        raise ConfigError(setting, f"config file {path} is not valid TOML: {error}") from None


_TOML_TYPE_NAMES = {list: "a list", dict: "a table", bool: "a boolean"}


def _scalar_text(opt: Option, value: Any) -> str:
    """A config-file value as the text a user would type, refusing TOML types that do not fit
    the setting (a table, a list for a single value, a date, a boolean for a number...)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        if opt.is_bool:
            return "true" if value else "false"
        raise ValueError("expected a string or a number, got a boolean")
    if isinstance(value, int | float) and not opt.is_bool:
        return str(value)
    got = _TOML_TYPE_NAMES.get(type(value), f"a TOML {type(value).__name__}")
    expected = "true or false" if opt.is_bool else "a string or a number"
    raise ValueError(f"expected {expected}, got {got}")


def _texts(opt: Option, raw: Any, from_file: bool) -> list[str]:
    """The value(s) as text: one for a single-valued option, any number for a repeated one
    (a list in a config file, one flag per value, commas in the environment or a default)."""
    if not opt.repeated:
        return [_scalar_text(opt, raw) if from_file else raw]
    if isinstance(raw, list):
        return [_scalar_text(opt, item) if from_file else item for item in raw]
    text = _scalar_text(opt, raw)
    if not text.strip():
        return []
    parts = text.split(",")
    if any(not part.strip() for part in parts):
        raise ValueError(f"{text!r} has an empty item (separate the values with single commas)")
    return parts


def _convert(opt: Option, raw: Any, source: str | None, *, from_file: bool = False) -> Any:
    """Parse a flag (`source` None), environment, file (`from_file`: a TOML value) or default
    value; errors name the setting and where its value came from."""
    setting = opt.cli_flag if source is None else f"{opt.cli_flag} (from {source})"
    try:
        out = [opt.parse(text) for text in _texts(opt, raw, from_file)]
    except (ValueError, OSError) as error:
        raise ConfigError(setting, str(error)) from None
    return out if opt.repeated else out[0]


def resolve(
    args: argparse.Namespace,
    options: Iterable[Option],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The value of every option, by precedence flag > env > file > default, each parsed by
    its option's `parse` (defaults too)."""
    env = os.environ if environ is None else environ
    options = tuple(options)
    file_values: Mapping[str, Any] = {}
    config_flag = getattr(args, "config", None)
    config_path = config_flag if config_flag is not None else env.get("SPCS_CONFIG") or None
    if config_path is not None:
        setting = (
            "--config" if config_flag is not None else "--config (from environment SPCS_CONFIG)"
        )
        file_values = _load_file(config_path, setting)
        unknown = sorted(set(file_values) - {opt.name for opt in options})
        if unknown:
            raise ConfigError(
                setting,
                f"config file {config_path} has unknown settings {', '.join(unknown)} "
                "(keys are the flag names with '_' for '-')",
            )
    values: dict[str, Any] = {}
    for opt in options:
        flag_value = getattr(args, opt.name, None)
        if flag_value is not None:
            values[opt.name] = _convert(opt, flag_value, None)
        elif opt.env_var in env:
            values[opt.name] = _convert(opt, env[opt.env_var], f"environment {opt.env_var}")
        elif opt.name in file_values:
            raw = file_values[opt.name]
            values[opt.name] = _convert(opt, raw, f"config file {config_path}", from_file=True)
        elif opt.default is not None:
            values[opt.name] = _convert(opt, opt.default, f"default {opt.default}")
        else:
            values[opt.name] = [] if opt.repeated else None
    return values


def _check_tls(settings: ServerSettings) -> None:
    """The PEM files load the way gRPC will load them: a certificate, the key that matches it
    (not passphrase-protected), a CA bundle with at least one certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for setting, path in (("--tls-cert", settings.tls_cert), ("--tls-ca", settings.tls_ca)):
        if path is not None:
            try:
                context.load_verify_locations(cafile=path)
            except (ssl.SSLError, OSError) as error:
                raise ConfigError(setting, f"{path} holds no PEM certificate ({error})") from None
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            context.load_cert_chain(settings.tls_cert, settings.tls_key, password=lambda: b"")
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(
                "--tls-key",
                f"{settings.tls_key} is not an unencrypted PEM private key matching "
                f"--tls-cert {settings.tls_cert} ({error})",
            ) from None


@dataclass(frozen=True)
class ServerSettings:
    """What `spcs.common.server` needs, whichever service it runs."""

    listen: tuple[str, int]
    log_file: Path | None
    log_level: str
    log_format: str
    metrics_listen: tuple[str, int] | None
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
        if settings.tls_cert is not None and settings.tls_key is None:
            raise ConfigError("--tls-key", "not set; --tls-cert needs the key of that certificate")
        if settings.tls_key is not None and settings.tls_cert is None:
            raise ConfigError(
                "--tls-cert", "not set; --tls-key needs the certificate it belongs to"
            )
        if settings.tls_client_auth and settings.tls_cert is None:
            raise ConfigError("--tls-client-auth", "needs --tls-cert, --tls-key and --tls-ca")
        if settings.tls_client_auth and settings.tls_ca is None:
            raise ConfigError(
                "--tls-client-auth", "needs --tls-ca (the CA that signs the clients' certificates)"
            )
        _check_tls(settings)
        return settings

    @property
    def listen_address(self) -> str:
        host, port = self.listen
        return f"{host}:{port}"
