"""The gRPC server both spcs services run: interceptors, health, reflection, TLS, shutdown.

A sync `grpc.server` with a bounded thread pool (all RPCs are unary; long copies run as jobs on
their own threads, never inside an RPC). Health (`grpc.health.v1`) and server reflection are
always on, so `grpcurl` works without proto files. Methods of the contract that a service does
not implement answer UNIMPLEMENTED with a message naming the method. SIGTERM/SIGINT set health
to NOT_SERVING, then `stop(grace)` lets in-flight RPCs finish; the process then exits 0.
With mutual TLS (`tls_client_auth`) every call is also checked against the service's
authorization policy (`spcs.common.authz`): what each certificate role may call.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import NoReturn

import grpc
from google.longrunning import operations_pb2_grpc, operations_proto_pb2
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from spcs import __version__
from spcs.common import errors, metrics
from spcs.common.authz import AuthzInterceptor, Policy
from spcs.common.interceptors import CallInterceptor
from spcs.common.settings import ServerSettings
from spcs.common.tls import TlsFiles, server_credentials

log = logging.getLogger(__name__)


@dataclass
class Binding:
    """One gRPC service of a server: its descriptor, servicer and registration function."""

    descriptor: ServiceDescriptor
    servicer: object
    add_to_server: Callable[[object, grpc.Server], None]
    base: type

    @property
    def name(self) -> str:
        return self.descriptor.full_name


def bind(pb2: ModuleType, pb2_grpc: ModuleType, service: str, servicer: object) -> Binding:
    """Binding for `service` of a generated pair, e.g. bind(driver_pb2, driver_pb2_grpc, ...)."""
    return Binding(
        descriptor=pb2.DESCRIPTOR.services_by_name[service],
        servicer=servicer,
        add_to_server=getattr(pb2_grpc, f"add_{service}Servicer_to_server"),
        base=getattr(pb2_grpc, f"{service}Servicer"),
    )


def bind_operations(servicer: object) -> Binding:
    return bind(operations_proto_pb2, operations_pb2_grpc, "Operations", servicer)


def _fill_unimplemented(binding: Binding) -> list[str]:
    """Make every method the servicer does not override answer UNIMPLEMENTED, naming it."""
    missing = []
    for method in binding.descriptor.methods:
        impl = getattr(type(binding.servicer), method.name, None)
        if impl is not None and impl is not getattr(binding.base, method.name, None):
            continue
        full_name = f"{binding.name}/{method.name}"
        missing.append(full_name)

        def unimplemented(
            request: object, context: grpc.ServicerContext, _n: str = full_name
        ) -> NoReturn:
            raise errors.Unimplemented(
                f"{_n} is not implemented in spcs {__version__}; do not retry, "
                "use another method or upgrade spcs"
            )

        setattr(binding.servicer, method.name, unimplemented)
    return missing


class Server:
    def __init__(
        self,
        name: str,
        settings: ServerSettings,
        bindings: Sequence[Binding],
        policy: Policy | None = None,
    ) -> None:
        """`policy`: who may call what when clients must present certificates; without one, a
        mutual-TLS server serves only health, reflection and Identity."""
        self.name = name
        self.settings = settings
        self.bindings = list(bindings)
        interceptors: list[grpc.ServerInterceptor] = [CallInterceptor()]
        if settings.tls_client_auth:
            # inside CallInterceptor, which answers a denial as it answers any domain error
            interceptors.append(AuthzInterceptor(policy or Policy(name, ())))
        self.health = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1),
        )
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
            interceptors=interceptors,
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[("grpc.so_reuseport", 0)],
        )
        self.port = 0
        self._stopped = threading.Event()
        self._finished = threading.Event()
        self._on_stop: list[Callable[[], None]] = []
        self._on_start: list[Callable[[], None]] = []
        self._metrics: metrics.Endpoint | None = None

    @property
    def service_names(self) -> list[str]:
        return [binding.name for binding in self.bindings]

    def on_start(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the server listens (it may read `self.port`)."""
        self._on_start.append(callback)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run `callback` after the server has stopped (close databases, stop timers)."""
        self._on_stop.append(callback)

    def start(self) -> int:
        for binding in self.bindings:
            missing = _fill_unimplemented(binding)
            if missing:
                log.debug("not implemented yet: %s", ", ".join(missing))
            binding.add_to_server(binding.servicer, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
        )
        tls = TlsFiles(
            self.settings.tls_cert,
            self.settings.tls_key,
            self.settings.tls_ca,
            self.settings.tls_client_auth,
        )
        creds = server_credentials(tls)
        address = self.settings.listen_address
        try:
            if creds is None:
                self.port = self._grpc.add_insecure_port(address)
            else:
                self.port = self._grpc.add_secure_port(address, creds)
        except RuntimeError as error:
            raise errors.Unavailable(f"cannot listen on {address}: {error}") from None
        if self.port == 0:
            raise errors.Unavailable(f"cannot listen on {address} (in use or not a local address)")
        self._grpc.start()
        self._serve_metrics()
        if self.settings.port_file is not None:
            tmp = self.settings.port_file.with_name(self.settings.port_file.name + ".tmp")
            tmp.write_text(f"{self.port}\n")
            tmp.replace(self.settings.port_file)
        for service in ("", *self.service_names):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        for callback in self._on_start:
            callback()
        log.info(
            "%s %s listening on %s:%d (%s) serving %s",
            self.name,
            __version__,
            self.settings.listen[0],
            self.port,
            "mutual TLS" if self.settings.tls_client_auth else "TLS" if creds else "plaintext",
            ", ".join(self.service_names),
        )
        return self.port

    def _serve_metrics(self) -> None:
        metrics.describe_build(self.name)
        if self.settings.metrics_listen is None:
            return
        host, port = self.settings.metrics_listen
        try:
            self._metrics = metrics.Endpoint(host, port)
        except OSError as error:
            self._grpc.stop(0)
            raise errors.Unavailable(
                f"cannot serve metrics on {host}:{port}: {error.strerror or error}"
            ) from None
        log.info("%s metrics on http://%s:%d/metrics", self.name, host, self._metrics.port)

    def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, refuse new RPCs, let in-flight ones finish within `grace`."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("%s stopping: draining in-flight RPCs for up to %.0fs", self.name, grace)
        self.health.enter_graceful_shutdown()
        done = self._grpc.stop(grace)
        done.wait()
        if self._metrics is not None:
            self._metrics.stop()
        for callback in self._on_stop:
            try:
                callback()
            except Exception:
                log.exception("cleanup after stop failed")
        log.info("%s stopped", self.name)
        self._finished.set()

    def wait(self) -> None:
        self._grpc.wait_for_termination()

    def serve_forever(self) -> int:
        """Start, stop on SIGTERM/SIGINT, return the exit code (0 after a clean stop)."""
        requested = threading.Event()
        started = threading.Event()

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            requested.set()  # a signal handler must return quickly: stop() blocks

        def stop_when_asked() -> None:
            # a signal during start-up (before the port is even open) stops once started
            requested.wait()
            started.wait()
            self.stop()

        # installed before start(): whoever sees the port file may already send a signal
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        threading.Thread(target=stop_when_asked, name="shutdown", daemon=True).start()
        try:
            self.start()
            started.set()
            self.wait()
            # wait_for_termination returns once gRPC has stopped; let the cleanups finish too.
            self._finished.wait()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        return 0
