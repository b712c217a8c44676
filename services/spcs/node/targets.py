"""Where the management service runs: the node's `management` setting and the replicas in it.

A region may run several management replicas. The setting lists them: `HOST:PORT` entries,
separated by commas and/or given several times (`--management` repeated, a TOML list), each one
replica reached the way gRPC reaches a name (its first address that answers); or
`dns:///NAME:PORT`, gRPC's own spelling for "every address NAME resolves to", each address one
replica, resolved again on every refresh round so that replicas added to or removed from the
name are followed. A plain name is not expanded on purpose: a management host with an AAAA
record that listens on 0.0.0.0 would otherwise count as a replica that is always down.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from spcs.common.settings import parse_listen

# One per management replica: a region runs two or three; more is a typo (or a loop).
MAX_TARGETS = 16
DNS_PREFIX = "dns:///"
_NAME = re.compile(
    r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?"
)

# (host, port) → the IP addresses it resolves to, in the resolver's order; raises OSError
Resolve = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True)
class Target:
    """One entry of the `management` setting."""

    host: str  # a name, an IPv4 address or [IPv6]
    port: int
    expand: bool = False  # dns:///: every address `host` resolves to is a replica

    def __str__(self) -> str:
        return f"{DNS_PREFIX if self.expand else ''}{self.host}:{self.port}"


@dataclass(frozen=True)
class Replica:
    """One management replica to register with: the address dialled, and for a replica found
    through a dns:/// name, the name (what its TLS certificate must name)."""

    address: str  # HOST:PORT, an IPv6 address in brackets
    via: Target | None = None

    @property
    def server_name(self) -> str | None:
        return self.via.host if self.via is not None else None

    def __str__(self) -> str:
        return self.address if self.via is None else f"{self.address} ({self.via})"


def _check_host(host: str, text: str) -> None:
    if host.startswith("["):
        return  # parse_listen checked the IPv6 address
    with contextlib.suppress(ValueError):
        ipaddress.IPv4Address(host)
        return
    if len(host) > 253 or not _NAME.fullmatch(host):
        raise ValueError(
            f"{host!r} in {text!r} is not a host name or address (write HOST:PORT, several "
            "separated by commas, or dns:///NAME:PORT)"
        )


def parse_target(text: str) -> Target:
    """`HOST:PORT` or `dns:///NAME:PORT`; ValueError says what is wrong."""
    expand = text.startswith("dns:/")
    if expand and not text.startswith(DNS_PREFIX):
        raise ValueError(f"{text!r}: write a name to resolve as dns:///NAME:PORT")
    try:
        host, port = parse_listen(text.removeprefix(DNS_PREFIX) if expand else text)
    except ValueError as error:
        if not expand:
            raise
        raise ValueError(f"{text!r}: {error} (write dns:///NAME:PORT)") from None
    _check_host(host, text)
    if port == 0:
        raise ValueError(f"port 0 in {text!r}: give the port the management service listens on")
    return Target(host, port, expand)


def parse_management(value: str) -> list[Target]:
    """One value of the setting: one or more targets separated by commas."""
    items = [item.strip() for item in value.split(",")]
    if not value.strip():
        raise ValueError("an empty address")
    if any(not item for item in items):
        raise ValueError(
            f"{value!r} has an empty address (separate the addresses with single commas)"
        )
    return [parse_target(item) for item in items]


def check_targets(targets: Sequence[Target]) -> str | None:
    """What is wrong with the setting as a whole (None: nothing)."""
    seen: set[Target] = set()
    for target in targets:
        if target in seen:
            return f"{target} is listed twice"
        seen.add(target)
    if len(targets) > MAX_TARGETS:
        return (
            f"{len(targets)} addresses; at most {MAX_TARGETS} (one per management replica; "
            f"a name with many replicas is written {DNS_PREFIX}NAME:PORT)"
        )
    return None


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (getaddrinfo: /etc/hosts, DNS), without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _dialable(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def replicas_of(target: Target, resolve: Resolve) -> list[Replica]:
    """The replicas one entry stands for: itself, or (dns:///) one per address its name
    resolves to, at most MAX_TARGETS; raises OSError when the name does not resolve."""
    if not target.expand:
        return [Replica(f"{target.host}:{target.port}")]
    host = target.host[1:-1] if target.host.startswith("[") else target.host
    addresses = list(dict.fromkeys(resolve(host, target.port)))[:MAX_TARGETS]
    if not addresses:
        raise OSError(f"{target.host} resolves to no address")
    return [Replica(_dialable(address, target.port), target) for address in addresses]


def all_replicas(replica_lists: Iterable[Sequence[Replica]]) -> dict[str, Replica]:
    """Replicas by the address dialled, the first entry naming an address winning."""
    found: dict[str, Replica] = {}
    for replicas in replica_lists:
        for replica in replicas:
            found.setdefault(replica.address, replica)
    return found
