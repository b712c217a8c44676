"""A StorPool API emulator: the real REST API over HTTP, volumes as sparse files on local disk.

StorPool can not run on a laptop or in CI, so spcs ships this: the same paths,
JSON, auth header, envelopes and error names as StorPool's management API
(storpool-api.md), with volume and snapshot bytes in files under a data
directory and device links on emulated client hosts exactly where StorPool's
block client puts them (``<root>/storpool/<name>``, ``<root>/storpool-byid/<gid>``).
Production code runs unchanged against it: only the address in
``/etc/storpool.conf`` differs.

In-process use (tests, the demo, other components)::

    from spcs.emulator import Emulator

    emu = Emulator(
        data_dir,                        # state + data files; survives restarts
        token="1234567890123456789",     # None: saved in data_dir / generated
        clients={1: root1, 2: root2},    # client id -> directory standing in for /dev
        cluster_id="emu.a",              # None: the persisted one, else "emu.a"
        templates={"hybrid": 10 << 30},  # name -> capacity in bytes (None: fs size)
        loop=False,                      # True (root only): loop devices behind the links
        durable=False,                   # True: fsync every state change
        location_name=None,              # this location's name (None: the location id, "emu")
        bridge=None,                     # the locations it sees (None: only itself)
        remote_bandwidth=512 << 20,      # bytes/s snapshots are fetched from others (None: any)
        copy_on_write="auto",            # "off": never an XFS image of its own (spcs.emulator.cow)
    )
    emu.start(host="127.0.0.1", port=0)  # serves in a background thread
    emu.url, emu.host, emu.port, emu.token, emu.cluster_id
    api = emu.api()                      # storpool.spapi.Api(..., multiCluster=True)
    emu.write_conf("/tmp/storpool.conf") # storpool.conf files, see `spcs.emulator.conf`
    emu.state_snapshot()                 # the whole world as plain data, for assertions
    emu.set_faults({"transientRate": 0.2, "seed": 1})   # see `spcs.emulator.faults`
    emu.mark_open(1, "vol1")             # pretend client 1 holds vol1 open
    emu.request_counts()                 # {"VolumesSpace": 3, ...}: API requests per command
    emu.reset_request_counts()           # count from zero again
    emu.transfers_running()              # gids being fetched from other locations now
    emu.set_remote_bandwidth(8 << 20)    # pace those transfers (running ones too)
    emu.stop()                           # devices stay; stop(release_devices=True) removes them
    emu.start(port=emu.port)             # same world, same address (host/port survive stop())

``with Emulator(...) as emu:`` starts it and on exit stops it and removes devices.

As a process: ``spcs emulator --data DIR [--listen HOST:PORT] [--token T]
[--client ID[=ROOT]]... [--cluster-id ID] [--template NAME[:CAPACITY]]...
[--loop] [--fsync] [--write-conf PATH] [--location-name NAME] [--remote-bandwidth BYTES]
[--remote-cluster CLUSTER_ID=PORT]...`` (also ``python -m spcs.cli emulator ...``); it
stops cleanly on SIGTERM/SIGINT. See ``spcs emulator --help`` for fault flags, and
`spcs.emulator.cli` for ``--remote-cluster``.

Several locations (StorPool multi-location, CloudStack zones): emulators that share one
`spcs.emulator.bridge.Bridge` see each other; snapshots are exported, listed and copied
between them, the copy's bytes fetched in the background (`spcs.emulator.remote`,
`spcs.emulator.transfer`)::

    bridge = Bridge()                    # from spcs.emulator import Bridge
    zone1 = Emulator(dir1, cluster_id="zone1.a", bridge=bridge).start()
    zone2 = Emulator(dir2, cluster_id="zone2.a", bridge=bridge).start()

Admin endpoints (emulator-specific, same token) are described in
`spcs.emulator.admin`: ``/ctrl/1.0/_emulator/{faults,open,capacity,state,requests}``.

Emulator-specific choices (where the real behaviour is unknown or can not apply):

* Errors: HTTP 500 (``error_status``) with the envelope; a missing or wrong
  token is HTTP 401 ``notAuthorized``; unknown commands are HTTP 404
  ``invalidParam``; bugs are ``internalError`` (see `spcs.emulator.dispatch`).
* Global ids are ``<cluster id>.<base36(visibleVolumeId)>``; a snapshot copied from another
  location keeps that location's global id (with a visible volume id of this cluster).
* Volumes and snapshots share one namespace (they share ``/dev/storpool/``).
* Tag updates merge; a ``""`` value deletes the key.
* Shrinking without ``shrinkOk`` and a create with no size source are ``invalidParam``.
* Sizes above 100 PiB (``naming.MAX_SIZE``; StorPool documents no maximum) are
  ``invalidParam``; a size the data directory's filesystem can not hold as a file is
  ``insufficientResources``. Either way the request leaves nothing behind.
* Unexpected failures answer ``internalError`` naming the request, never the exception's text.
* A volume with neither a template nor a parent gets the default placement
  group and replication 3.
* ``VolumeRevert`` needs the volume detached (``busy`` otherwise), because the
  data file is replaced; the snapshot may be any live snapshot.
* ``VolumeDelete`` of an attached volume is ``busy`` unless ``onAttached`` is
  ``detach`` (fails with ``busy`` if open) or ``detachForce``.
* ``SnapshotDelete`` of an attached snapshot is ``busy``; one with children is
  marked ``deleted`` and vanishes with its last child; it keeps its name meanwhile.
* ``baseOn`` clones go through a transient snapshot ``*<source>@<id>`` that is not
  made the source's parent and vanishes with the clone.
* Capacity is per template, in client-data bytes, against really allocated
  bytes (``st_blocks``) of its volumes and snapshots: a create, grow, snapshot
  or revert in a template whose allocation reached its capacity answers
  ``insufficientResources`` (thin provisioning: sizes alone never do).
  Raw-space fields are the client figures times the replication.
* Every configured client is always ``running`` and up to date; attach and
  detach change devices synchronously, so ``VolumesReassignWait`` never waits.
* A device is "open" when a process has its ``sp-<pos>`` node, its loop device
  or the data file open (``/proc/*/fd``), a loop device is mounted or held, or
  the admin endpoint marked it; an fd on the data file itself counts for every
  client the object is attached to (see `spcs.emulator.devices`).
"""

from spcs.emulator.bridge import Bridge
from spcs.emulator.emulator import Emulator, EmulatorError
from spcs.emulator.faults import FaultConfig

__all__ = ["Bridge", "Emulator", "EmulatorError", "FaultConfig"]
