"""What every operation holds while it runs, and in which mode: the one table.

Reading an object takes a shared hold, so any number of clones, backups and exports of one
snapshot or template run together; changing or deleting it (delete, revert, resize,
re-template, writing a copy into it) takes an exclusive hold, which conflicts with every other
hold on the object. A conflict is answered at once with ABORTED (`spcs.common.locks`), never by
waiting. Lock keys are spelled only by the constructors below.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass


class Mode(enum.Enum):
    SHARED = "shared"
    EXCLUSIVE = "exclusive"


SHARED = Mode.SHARED
EXCLUSIVE = Mode.EXCLUSIVE


@dataclass(frozen=True)
class Hold:
    key: str
    mode: Mode


# ---- keys ---------------------------------------------------------------------------------


def storpool_object(global_id: str) -> str:
    """An existing StorPool volume or snapshot, however it is named or reached."""
    return f"storpool:{global_id}"


def new_object(kind: str, uuid: str) -> str:
    """An object being created from a CloudStack uuid (it has no global id yet)."""
    return f"create-{kind}:{uuid}"


def pool(uuid: str) -> str:
    return f"pool:{uuid}"


def vm_snapshot(uuid: str) -> str:
    return f"vmsnapshot:{uuid}"


def template_on(template: str, where: str) -> str:
    """A template (uuid or path) on a pool or a secondary store: a template copy's target."""
    return f"template:{template}@{where}"


def template_download(template_uuid: str, pool_uuid: str) -> str:
    """The one download of a template to a pool that may run at a time, on any replica."""
    return f"download:{template_uuid}@{pool_uuid}"


def zone_copy(global_id: str, pool_uuid: str) -> str:
    """The copy of StorPool snapshot `global_id` arriving in another zone's pool."""
    return f"zonecopy:{global_id}@{pool_uuid}"


def secondary_file(url: str, path: str) -> str:
    return f"secondary:{url.rstrip('/')}/{path.strip('/')}"


# ---- the table ----------------------------------------------------------------------------

S, X = SHARED, EXCLUSIVE
_POOL = {"pool": X}
_COPY = {"source": S, "destination": X}

HOLDS: Mapping[str, Mapping[str, Mode]] = {
    # management: pool lifecycle
    "InitializePool": _POOL,
    "AttachZone": _POOL,
    "MaintainPool": _POOL,
    "CancelMaintainPool": _POOL,
    "EnablePool": _POOL,
    "DisablePool": _POOL,
    "UpdatePool": _POOL,
    "DeletePool": _POOL,
    # management: an operator deletes objects of an abandoned-object report, one at a time
    "DeleteAbandonedObjects": {"object": X},
    # management: volumes
    "CreateVolume": {"volume": X},
    "DeleteVolume": {"volume": X},
    "ResizeVolume": {"volume": X},
    "RevertSnapshot": {"volume": X, "snapshot": S},
    "ProvideVmInfo": {"volume": X},
    "ChangeVolumeOffering": {"volume": X},
    "MigrateVolume": {"volume": X},
    # management: snapshots and templates
    "TakeSnapshot": {"snapshot": X, "volume": S},
    "DeleteSnapshot": {"snapshot": X},
    "DeleteTemplate": {"template": X, "cache": X},
    "TakeVMSnapshot": {"vm_snapshot": X, "volumes": S},
    "RevertVMSnapshot": {"vm_snapshot": X, "volumes": X, "snapshots": S},
    "DeleteVMSnapshot": {"vm_snapshot": X, "snapshots": X},
    # management: copies, by CopyData kind (BackupSnapshot is snapshot-to-secondary)
    "template-to-primary": _COPY,
    "template-to-volume": _COPY,
    "snapshot-to-secondary": _COPY,
    "snapshot-to-volume": _COPY,
    "secondary-snapshot-to-volume": _COPY,
    "snapshot-to-template": _COPY,
    "volume-to-template": _COPY,
    "volume-to-secondary": _COPY,
    "volume-from-secondary": _COPY,
    # a snapshot copied to another zone's pool (StorPool location): read here, written there
    "snapshot-to-zone": _COPY,
    # the first use of a template on a pool downloads it; later ones wait for that one
    "TemplateDownload": {"download": X},
    # a migration re-templates the source in place, or copies it for CloudStack to delete
    "volume-to-pool": {"source": X, "destination": X},
    # node: the StorageAdaptor
    "ConnectPhysicalDisk": {"disk": X},
    "DisconnectPhysicalDisk": {"disk": X},
    "DeletePhysicalDisk": {"disk": X},
    "ResizePhysicalDisk": {"disk": X},
    # node: agent commands (the source device is read, the destination written)
    "DownloadTemplate": {"destination": X},
    "DownloadVolume": {"destination": X},
    "BackupSnapshot": _COPY,
    "CopyVolumeToSecondary": _COPY,
    "BackupTemplate": _COPY,
    "DirectDownloadTemplate": {"destination": X},
    "FormatVolume": {"destination": X},
    "EncryptVolume": _COPY,
}


# The entries the RPC being served declared (`spcs.common.contract.rpc`); None outside an RPC
# (a job's own thread, start-up).
DECLARED: ContextVar[tuple[str, ...] | None] = ContextVar("spcs_declared_holds", default=None)


class Undeclared(Exception):
    """An RPC took holds its contract does not declare: a bug in this service."""


def declared_entry() -> str:
    """The one entry of the table the RPC being served declared (`@rpc(holds=...)`), for a
    handler whose hold is simply that entry."""
    allowed = DECLARED.get()
    if allowed is None or len(allowed) != 1:
        raise Undeclared(f"the RPC declares {allowed or 'no'} holds, not exactly one entry")
    return allowed[0]


def holds(operation: str, **objects: str | Iterable[str] | None) -> tuple[Hold, ...]:
    """The holds `operation` takes on the objects given by role, in the modes the table
    declares; a role given None holds nothing (e.g. a source that is not in StorPool)."""
    declared = HOLDS[operation]
    allowed = DECLARED.get()
    if allowed is not None and operation not in allowed:
        raise Undeclared(f"{operation} holds are taken but not declared by the RPC's @rpc")
    unknown = set(objects) - set(declared)
    if unknown:
        raise KeyError(f"{operation} declares no holds named {sorted(unknown)}")
    out: list[Hold] = []
    for role, keys in objects.items():
        if keys is None:
            continue
        for key in (keys,) if isinstance(keys, str) else keys:
            out.append(Hold(key, declared[role]))
    return tuple(out)
