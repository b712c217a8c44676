"""Authorization by certificate identity, on servers that require client certificates.

With mutual TLS every certificate the CA signed gets through the handshake; this module decides
what each may call. A certificate's spcs roles are its URI subjectAltNames of the SPIFFE form
`spiffe://<trust domain>/spcs/<role>`:

- `spiffe://<td>/spcs/management`: the management service (it calls the nodes with it),
- `spiffe://<td>/spcs/operator`: the CloudStack management-server shim and human operators,
- `spiffe://<td>/spcs/node/<host id>`: the node service of CloudStack host <host id> (and the
  CloudStack agent shim on that host).

Any trust domain is accepted (the CA's signature is what is trusted), but only exactly this path
shape; a certificate with several such SANs has several roles. A `Policy` is data: per method
prefix the roles that may call it, plus, for RegisterNode, "a node certificate whose host id is
the request's `host_id`". Health, reflection and `spcs.v1.Identity` are open to any certificate.
Anything else answers PERMISSION_DENIED naming the method, the certificate and what it needs,
and logs one WARNING line.

`AuthzInterceptor` goes inside `spcs.common.interceptors.CallInterceptor` (see
`spcs.common.server`): a unary denial is raised as `errors.PermissionDenied` and answered by
CallInterceptor like any domain error; streaming denials abort with the same status here.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from spcs.common import errors, validate
from spcs.common.interceptors import ERROR_DOMAIN, MethodHandler, WrappingInterceptor

log = logging.getLogger(__name__)

ROLE_MANAGEMENT = "management"
ROLE_OPERATOR = "operator"
NODE_ROLE_PREFIX = "node/"
# The ErrorInfo reason of a denial (StorPool refusing a token is PERMISSION_DENIED too).
REASON = "CERTIFICATE_NOT_AUTHORIZED"
MAKE_CERTS = "deploy/tls/make-certs.sh"
# SPIFFE trust domain: lower-case letters, digits, dots, dashes, underscores.
_SPIFFE = re.compile(
    r"spiffe://(?P<domain>[a-z0-9._-]+)/spcs/(?P<role>management|operator|node/(?P<host>[^/]+))"
)
# Open to every certificate the CA signed.
ALWAYS_ALLOWED: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
    "/spcs.v1.Identity/",
)
_PEER_CACHE_SIZE = 256


def node_role(host_id: str) -> str:
    return f"{NODE_ROLE_PREFIX}{host_id}"


def role_of_uri(uri: str) -> str | None:
    """The spcs role a URI subjectAltName names (`operator`, `node/42` ...), else None."""
    found = _SPIFFE.fullmatch(uri)
    if found is None:
        return None
    host = found["host"]
    if host is not None and not validate.UUID_LIKE.match(host):
        return None
    return found["role"]


@dataclass(frozen=True)
class Peer:
    """Who a client certificate says it is: its subject (for messages) and its spcs roles."""

    subject: str
    roles: frozenset[str]
    # spiffe:// URIs of the certificate that are not spcs roles (shown in denials)
    other_uris: tuple[str, ...] = ()

    @property
    def host_ids(self) -> frozenset[str]:
        return frozenset(
            role[len(NODE_ROLE_PREFIX) :]
            for role in self.roles
            if role.startswith(NODE_ROLE_PREFIX)
        )

    def describe(self) -> str:
        """`(CN=kvm1) has node/42` or `(CN=x) has no spcs role (...)`, for messages."""
        if self.roles:
            return f"({self.subject}) has {', '.join(sorted(self.roles))}"
        hint = "no subjectAltName URI spiffe://<trust domain>/spcs/<role>"
        if self.other_uris:
            hint = f"{', '.join(self.other_uris)} is not of the form spiffe://<trust domain>/spcs/"
            hint += "management, .../spcs/operator or .../spcs/node/<host id>"
        return f"({self.subject}) has no spcs role ({hint})"


def _printable(text: str) -> str:
    """Certificate text as it may go into a message and a log line (one line, no controls)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        return f"CN={_printable(text)}"
    return _printable(cert.subject.rfc4514_string()) or "a certificate without a subject"


def peer_from_pem(pem: bytes) -> Peer:
    """The spcs identity of a PEM certificate (the TLS stack has verified it already)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return Peer("an unreadable certificate", frozenset())
    subject = _subject(cert)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    except ValueError:  # a malformed extension
        return Peer(subject, frozenset())
    roles = set()
    other = []
    for uri in uris:
        role = role_of_uri(uri)
        if role is not None:
            roles.add(role)
        elif uri.startswith("spiffe://"):
            other.append(_printable(uri))
    return Peer(subject, frozenset(roles), tuple(other))


@dataclass(frozen=True)
class Rule:
    """Methods starting with `prefix` may be called by certificates with one of `roles`; with
    `node_field`, also by a node certificate whose host id equals that field of the request."""

    prefix: str
    roles: frozenset[str]
    node_field: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", frozenset(self.roles))


@dataclass(frozen=True)
class Policy:
    """What each role may call on one service; the longest matching prefix decides."""

    service: str
    rules: tuple[Rule, ...]
    always_allowed: tuple[str, ...] = ALWAYS_ALLOWED
    _by_method: dict[str, Rule | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def is_open(self, method: str) -> bool:
        return method.startswith(self.always_allowed)

    def rule_for(self, method: str) -> Rule | None:
        if method in self._by_method:
            return self._by_method[method]
        matching = [rule for rule in self.rules if method.startswith(rule.prefix)]
        rule = max(matching, key=lambda r: len(r.prefix)) if matching else None
        self._by_method[method] = rule
        return rule

    def denial(self, method: str, peer: Peer, request: object) -> str | None:
        """None when `peer` may call `method` with `request`, else the message saying why not."""
        if self.is_open(method):
            return None
        name = method.lstrip("/")
        rule = self.rule_for(method)
        if rule is None:
            return (
                f"{name} is not in the authorization table of {self.service}, so no "
                "certificate may call it; this is a bug in spcs, report it"
            )
        if peer.roles & rule.roles:
            return None
        needed = sorted(rule.roles)
        if rule.node_field is not None:
            wanted = str(getattr(request, rule.node_field, "") or "")
            if wanted and wanted in peer.host_ids:
                return None
            if peer.host_ids:
                own = ", ".join(sorted(peer.host_ids))
                return (
                    f"{name} for host {wanted!r} refused: this certificate ({peer.subject}) is "
                    f"the node certificate of host {own}, and a node may act only as its own "
                    f"host; run that node with --host-id {own}, or issue it a certificate for "
                    f"host {wanted!r} with {MAKE_CERTS} DIR node NAME {wanted or '<host id>'}"
                )
            needed.append(node_role(wanted or "<host id>"))
        roles = " or ".join(needed)
        article = "an" if roles[0] in "aeiou" else "a"
        return (
            f"{name} needs a certificate with role {roles}; this one {peer.describe()}; "
            f"issue {article} {roles} certificate with {MAKE_CERTS}"
        )


def management_policy() -> Policy:
    """The management service: the operator role calls everything; a node only registers."""
    operator = frozenset({ROLE_OPERATOR})
    return Policy(
        "the management service",
        (
            Rule("/spcs.v1.PrimaryDataStoreLifeCycle/", operator),
            Rule("/spcs.v1.PrimaryDataStoreDriver/", operator),
            Rule("/spcs.v1.SnapshotStrategy/", operator),
            Rule("/spcs.v1.VMSnapshotStrategy/", operator),
            Rule("/spcs.v1.HostListener/", operator),
            Rule("/spcs.v1.NodeRegistry/", operator),
            Rule("/spcs.v1.NodeRegistry/RegisterNode", operator, node_field="host_id"),
            Rule("/google.longrunning.Operations/", operator),
        ),
    )


def node_policy(host_id: str) -> Policy:
    """The node of `host_id`: the management service, and that host's own node certificate
    (the CloudStack agent shim on the host)."""
    allowed = frozenset({ROLE_MANAGEMENT, node_role(host_id)})
    return Policy(
        f"the node service of host {host_id}",
        (
            Rule("/spcs.v1.StorageAdaptor/", allowed),
            Rule("/spcs.v1.AgentCommands/", allowed),
            Rule("/google.longrunning.Operations/", allowed),
        ),
    )


class AuthzInterceptor(WrappingInterceptor):
    """Checks every call but the open ones against a `Policy`; wraps all four handler kinds."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy
        self._peers: dict[bytes, Peer] = {}
        self._lock = threading.Lock()

    def wraps(self, method: str, handler: MethodHandler) -> bool:
        return not self.policy.is_open(method)

    def peer(self, context: grpc.ServicerContext) -> Peer | None:
        # each property is a list of values (types-grpcio has `Mapping[str, bytes]`)
        auth = cast("Mapping[str, Sequence[bytes]]", context.auth_context())
        pems = (auth or {}).get("x509_pem_cert") or ()
        if not pems:
            return None
        pem = pems[0]
        found = self._peers.get(pem)
        if found is None:
            found = peer_from_pem(pem)
            with self._lock:
                if len(self._peers) >= _PEER_CACHE_SIZE:
                    self._peers.clear()
                self._peers[pem] = found
        return found

    def check(self, method: str, request: object, context: grpc.ServicerContext) -> str | None:
        """None when the caller may go on, else the denial message (already logged)."""
        peer = self.peer(context)
        if peer is None:
            message = (
                f"{method.lstrip('/')} needs a client certificate signed by this service's CA "
                "and this call presented none; connect with mutual TLS"
            )
        else:
            denial = self.policy.denial(method, peer, request)
            if denial is None:
                return None
            message = denial
        log.warning("permission denied to %s: %s", context.peer(), message)
        return message

    def _wrap(self, method: str, handler: MethodHandler) -> MethodHandler:
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                denied = self.check(method, request, context)
                if denied is not None:
                    # answered by CallInterceptor, with the request id and an ErrorInfo
                    raise errors.PermissionDenied(denied, reason=REASON)
                return unary(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._guard(method, handler.unary_stream, with_request=True), **serializers
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._guard(method, handler.stream_unary, with_request=False), **serializers
            )
        stream = handler.stream_stream
        assert stream is not None  # a handler has one of the four behaviours
        return grpc.stream_stream_rpc_method_handler(
            self._guard(method, stream, with_request=False), **serializers
        )

    def _guard(
        self, method: str, inner: Callable[[Any, grpc.ServicerContext], Any], with_request: bool
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            # a request stream is not read before the decision: it is not the request message
            denied = self.check(method, request if with_request else None, context)
            if denied is not None:
                _abort(context, denied)
            return inner(request, context)

        return behavior


def _abort(context: grpc.ServicerContext, message: str) -> None:
    """PERMISSION_DENIED with an ErrorInfo, as CallInterceptor answers a unary denial."""
    code = grpc.StatusCode.PERMISSION_DENIED
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=REASON, domain=ERROR_DOMAIN))
    context.abort_with_status(rpc_status.to_status(status))
