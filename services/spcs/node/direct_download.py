"""Direct-download templates on this host: which URLs a node may fetch, CloudStack's checksums.

A node fetches only from the URL prefixes its `direct_download_url` setting lists (scheme,
host and port equal, the path below the prefix's), so a caller cannot point it at the StorPool
API, a metadata service or any other address the host reaches; without the setting direct
download is refused. The data mover follows redirects itself (at most `MAX_REDIRECTS`), to
wherever the allowed server sends it: an operator allows servers, not single files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from spcs import datamover
from spcs.common import errors
from spcs.common.validate import shown

SETTING = "direct_download_url (--direct-download-url, SPCS_DIRECT_DOWNLOAD_URL)"
MAX_REDIRECTS = 5
# CloudStack's checksum prefixes (DigestHelper); plain hex is MD5
ALGORITHMS: dict[str, datamover.FileChecksum] = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-256": "sha256",
    "SHA-512": "sha512",
}
HEX_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
_CHECKSUM = re.compile(r"^(?:\{(?P<algorithm>[A-Za-z0-9-]+)\})?(?P<hex>[0-9A-Fa-f]+)$")


def _parts(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts


@dataclass(frozen=True)
class AllowedUrl:
    """One prefix of the `direct_download_url` setting."""

    scheme: str
    host: str
    port: int | None
    path: str

    @classmethod
    def parse(cls, value: str) -> AllowedUrl:
        parts = _parts(value.strip())
        if parts is None or parts.username or parts.query or parts.fragment:
            raise ValueError(
                f"{shown(value)} is not an http:// or https:// URL prefix (e.g. "
                "https://images.example.com/templates/)"
            )
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        return cls(parts.scheme, (parts.hostname or "").lower(), parts.port, path)

    def allows(self, parts: SplitResult) -> bool:
        path = parts.path or "/"
        return (
            parts.scheme == self.scheme
            and (parts.hostname or "").lower() == self.host
            and parts.port == self.port
            and (path + ("/" if not path.endswith("/") else "")).startswith(self.path)
            and ".." not in path.split("/")
        )

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{self.host}{port}{self.path}"


def check_allowed(url: str, allowed: tuple[AllowedUrl, ...]) -> None:
    parts = _parts(url)
    if parts is None:
        raise errors.InvalidArgument(
            "source.url must be an http:// or https:// URL with a host name"
        )
    if not allowed:
        raise errors.PermissionDenied(
            f"direct download is not enabled on this node: list the template servers in {SETTING}"
        )
    if not any(prefix.allows(parts) for prefix in allowed):
        where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        raise errors.PermissionDenied(
            f"direct download from {where}{parts.path} is not allowed on this node (allowed: "
            f"{', '.join(str(p) for p in allowed)}); add its server to {SETTING}"
        )


def parse_checksum(value: str) -> tuple[datamover.FileChecksum, str] | None:
    """CloudStack's checksum (`{SHA-256}hex`, or plain hex = MD5) for the data mover."""
    if not value:
        return None
    match = _CHECKSUM.match(value.strip())
    algorithm = ALGORITHMS.get((match["algorithm"] or "MD5").upper()) if match else None
    if match is None or algorithm is None or len(match["hex"]) != HEX_LENGTH[algorithm]:
        raise errors.InvalidArgument(
            f"source.checksum {shown(value)} is not a checksum CloudStack writes: "
            "{MD5}, {SHA-1}, {SHA-256} or {SHA-512} and its hex digest, or an MD5 hex digest"
        )
    return algorithm, match["hex"].lower()


def shown_checksum(algorithm: str, digest: str) -> str:
    name = next(k for k, v in ALGORITHMS.items() if v == algorithm)
    return f"{{{name}}}{digest}"
