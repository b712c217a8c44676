"""The strict checker itself: it must catch what the bindings let through silently."""

from __future__ import annotations

import pytest
from storpool import spapi, sptypes
from storpool.spcatch import InvalidArgumentError

from .helpers import check, required_fields

pytestmark = pytest.mark.fast

SUMMARY = {
    "name": "vol1",
    "globalId": "emu.a.1",
    "size": 1 << 30,
    "replication": 3,
    "placeAll": "default",
    "placeTail": "default",
    "placeHead": "default",
    "parentName": "",
    "templateName": "",
    "bw": "-",
    "iops": 500,
    "visibleVolumeId": 1,
    "objectsCount": 32,
    "creationTimestamp": 1700000000,
    "tags": {},
}


def test_required_fields_come_from_the_bindings() -> None:
    assert required_fields(sptypes.VolumeSummary) == {
        "bw",
        "creationTimestamp",
        "globalId",
        "iops",
        "name",
        "objectsCount",
        "parentName",
        "placeAll",
        "placeHead",
        "placeTail",
        "replication",
        "size",
        "templateName",
        "visibleVolumeId",
    }
    assert required_fields(spapi.ApiOk) == {"generation"}
    assert {"onVolume", "autoName", "deleted", "transient"} <= required_fields(
        sptypes.SnapshotSummary
    )


def test_a_complete_summary_passes() -> None:
    check([sptypes.VolumeSummary], [SUMMARY])


@pytest.mark.parametrize("field", sorted(required_fields(sptypes.VolumeSummary)))
def test_each_missing_required_field_fails(field: str) -> None:
    partial = {k: v for k, v in SUMMARY.items() if k != field}
    # What the API methods do: keep the partially built object, the field None.
    with pytest.raises(InvalidArgumentError) as caught:
        sptypes.VolumeSummary(partial)
    assert getattr(caught.value.partial, field) is None
    with pytest.raises(AssertionError):
        check([sptypes.VolumeSummary], [partial])


def test_null_or_invalid_values_fail() -> None:
    with pytest.raises(AssertionError):
        check(sptypes.VolumeSummary, {**SUMMARY, "parentName": None})
    with pytest.raises(AssertionError):
        check(sptypes.VolumeSummary, {**SUMMARY, "size": 1000})  # not a multiple of 512


def test_nested_required_fields_are_checked() -> None:
    entry = {"capacity": 1, "free": 1}
    stored = {"capacity": 1, "free": 1, "placeAll": entry, "placeTail": entry, "placeHead": entry}
    status = {
        "name": "t",
        "placeAll": "p",
        "placeTail": "p",
        "placeHead": "p",
        "replication": 3,
        "volumesCount": 0,
        "snapshotsCount": 0,
        "removingSnapshotsCount": 0,
        "size": 0,
        "totalSize": 0,
        "onDiskSize": 0,
        "storedSize": 0,
        "availablePlaceAll": 0,
        "availablePlaceTail": 0,
        "availablePlaceHead": 0,
        "capacityPlaceAll": 0,
        "capacityPlaceTail": 0,
        "capacityPlaceHead": 0,
        "stored": stored,
    }
    check(sptypes.VolumeTemplateStatusDesc, status)
    broken = {**stored, "placeHead": {"capacity": 1}}
    with pytest.raises(AssertionError):
        check(sptypes.VolumeTemplateStatusDesc, {**status, "stored": broken})
