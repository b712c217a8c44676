"""``storpool.conf`` files that point StorPool tools and the spcs services at the emulator.

``write_conf(path, ...)`` writes:

* ``path``: the shared keys (``SP_API_HTTP_HOST``, ``SP_API_HTTP_PORT``,
  ``SP_AUTH_TOKEN``, ``SP_CLUSTER_ID``) in the unnamed section, a
  ``[<this host's name>]`` section with ``SP_OURID`` of the lowest client id
  (so tools on this machine act as that client, as on a real node), and a
  ``[spcs-client-<N>]`` section per client with ``SP_OURID=N``;
* ``<stem>.client-<N>.conf`` next to it for every client: a complete file
  whose unnamed section already says ``SP_OURID=N``, for a node service that
  plays client N without selecting a section.

Client sections also carry ``SPCS_EMULATOR_DEVICE_ROOT``, the directory that
stands in for ``/dev`` on that client (an emulator-specific key; StorPool's
tools ignore keys they do not know).
"""

from __future__ import annotations

import os
import platform

DEVICE_ROOT_KEY = "SPCS_EMULATOR_DEVICE_ROOT"


def _lines(values: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def client_conf_path(path: str, client: int) -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}.client-{client}{ext or '.conf'}"


def write_conf(
    path: str, shared: dict[str, str], clients: dict[int, str], *, hostname: str | None = None
) -> list[str]:
    """Write the files; returns their paths (the shared file first)."""
    header = ["# Written by `spcs emulator`: a StorPool API emulator, not a real cluster."]
    body = [*header, *_lines(shared), ""]
    if clients:
        body += [f"[{hostname or platform.node()}]", f"SP_OURID={min(clients)}", ""]
    for cid, root in sorted(clients.items()):
        body += [f"[spcs-client-{cid}]", f"SP_OURID={cid}", f"{DEVICE_ROOT_KEY}={root}", ""]
    written = [path]
    _atomic_write(path, "\n".join(body))
    for cid, root in sorted(clients.items()):
        one = [*header, *_lines(shared), f"SP_OURID={cid}", f"{DEVICE_ROOT_KEY}={root}", ""]
        target = client_conf_path(path, cid)
        _atomic_write(target, "\n".join(one))
        written.append(target)
    return written


def _atomic_write(path: str, text: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp"
    # The token is a secret: owner-only, like /etc/storpool.conf on a real node.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
