"""The primary-storage URL forms the Java plugin accepts, parsed into a StorPool connection.

* `<template>`: a bare StorPool template name; API address and token come from the
  management host's storpool.conf (like the plugin's `storpool_confget`).
* `SP_API_HTTP=host:port;SP_AUTH_TOKEN=token;SP_TEMPLATE=template` (keys in any order).
* `storpool://TOKEN@host:port/TEMPLATE` (CloudStack 4.19.1+).

The token is a secret: it never appears in errors, logs or replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from spcs.common import errors, logs
from spcs.storpool.conf import StorPoolConf

TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,199}$")


@dataclass(frozen=True)
class Connection:
    """Where a pool's StorPool is and which template backs it. `repr` hides the token."""

    host: str
    port: int
    token: str
    template: str
    form: str

    def __post_init__(self) -> None:
        logs.add_secret(self.token)  # whatever message carries it, the log does not

    def __repr__(self) -> str:
        return (
            f"Connection(host={self.host!r}, port={self.port}, token=<hidden>, "
            f"template={self.template!r}, form={self.form!r})"
        )

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


def _template(name: str) -> str:
    if not TEMPLATE_NAME.match(name):
        raise errors.InvalidArgument(
            f"StorPool template name {name!r} is invalid: use 1-199 characters of A-Z a-z 0-9 _ -"
        )
    return name


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.InvalidArgument(f"{what} {text!r} is not host:port")
    return host.strip("[]"), int(port)


def parse(url: str, local: StorPoolConf | None) -> Connection:
    text = (url or "").strip()
    if not text:
        raise errors.InvalidArgument(
            "url is required: a StorPool template name, "
            "SP_API_HTTP=host:port;SP_AUTH_TOKEN=...;SP_TEMPLATE=..., "
            "or storpool://TOKEN@host:port/TEMPLATE"
        )
    if text.lower().startswith("storpool://"):
        return _parse_storpool_url(text)
    if "=" in text:
        return _parse_parameters(text)
    template = _template(text)
    if local is None or not local.auth_token:
        raise errors.InvalidArgument(
            f"url names only the StorPool template {template!r}, so the API address and token "
            "come from this management host's StorPool config, which has no SP_AUTH_TOKEN "
            f"({local.sources if local else 'no config loaded'}); give "
            "SP_API_HTTP=host:port;SP_AUTH_TOKEN=...;SP_TEMPLATE=... instead"
        )
    return Connection(local.api_host, local.api_port, local.auth_token, template, "template")


def _parse_parameters(text: str) -> Connection:
    values: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep:
            raise errors.InvalidArgument(
                f"url part {key!r} is not KEY=VALUE (expected SP_API_HTTP, SP_AUTH_TOKEN, "
                "SP_TEMPLATE)"
            )
        values[key.strip().upper()] = value.strip()
    missing = [k for k in ("SP_API_HTTP", "SP_AUTH_TOKEN", "SP_TEMPLATE") if not values.get(k)]
    if missing:
        raise errors.InvalidArgument(f"url is missing {', '.join(missing)}")
    unknown = sorted(set(values) - {"SP_API_HTTP", "SP_AUTH_TOKEN", "SP_TEMPLATE"})
    if unknown:
        raise errors.InvalidArgument(f"url has unknown keys {', '.join(unknown)}")
    host, port = _host_port(values["SP_API_HTTP"], "SP_API_HTTP")
    return Connection(
        host, port, values["SP_AUTH_TOKEN"], _template(values["SP_TEMPLATE"]), "parameters"
    )


def _parse_storpool_url(text: str) -> Connection:
    parts = urlsplit(text)
    token = unquote(parts.username or "")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not token or not parts.hostname or not port:
        raise errors.InvalidArgument(
            "url is not storpool://TOKEN@host:port/TEMPLATE (token, host and port are required)"
        )
    template = _template(unquote(parts.path.strip("/")))
    return Connection(parts.hostname, port, token, template, "storpool-url")
