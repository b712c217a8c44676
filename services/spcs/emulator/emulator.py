"""`Emulator`: the in-process API (build, start, inspect, stop) behind ``spcs emulator``."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from spcs.emulator import admin, conf, cow, devices, naming
from spcs.emulator.bridge import Bridge, BridgeError
from spcs.emulator.cluster import Cluster
from spcs.emulator.dispatch import Dispatcher
from spcs.emulator.errors import ApiError
from spcs.emulator.faults import FaultConfig, Faults
from spcs.emulator.model import PlacementGroup, State
from spcs.emulator.requests import RequestCounts
from spcs.emulator.store import Store
from spcs.emulator.templates import new_template
from spcs.emulator.transfer import DEFAULT_BANDWIDTH, Pacer
from spcs.emulator.transport import Server

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_ID = "emu.a"
DEFAULT_PLACEMENT_GROUP = "default"
DEFAULT_PORT = 9712


class EmulatorError(Exception):
    """The emulator can not start with this configuration."""


class Emulator:
    """A StorPool API emulator serving one data directory.

    Args:
        data_dir: where state and volume data live (created if missing).
        token: the API token; None = the one saved in `data_dir` (or a new one).
        clients: client id -> device root (the directory standing in for /dev).
        cluster_id: ``<location>.<subcluster>``; None = the persisted one, else "emu.a".
        templates: template name -> capacity in bytes (None = the filesystem's
            size), or just names; created at start when missing, capacity updated.
        placement_group: the default placement group, created when missing.
        loop: back devices with loop devices (root only) instead of files.
        faults: the initial fault configuration (off by default).
        error_status: HTTP status of error replies (the real one is unknown).
        cluster_name: a name accepted in ``RemoteCommand/<name>/`` besides the id.
        durable: fsync every state change (survives power loss; slower).
        location_name: the human-readable name of its location (a RemoteLocationName);
            None = the location id, the first part of the cluster id.
        bridge: the locations it can see (`spcs.emulator.bridge`); None = a private bridge
            holding only itself. It joins in start() and leaves (stays known, unreachable) in
            stop().
        remote_bandwidth: bytes per second that snapshots copied from other locations are
            fetched at (`spcs.emulator.transfer`); None or 0 = as fast as the disk goes.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        token: str | None = None,
        clients: Mapping[int, str | os.PathLike[str]] | None = None,
        cluster_id: str | None = None,
        templates: Mapping[str, int | None] | Iterable[str] | None = None,
        placement_group: str = DEFAULT_PLACEMENT_GROUP,
        loop: bool = False,
        faults: FaultConfig | None = None,
        error_status: int = 500,
        cluster_name: str | None = None,
        durable: bool = False,
        location_name: str | None = None,
        bridge: Bridge | None = None,
        remote_bandwidth: int | None = DEFAULT_BANDWIDTH,
        copy_on_write: str = cow.AUTO,
    ) -> None:
        self.data_dir = os.fspath(data_dir)
        self._durable = durable
        self._token = token
        self._clients = {int(k): os.fspath(v) for k, v in (clients or {}).items()}
        self._cluster_id = cluster_id
        if templates is None:
            templates = {}
        elif not isinstance(templates, Mapping):
            templates = dict.fromkeys(templates)
        self._templates: dict[str, int | None] = dict(templates)
        self._placement_group = placement_group
        self._loop = loop
        self.faults = Faults(faults)
        self.requests = RequestCounts()  # kept across restarts, like the faults
        self._error_status = error_status
        self._cluster_name = cluster_name
        self._location_name = location_name
        self.bridge = bridge if bridge is not None else Bridge()
        self._cow_mode = copy_on_write
        self._cow: cow.CopyOnWrite | None = None
        self._validate()
        self._pacer = Pacer(_bandwidth(remote_bandwidth))  # kept across restarts
        self.cluster: Cluster | None = None
        self._store: Store | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._address: tuple[str, int] | None = None  # kept after stop(), for a restart
        self.token = ""

    def _validate(self) -> None:
        self._validate_clients()
        for name, capacity in self._templates.items():
            try:
                naming.template_name(name)
            except ApiError as exc:
                raise EmulatorError(exc.descr) from None
            if capacity is not None and capacity < 0:
                raise EmulatorError(f"capacity of template {name} must be >= 0")
        try:
            naming.placement_group_name(self._placement_group)
            if self._cluster_id is not None:
                naming.cluster_id(self._cluster_id)
            if self._location_name is not None:
                naming.location_name(self._location_name)
        except (ApiError, ValueError) as exc:
            raise EmulatorError(str(exc)) from None
        if self._cow_mode not in cow.MODES:
            raise EmulatorError(f"copy_on_write must be one of {', '.join(cow.MODES)}")
        if self._loop:
            ok, why = devices.loop_supported()
            if not ok:
                raise EmulatorError(f"--loop: {why}")

    def _validate_clients(self) -> None:
        roots: dict[str, int] = {}
        for cid, root in self._clients.items():
            try:
                naming.client_id(cid)
            except ApiError as exc:
                raise EmulatorError(exc.descr) from None
            real = os.path.realpath(root)
            if real in roots:
                raise EmulatorError(f"clients {roots[real]} and {cid} share the device root {root}")
            roots[real] = cid

    # Life cycle.

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Emulator:
        """Load (or create) the world, restore devices and serve HTTP in a thread."""
        if self._server is not None:
            raise EmulatorError("already started")
        self._stopping.clear()
        try:
            store = Store(self.data_dir, durable=self._durable)
        except Exception as exc:
            raise EmulatorError(str(exc)) from exc
        cluster: Cluster | None = None
        try:
            self.token = store.token(self._token)
            try:
                self._cow = cow.prepare(store.dir, store.objects_dir, self._cow_mode)
            except cow.CowError as exc:
                raise EmulatorError(str(exc)) from None
            cluster = self._build_cluster(store)
            self._join(cluster)
            dispatcher = Dispatcher(
                cluster,
                self.token,
                self.faults,
                error_status=self._error_status,
                cluster_name=self._cluster_name,
                stopping=self._stopping,
                requests=self.requests,
            )
            server = Server((host, port), dispatcher)
        except BaseException:
            if cluster is not None:
                self.bridge.leave(cluster)
            if self._cow is not None:
                self._cow.release()
            store.close()
            raise
        self._store, self.cluster, self._server = store, cluster, server
        addr = server.server_address
        self._address = (str(addr[0]), int(addr[1]))
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() waits for the loop
            name="spcs-emulator-http",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "StorPool API emulator for cluster %s (location %s) on %s (data %s, clients %s)",
            cluster.state.cluster_id,
            cluster.location_name,
            self.url,
            store.dir,
            ", ".join(f"{c}={h.root}" for c, h in sorted(cluster.hosts.items())) or "none",
        )
        cluster.transfers.resume_all()
        return self

    def _build_cluster(self, store: Store) -> Cluster:
        state = self._load_state(store)
        hosts = {}
        for cid, root in self._clients.items():
            os.makedirs(root, exist_ok=True)
            hosts[cid] = devices.ClientHost(cid, root)
        cluster = Cluster(
            store,
            state,
            hosts,
            loop=self._loop,
            default_placement_group=self._placement_group,
            bridge=self.bridge,
            location_name=self._location_name,
            faults=self.faults,
            pacer=self._pacer,
        )
        store.reconcile(state)
        cluster.restore_devices()
        return cluster

    def _join(self, cluster: Cluster) -> None:
        try:
            self.bridge.join(cluster.location_id, cluster.location_name, cluster)
        except BridgeError as exc:
            raise EmulatorError(str(exc)) from None

    def _load_state(self, store: Store) -> State:
        state = store.load()
        if state is None:
            state = State(cluster_id=self._cluster_id or DEFAULT_CLUSTER_ID)
        elif self._cluster_id is not None and self._cluster_id != state.cluster_id:
            raise EmulatorError(
                f"{store.dir} holds cluster {state.cluster_id}, not {self._cluster_id}"
            )
        if self._placement_group not in state.placement_groups:
            state.placement_groups[self._placement_group] = PlacementGroup(
                id=state.next_pg_id, name=self._placement_group
            )
            state.next_pg_id += 1
        for name, capacity in self._templates.items():
            tmpl = state.templates.get(name)
            if tmpl is None:
                new_template(state, name, self._placement_group, replication=3, capacity=capacity)
            elif capacity is not None:
                tmpl.capacity = capacity
        store.save(state)
        return state

    def stop(self, *, release_devices: bool = False) -> None:
        """Stop serving. Devices stay (like a client's while mgmt restarts) unless asked."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        if self.cluster is not None:
            self.bridge.leave(self.cluster)  # other locations' transfers from here stop
            self.cluster.transfers.close()  # before the store closes: they commit through it
        if release_devices and self.cluster is not None:
            self.cluster.release_devices()
        # devices kept for a restart may live on the image: it stays mounted for them
        if self._cow is not None and (release_devices or not self._attachments()):
            self._cow.release()
        if self._store is not None:
            self._store.close()
        self._server = self._thread = self._store = None
        log.info("emulator stopped")

    def _attachments(self) -> bool:
        if self.cluster is None:
            return False
        with self.cluster.read() as state:
            return bool(state.attachments)

    @property
    def copy_on_write(self) -> str:
        """How snapshots and clones copy data: "reflink" (the data filesystem shares
        extents), "xfs-image" (on the emulator's own XFS image) or "full-copy"."""
        if self._cow is None:
            raise EmulatorError("not started")
        return self._cow.how

    def release_devices(self) -> None:
        """Tear down every device link and loop device (attachments stay recorded)."""
        if self.cluster is not None:
            self.cluster.release_devices()

    def __enter__(self) -> Emulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(release_devices=True)

    # Where it is.

    @property
    def host(self) -> str:
        """The address it serves on (after stop(): served on, so start(port=emu.port) works)."""
        return self._bound()[0]

    @property
    def port(self) -> int:
        return self._bound()[1]

    @property
    def url(self) -> str:
        host = self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def _bound(self) -> tuple[str, int]:
        if self._address is None:
            raise EmulatorError("not started")
        return self._address

    @property
    def cluster_id(self) -> str:
        return self._running().state.cluster_id

    @property
    def location_id(self) -> str:
        """The first part of the cluster id (known before start only when given)."""
        if self.cluster is not None:
            return self.cluster.location_id
        if self._cluster_id is not None:
            return self._cluster_id.partition(".")[0]
        raise EmulatorError("not started")

    @property
    def location_name(self) -> str:
        return self._location_name or self.location_id

    def client_root(self, client: int) -> str:
        return self._running().host(client).root

    def _running(self) -> Cluster:
        if self.cluster is None:
            raise EmulatorError("not started")
        return self.cluster

    # Configuration for clients of the emulator.

    def storpool_conf(self) -> dict[str, str]:
        """The shared ``storpool.conf`` keys for this emulator."""
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return {
            "SP_API_HTTP_HOST": host,
            "SP_API_HTTP_PORT": str(self.port),
            "SP_AUTH_TOKEN": self.token,
            "SP_CLUSTER_ID": self.cluster_id,
        }

    def write_conf(self, path: str | os.PathLike[str]) -> list[str]:
        """Write ``storpool.conf`` files (see `spcs.emulator.conf`); returns their paths."""
        clients = {cid: h.root for cid, h in self._running().hosts.items()}
        return conf.write_conf(os.fspath(path), self.storpool_conf(), clients)

    def api(self, **kwargs: Any) -> Any:
        """StorPool's official bindings (``spapi.Api``) pointed at this emulator."""
        from storpool import spapi

        kwargs.setdefault("multiCluster", True)
        return spapi.Api(host=self.host, port=self.port, auth=self.token, **kwargs)

    # Inspection and test hooks.

    def state_snapshot(self) -> dict[str, Any]:
        """A deep copy of the world (the persisted state plus runtime facts)."""
        return admin.snapshot(self._running())

    def request_counts(self) -> dict[str, int]:
        """API requests answered so far, per command (see `spcs.emulator.requests`)."""
        return self.requests.snapshot()

    def reset_request_counts(self) -> dict[str, int]:
        """Count from zero again; returns the counts until now."""
        return self.requests.reset()

    def set_faults(self, config: FaultConfig | Mapping[str, Any]) -> None:
        if not isinstance(config, FaultConfig):
            config = FaultConfig.from_json(dict(config))
        self.faults.configure(config)

    def set_remote_bandwidth(self, bandwidth: int | None) -> None:
        """Fetch snapshots from other locations at this many bytes per second from now on
        (running transfers too); None or 0 = unpaced."""
        self._pacer.bandwidth = _bandwidth(bandwidth)

    def transfers_running(self) -> list[str]:
        """Global ids of the snapshots being fetched from other locations right now."""
        return self.cluster.transfers.running() if self.cluster is not None else []

    def set_client_running(self, client: int, running: bool) -> None:
        """Show `client`'s StorPool service down (or running again) in ServicesList."""
        self._running().set_client_running(client, running)

    def mark_open(
        self, client: int, ref: str, *, snapshot: bool = False, open: bool = True
    ) -> None:
        """Pretend a process on `client` holds the attachment open (or stop pretending)."""
        from spcs.emulator import attachments

        cluster = self._running()
        key = "snapshot" if snapshot else "volume"
        with cluster.change(bump=False) as txn:
            attachments.mark_open(cluster, txn, {"client": client, key: ref, "open": open})


def _bandwidth(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise EmulatorError(f"remote bandwidth must be bytes per second (>= 0), not {value!r}")
    return value or None
