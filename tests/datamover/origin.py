"""Real HTTP servers on loopback for the download tests.

`Origin` is Python's ThreadingHTTPServer with a handler that misbehaves on request: the first
path segment says how (``/f/NAME`` serves a file with Range support, ``/drop/NAME`` drops the
first connection halfway, ``/stall/NAME`` stops sending halfway, ...); it counts the bytes of
bodies it sent. `Nginx` is Debian's nginx started as a plain process on a loopback port,
plain HTTP and TLS with a test CA, logging the body bytes of each answer.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PIECE = 64 << 10
AUTH = "Basic " + base64.b64encode(b"user:s3cret").decode()


class Origin(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        #: (path, Range header) of every request.
        self.hits: list[tuple[str, str | None]] = []
        #: Ends the stalls (set at shutdown).
        self.release = threading.Event()
        self.dropped: set[str] = set()
        #: Bytes of bodies written to clients, in all.
        self.served = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def ranged(self) -> list[str]:
        return [r for _, r in self.hits if r]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Origin

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append((self.path, self.headers.get("Range")))
        mode, _, rest = self.path.lstrip("/").partition("/")
        action = MODES.get(mode)
        try:
            if action is None:
                self.send_error(404)
            else:
                action(self, rest)
        except (ConnectionError, TimeoutError):
            pass  # the client went away (cancel) or the test dropped it

    # -- building blocks ---------------------------------------------------------------

    def file(self, name: str) -> Path | None:
        p = self.server.root / name
        return p if p.is_file() else None

    def span(self, size: int, honour_range: bool = True) -> tuple[int, int, int]:
        """(status, start, end) for the request's Range header."""
        r = self.headers.get("Range")
        if not r or not honour_range:
            return 200, 0, size
        first, _, last = r.removeprefix("bytes=").partition("-")
        return 206, int(first), min(int(last) + 1, size) if last else size

    def send_body(
        self,
        path: Path,
        honour_range: bool = True,
        etag: str = '"v1"',
        send: int | None = None,
        pace: float = 0.0,
    ) -> None:
        """Serves `path`; only `send` bytes of the body when given, then drops the connection."""
        size = path.stat().st_size
        status, start, end = self.span(size, honour_range)
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        limit = end - start if send is None else min(send, end - start)
        with path.open("rb") as f:
            f.seek(start)
            while limit > 0:
                chunk = f.read(min(PIECE, limit))
                self.wfile.write(chunk)
                with self.server.lock:
                    self.server.served += len(chunk)
                limit -= len(chunk)
                if pace:
                    time.sleep(pace)
        if send is not None:
            self.drop()

    def drop(self) -> None:
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def first_time(self, key: str) -> bool:
        if key in self.server.dropped:
            return False
        self.server.dropped.add(key)
        return True

    # -- modes -------------------------------------------------------------------------

    def serve(self, rest: str) -> None:
        p = self.file(rest)
        if p is None:
            self.send_error(404)
            return
        self.send_body(p)

    def no_range(self, rest: str) -> None:
        """Serves the whole file (200) whatever Range asks."""
        self.with_file(rest, lambda p: self.send_body(p, honour_range=False))

    def redirect(self, rest: str) -> None:
        hops, _, name = rest.partition("/")
        left = int(hops)
        self.send_response(302)
        self.send_header("Location", f"/redirect/{left - 1}/{name}" if left > 0 else f"/f/{name}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def loop(self, rest: str) -> None:
        self.send_response(302)
        self.send_header("Location", f"/loop/{rest}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def status(self, rest: str) -> None:
        self.send_error(int(rest.partition("/")[0]))

    def with_file(self, rest: str, then: Callable[[Path], None]) -> None:
        p = self.file(rest)
        if p is None:
            self.send_error(404)
        else:
            then(p)

    def drop_once(self, rest: str) -> None:
        """The first connection drops halfway; range requests are served."""
        self.with_file(rest, lambda p: self.halfway_then(p, self.path, honour_range=True))

    def drop_no_range(self, rest: str) -> None:
        self.with_file(rest, lambda p: self.halfway_then(p, self.path, honour_range=False))

    def drop_changed(self, rest: str) -> None:
        def go(p: Path) -> None:
            if self.first_time(self.path):
                self.send_body(p, send=p.stat().st_size // 2)
            else:
                self.send_body(p, etag='"v2"')

        self.with_file(rest, go)

    def halfway_then(self, p: Path, key: str, honour_range: bool) -> None:
        if self.first_time(key):
            self.send_body(p, send=p.stat().st_size // 2)
        else:
            self.send_body(p, honour_range=honour_range)

    def short(self, rest: str) -> None:
        """Promises what was asked, sends 1 MiB of it and closes: every time."""
        self.with_file(rest, lambda p: self.send_body(p, send=1 << 20))

    def stall(self, rest: str) -> None:
        def go(p: Path) -> None:
            size = p.stat().st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with p.open("rb") as f:
                self.wfile.write(f.read(size // 2))
            self.wfile.flush()
            self.server.release.wait(60)

        self.with_file(rest, go)

    def mute(self, rest: str) -> None:
        """Reads the request and answers nothing (until the server stops)."""
        self.server.release.wait(60)

    def slow(self, rest: str) -> None:
        self.with_file(rest, lambda p: self.send_body(p, pace=0.02))

    def auth(self, rest: str) -> None:
        if self.headers.get("Authorization") != AUTH:
            self.send_error(401)
            return
        self.serve(rest)


MODES: dict[str, Callable[[Handler, str], None]] = {
    "f": Handler.serve,
    "norange": Handler.no_range,
    "redirect": Handler.redirect,
    "loop": Handler.loop,
    "status": Handler.status,
    "drop": Handler.drop_once,
    "drop-norange": Handler.drop_no_range,
    "drop-changed": Handler.drop_changed,
    "short": Handler.short,
    "stall": Handler.stall,
    "slow": Handler.slow,
    "mute": Handler.mute,
    "auth": Handler.auth,
}


def start_origin(root: Path) -> Origin:
    srv = Origin(root)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def stop_origin(srv: Origin) -> None:
    srv.release.set()
    srv.shutdown()
    srv.server_close()


# -- TLS and nginx ---------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_cert(d: Path, tag: str = "ca") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"spcs test {tag}"))
        .issuer_name(_name(f"spcs test {tag}"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (d / f"{tag}.pem", d / f"{tag}-server.pem", d / f"{tag}-server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


NGINX_CONF = """
daemon off;
master_process off;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    log_format sent '$body_bytes_sent';
    access_log {d}/access.log sent;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
    server {{ listen 127.0.0.1:{http}; root {root}; }}
    server {{
        listen 127.0.0.1:{https} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
}}
"""


class Nginx:
    """nginx serving `root` over HTTP and HTTPS (a certificate for 127.0.0.1 from `ca`)."""

    def __init__(self, root: Path, d: Path) -> None:
        self.dir = d
        self.ca, cert, key = make_ca_and_cert(d)
        self.http_port, self.https_port = free_port(), free_port()
        conf = d / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                d=d, root=root, cert=cert, key=key, http=self.http_port, https=self.https_port
            )
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(d)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.2).close()
                return
            except OSError as e:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.stderr else b""
                    raise RuntimeError(f"nginx exited: {err!r}") from e
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening")

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def sent(self) -> list[int]:
        """Bytes of the body of each answer so far (logged once nginx has sent it)."""
        log = self.dir / "access.log"
        return [int(n) for n in log.read_text().split()] if log.exists() else []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
