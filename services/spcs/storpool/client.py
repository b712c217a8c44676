"""The seam between spcs and StorPool: what a StorPool client offers, and how one is made.

`spcs.storpool.api.StorPoolApi` is the implementation that speaks StorPool's REST API (and so
the emulator's); `spcs.storpool.memory.MemoryStorPool` is an in-memory one for fast tests. The
domain code types against `StorPoolClient` and gets its clients from a `ClientFactory`, so
either can sit behind it. A behaviour suite (`tests/storpool/test_client_behaviour.py`) runs
against both, which keeps the in-memory one honest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from spcs.storpool.records import (
    Attachment,
    StorPoolSnapshot,
    StorPoolVolume,
    TemplateStatus,
)
from spcs.storpool.space import SpaceCache, VolumeSpace


class StorPoolClient(Protocol):
    """One StorPool API endpoint. Errors are `spcs.storpool.errors` classes (domain errors)."""

    endpoint: str
    space: SpaceCache

    # volumes
    def volume(self, ref: str) -> StorPoolVolume: ...
    def volume_or_none(self, ref: str) -> StorPoolVolume | None: ...
    def volumes(self) -> list[StorPoolVolume]: ...
    def volume_create(
        self,
        *,
        name: str,
        size: int | None = None,
        template: str | None = None,
        parent: str | None = None,
        base_on: str | None = None,
        iops: int | None = None,
        bw: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str: ...
    def volume_update(self, ref: str, **changes: Any) -> None: ...
    def volume_delete(self, ref: str) -> bool: ...
    def volume_revert(self, ref: str, snapshot_ref: str) -> None: ...

    # snapshots
    def snapshot(self, ref: str) -> StorPoolSnapshot: ...
    def snapshot_or_none(self, ref: str) -> StorPoolSnapshot | None: ...
    def snapshots(self) -> list[StorPoolSnapshot]: ...
    def snapshot_create(
        self,
        volume_ref: str,
        *,
        name: str,
        tags: Mapping[str, str] | None = None,
        delete_after: int = 0,
    ) -> str: ...
    def snapshot_update(self, ref: str, **changes: Any) -> None: ...
    def snapshot_delete(self, ref: str) -> bool: ...
    def group_snapshot(
        self, volumes: Iterable[tuple[str, str]], tags: Mapping[str, str]
    ) -> list[dict[str, Any]]: ...

    # attachments
    def attachments(self) -> list[Attachment]: ...
    def attach(
        self, ref: str, client_id: int, *, read_only: bool, snapshot: bool, timeout: int
    ) -> None: ...
    def detach(self, ref: str, client_id: int, *, snapshot: bool, force: bool) -> None: ...
    def detach_all(self, ref: str, *, snapshot: bool) -> None: ...

    # templates, clients, space
    def template(self, name: str) -> dict[str, Any]: ...
    def template_status(self, name: str) -> TemplateStatus: ...
    def volumes_space(self) -> dict[str, tuple[int, int]]: ...
    def snapshots_space(self) -> list[VolumeSpace]: ...
    def for_probes(self) -> StorPoolClient: ...
    def local_cluster_id(self) -> str | None: ...
    def client_running(self, client_id: int) -> bool: ...
    def client_statuses(self) -> dict[int, str]: ...


# (API host, port, token) → a client for that endpoint.
ClientFactory = Callable[[str, int, str], StorPoolClient]
