"""The demo's template web server: the secondary store's files over HTTP on loopback, read-only,
with the single byte ranges a direct download asks for (`Range: bytes=a-b`, `bytes=a-`).

It stands in for the web server an operator registers direct-download templates from; the
nodes of the demo allow only its URL (`--direct-download-url`).
"""

from __future__ import annotations

import re
import threading
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Files(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TemplateServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # the demo prints its own lines

    def _file(self) -> Path | None:
        root = self.server.root
        wanted = (root / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
        return wanted if wanted.is_file() and wanted.is_relative_to(root) else None

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        asked = _RANGE.match(self.headers.get("Range", ""))
        if asked:
            start, end = int(asked[1]), min(int(asked[2] or size - 1), size - 1)
            if start > end:
                self.send_error(416)
                return
        self.send_response(206 if asked else 200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", f'"{int(path.stat().st_mtime_ns)}-{size}"')
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            # a reset: the node had what it needed (a ranged read of the header)
            with path.open("rb") as handle, suppress(BrokenPipeError, ConnectionResetError):
                handle.seek(start)
                _copy(handle, self.wfile, end - start + 1)


def _copy(source: BinaryIO, sink: BufferedIOBase, length: int) -> None:
    while length > 0:
        block = source.read(min(length, 1 << 20))
        if not block:
            return
        sink.write(block)
        length -= len(block)


class TemplateServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Files)
        self.root = root.resolve()
        self._thread = threading.Thread(target=self.serve_forever, name="template-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/"

    def start(self) -> TemplateServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
