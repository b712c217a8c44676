"""The emulator's state as plain data: what it saves equals what `dataclasses.asdict` gives,
and the copy a change works on shares nothing with the live state."""

from __future__ import annotations

import dataclasses
from typing import Any

from spcs.emulator import Emulator

from .conftest import MiB


def test_saved_state_is_the_whole_state_and_a_copy_is_independent(emu: Emulator, api: Any):
    api.volumeCreate({"name": "v1", "size": 8 * MiB, "template": "hybrid", "tags": {"a": "1"}})
    api.snapshotCreate("v1", {"name": "s1", "tags": {"b": "2"}})
    api.volumesReassign([{"volume": "v1", "rw": [1]}])
    state = emu._running().state
    assert state.attachments and len(state.volumes) == 2
    assert state.to_json() == dataclasses.asdict(state)
    copy = state.copy()
    assert copy == state
    copy.volumes[next(iter(copy.volumes))].tags["a"] = "changed"
    copy.attachments[0].rights = "ro"
    copy.templates["hybrid"].size = 1
    assert state.to_json() == dataclasses.asdict(state) != copy.to_json()
    assert all(v.tags.get("a") != "changed" for v in state.volumes.values())
    assert state.attachments[0].rights == "rw" and state.templates["hybrid"].size != 1
