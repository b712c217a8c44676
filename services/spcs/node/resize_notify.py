"""Telling a running VM that its disk changed size (StorPoolResizeVolumeCommand).

StorPool resizes the volume; the guest only sees it after libvirt's blockResize on the domain
(what CloudStack's `resizevolume.sh -t NOTIFYONLY` does with `virsh blockresize`). libvirt is
reached through libvirt-python when it is installed; without it the call fails with a clear
FAILED_PRECONDITION, never a silent success.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from spcs.common import errors

log = logging.getLogger(__name__)

LIBVIRT_URI = "qemu:///system"


def _libvirt() -> ModuleType:
    try:
        return importlib.import_module("libvirt")
    except ImportError:
        raise errors.FailedPrecondition(
            "libvirt not available on this host (python3-libvirt / libvirt-python is not "
            "installed), so the running VM cannot be told its disk was resized"
        ) from None


def notify(vm_name: str, path: str, new_size: int, uri: str = LIBVIRT_URI) -> None:
    libvirt = _libvirt()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as error:
        raise errors.FailedPrecondition(f"libvirt at {uri} is not reachable: {error}") from None
    try:
        try:
            domain = conn.lookupByName(vm_name)
        except libvirt.libvirtError:
            raise errors.NotFound(f"VM {vm_name} is not running on this host") from None
        try:
            # flag BLOCK_RESIZE_BYTES: the size is in bytes, not KiB
            domain.blockResize(path, new_size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        except libvirt.libvirtError as error:
            raise errors.FailedPrecondition(
                f"libvirt could not resize disk {path} of VM {vm_name}: {error}"
            ) from None
        log.info("VM %s notified: disk %s is now %d bytes", vm_name, path, new_size)
    finally:
        conn.close()
