"""The HTTP server: a threaded ``http.server`` that hands each request to the `Dispatcher`.

One request per connection, answered as ``HTTP/1.0`` with ``Connection: close``
and ``Content-Type: application/json``, like the real API's samples. One log
line per request.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from spcs.emulator.dispatch import MAX_BODY, Dispatcher, Reply
from spcs.emulator.errors import ApiError, invalid

log = logging.getLogger(__name__)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.dispatcher = dispatcher
        super().__init__(address, RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-reply is not the emulator's problem.
        log.debug("connection from %s ended with an error", client_address)


class RequestHandler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.0"
    server_version = "spcs-emulator"
    timeout = 60  # seconds a client may take to send its request

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._refuse()

    def do_DELETE(self) -> None:
        self._refuse()

    def do_PATCH(self) -> None:
        self._refuse()

    def do_HEAD(self) -> None:
        self._refuse()

    def _refuse(self) -> None:
        err = invalid(f"method {self.command} is not supported; use GET or POST")
        self._send(Reply(405, err.envelope(), err.name), time.monotonic())

    def _serve(self, method: str) -> None:
        start = time.monotonic()
        try:
            body = self._read_body()
        except ApiError as err:
            self._send(Reply(400, err.envelope(), err.name), start)
            return
        reply = self.server.dispatcher.handle(method, self.path, self.headers, body)
        self._send(reply, start)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise invalid("bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise invalid(f"request body larger than {MAX_BODY} bytes")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise invalid("bad chunked encoding") from None
            if size == 0:
                self.rfile.readline(1024)
                return bytes(out)
            if len(out) + size > MAX_BODY:
                raise invalid(f"request body larger than {MAX_BODY} bytes")
            out += self.rfile.read(size)
            self.rfile.readline(1024)

    def _send(self, reply: Reply, start: float) -> None:
        payload = json.dumps(reply.payload).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-control", "private")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            log.debug("client went away before the reply")
        log.info(
            "%s %s -> %d %s (%.1f ms)",
            getattr(self, "command", None) or "-",
            getattr(self, "path", None) or "-",
            reply.status,
            reply.outcome,
            (time.monotonic() - start) * 1000,
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method...) as envelopes too."""
        self.close_connection = True
        # Garbage request lines leave http.server assuming HTTP/0.9, which has no
        # status line; nobody speaks 0.9, so answer a proper HTTP/1.0 reply.
        self.request_version = self.protocol_version
        err = invalid(message or explain or f"HTTP error {code}")
        self._send(Reply(code, err.envelope(), err.name), time.monotonic())

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
