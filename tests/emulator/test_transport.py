"""Transport: paths, prefixes, auth, bodies, envelopes, concurrency."""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Any

import pytest
from storpool import spapi, sptypes

from spcs.emulator import Emulator

from .conftest import GiB, MiB
from .helpers import TOKEN, check, check_summary, error_of, raw_call

pytestmark = pytest.mark.fast


def _names(reply: dict[str, Any]) -> list[str]:
    return [v["name"] for v in reply["data"]]


def test_success_envelope_has_generation_and_data(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v1", "size": MiB})
    status, reply = raw_call(emu.port, "GET", "/ctrl/1.0/VolumesList")
    assert status == 200
    assert set(reply) == {"generation", "data"}
    assert reply["generation"] == 1
    check([sptypes.VolumeSummary], reply["data"])


@pytest.mark.parametrize(
    "prefix",
    ["", "MultiCluster/", "RemoteCommand/emu.a/", "RemoteCommand/~emu.a/MultiCluster/"],
)
def test_prefixes_reach_the_same_command(emu: Emulator, api: Any, prefix: str) -> None:
    api.volumeCreate({"name": "v1", "size": MiB})
    status, reply = raw_call(emu.port, "GET", f"/ctrl/1.0/{prefix}VolumesList")
    assert status == 200
    assert _names(reply) == ["v1"]
    # clusterId only on MultiCluster calls, as the bindings document
    assert ("clusterId" in reply["data"][0]) == ("MultiCluster" in prefix)


def test_remote_command_to_another_cluster_is_refused(emu: Emulator) -> None:
    status, reply = raw_call(emu.port, "GET", "/ctrl/1.0/RemoteCommand/backup/VolumesList")
    assert error_of(reply)["name"] == "invalidParam"
    assert status == 500


def test_bindings_cluster_name_goes_through_remote_command(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "v1", "size": MiB})
    assert [v.name for v in api.volumesList(clusterName="emu.a")] == ["v1"]


@pytest.mark.parametrize("command", ["VolumeTemplatesStatus", "VolumesSpace", "SnapshotsList"])
def test_all_clusters_wraps_one_cluster(emu: Emulator, api: Any, command: str) -> None:
    api.volumeCreate({"name": "v1", "size": MiB, "template": "hybrid"})
    api.snapshotCreate("v1", {"name": "s1"})
    status, reply = raw_call(emu.port, "GET", f"/ctrl/1.0/MultiCluster/AllClusters/{command}")
    assert status == 200
    (cluster,) = reply["data"]["clusters"]
    assert cluster["clusterId"] == "emu.a"
    inner = cluster["response"]["data"]
    plain = raw_call(emu.port, "GET", f"/ctrl/1.0/{command}")[1]["data"]
    assert [x["name"] for x in inner] == [x["name"] for x in plain]
    if command == "VolumeTemplatesStatus":
        assert {"capacity", "free"} <= set(inner[0]["stored"])
    if command == "VolumesSpace":
        assert {"name", "spaceUsed", "size"} <= set(inner[0])


@pytest.mark.parametrize("name", ["#vol:1.a", "a-b_c.d:e", "x@y"])
def test_raw_special_characters_in_path_arguments(emu: Emulator, api: Any, name: str) -> None:
    if "@" in name:  # only snapshot names may hold @: make one via a group snapshot
        api.volumeCreate({"name": "base", "size": MiB})
        api.snapshotCreateGroup({"volumes": [{"volume": "base", "name": name}]})
        status, reply = raw_call(emu.port, "GET", f"/ctrl/1.0/Snapshot/{name}")
    else:
        api.volumeCreate({"name": name, "size": MiB})
        status, reply = raw_call(emu.port, "GET", f"/ctrl/1.0/Volume/{name}")
    assert status == 200, reply
    assert _names(reply) == [name]
    check_summary(reply["data"][0])


def test_snapshot_names_with_star_and_at_via_bindings(emu: Emulator, api: Any) -> None:
    api.volumeCreate({"name": "base", "size": MiB})
    api.snapshotCreateGroup({"volumes": [{"volume": "base", "name": "*snap@x"}]})
    assert [s.name for s in api.snapshotList("*snap@x")] == ["*snap@x"]
    api.snapshotDelete("*snap@x")
    assert [s.deleted for s in api.snapshotsList()] == [True]  # base still sits on it
    api.volumeDelete("base")
    assert api.snapshotsList() == []


def test_percent_encoded_path_arguments_are_decoded(emu: Emulator, api: Any) -> None:
    gid = api.volumeCreate({"name": "#v:1", "size": MiB}).globalId
    assert _names(raw_call(emu.port, "GET", "/ctrl/1.0/Volume/%23v%3A1")[1]) == ["#v:1"]
    assert _names(raw_call(emu.port, "GET", f"/ctrl/1.0/Volume/%7E{gid}")[1]) == ["#v:1"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Storpool v1:wrong"},
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": f"storpool v1:{TOKEN}x"},
    ],
)
def test_bad_or_missing_token_gets_an_error_never_data(
    emu: Emulator, api: Any, headers: dict[str, str]
) -> None:
    api.volumeCreate({"name": "secret", "size": MiB})
    for method, path in [
        ("GET", "/ctrl/1.0/VolumesList"),
        ("POST", "/ctrl/1.0/VolumeDelete/secret"),
        ("GET", "/ctrl/1.0/_emulator/state"),
        ("POST", "/ctrl/1.0/_emulator/faults"),
    ]:
        status, reply = raw_call(emu.port, method, path, token=None, headers=headers)
        assert status == 401
        assert error_of(reply)["name"] == "notAuthorized"
    assert [v.name for v in api.volumesList()] == ["secret"]  # nothing was deleted


def test_bindings_with_a_wrong_token_raise_api_error(emu: Emulator) -> None:
    bad = spapi.Api(host="127.0.0.1", port=emu.port, auth="nope", transientRetries=0)
    with pytest.raises(spapi.ApiError) as caught:
        bad.volumesList()
    assert caught.value.name == "notAuthorized"
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (None, {}),
        (b"", {"Content-Type": "application/json"}),
        (b"{}", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"  {}  ", {"Content-Type": "text/plain"}),
    ],
)
def test_no_json_calls_accept_empty_body_or_empty_object(
    emu: Emulator, api: Any, body: bytes | None, headers: dict[str, str]
) -> None:
    api.volumeCreate({"name": "v1", "size": MiB})
    status, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeDelete/v1", body, headers=headers)
    assert status == 200, reply
    check(spapi.ApiOk, reply["data"])
    assert api.volumesList() == []


def test_nulls_mean_absent(emu: Emulator, api: Any) -> None:
    body = {"name": "v1", "size": MiB, "template": None, "parent": None, "iops": None, "tags": None}
    status, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeCreate", body)
    assert status == 200, reply
    (vol,) = api.volumesList(returnRawAPIData=True)
    assert vol["templateName"] == "" and vol["iops"] == "-" and vol["tags"] == {}
    tags = {"tags": {"keep": "me", "ignored": None}}
    raw_call(emu.port, "POST", "/ctrl/1.0/VolumeUpdate/v1", tags)
    assert api.volumeList("v1")[0].tags == {"keep": "me"}


def test_double_encoded_json_body_is_unwrapped(emu: Emulator, api: Any) -> None:
    # os-brick's retry path sends json.dumps(json.dumps(body))
    body = '"{\\"name\\": \\"v1\\", \\"size\\": 1048576}"'
    status, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeCreate", body)
    assert status == 200, reply
    assert [v.name for v in api.volumesList()] == ["v1"]


def test_chunked_request_body(emu: Emulator, api: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/ctrl/1.0/VolumeCreate",
            body=iter([b'{"name": "chunky",', b' "size": 1048576}']),
            headers={"Authorization": f"Storpool v1:{TOKEN}", "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert [v.name for v in api.volumesList()] == ["chunky"]


def test_get_json_in_the_query_string(emu: Emulator) -> None:
    status, reply = raw_call(emu.port, "GET", "/ctrl/1.0/VolumesList?json=%7B%7D")
    assert status == 200 and reply["data"] == []


@pytest.mark.parametrize(
    "body", [b"{", b"{'a': 1}", b"\xff\xfe\x00", b"[" * 100000, b'{"size": 1e400}']
)
def test_malformed_json_is_invalid_param(emu: Emulator, api: Any, body: bytes) -> None:
    _status, reply = raw_call(emu.port, "POST", "/ctrl/1.0/VolumeCreate", body)
    assert error_of(reply)["name"] == "invalidParam"
    assert api.volumesList() == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/ctrl/1.0/NoSuchCommand", 404),
        ("GET", "/other/VolumesList", 404),
        ("GET", "/ctrl/1.0/", 404),
        ("POST", "/ctrl/1.0/VolumesList", 500),
        ("GET", "/ctrl/1.0/VolumeCreate", 500),
        ("GET", "/ctrl/1.0/Volume", 500),
        ("GET", "/ctrl/1.0/Volume/a/b", 500),
        ("PUT", "/ctrl/1.0/VolumesList", 405),
        ("DELETE", "/ctrl/1.0/VolumeDelete/x", 405),
    ],
)
def test_unknown_commands_methods_and_arities(
    emu: Emulator, method: str, path: str, status: int
) -> None:
    got, reply = raw_call(emu.port, method, path)
    assert got == status
    assert error_of(reply)["name"] == "invalidParam"


def test_error_envelope_as_the_bindings_see_it(api: Any) -> None:
    with pytest.raises(spapi.ApiError) as caught:
        api.volumeList("nope")
    err = caught.value
    assert (err.name, err.transient, err.status) == ("objectDoesNotExist", False, 500)
    assert err.desc == "volume nope does not exist"


def test_error_status_is_configurable(tmp_path: Any) -> None:
    with Emulator(tmp_path / "d", token=TOKEN, error_status=200) as emu:
        status, reply = raw_call(emu.port, "GET", "/ctrl/1.0/Volume/nope")
        assert status == 200
        assert error_of(reply)["name"] == "objectDoesNotExist"
        with pytest.raises(spapi.ApiError):  # the bindings key on "error" in the body
            emu.api(transientRetries=0).volumeList("nope")


def _exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read the whole answer (the server closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_garbage_on_the_socket_gets_an_envelope_and_the_server_lives(emu: Emulator) -> None:
    for junk in [b"HELLO\r\n\r\n", b"GET\r\n\r\n", b"GET /ctrl/1.0/VolumesList HTTP/9.9\r\n\r\n"]:
        answer = _exchange(emu.port, junk)
        assert answer.startswith(b"HTTP/"), answer
        assert b'"error"' in answer and b'"name"' in answer
    assert raw_call(emu.port, "GET", "/ctrl/1.0/VolumesList")[0] == 200


def test_bad_content_length(emu: Emulator) -> None:
    answer = _exchange(
        emu.port,
        b"POST /ctrl/1.0/VolumeCreate HTTP/1.1\r\nAuthorization: Storpool v1:"
        + TOKEN.encode()
        + b"\r\nContent-Length: banana\r\n\r\n",
    )
    assert b"400" in answer.split(b"\r\n")[0] and b"invalidParam" in answer


def test_ipv6_listen(tmp_path: Any) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    emu = Emulator(tmp_path / "d", token=TOKEN).start(host="::1", port=0)
    try:
        assert emu.url == f"http://[::1]:{emu.port}"
        assert raw_call(emu.port, "GET", "/ctrl/1.0/VolumesList", host="::1")[0] == 200
    finally:
        emu.stop()


def test_concurrent_requests(emu: Emulator) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        api = emu.api(transientRetries=0)
        try:
            for i in range(8):
                api.volumeCreate({"name": f"w{n}-{i}", "size": GiB, "tags": {"w": str(n)}})
                api.volumesList()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    vols = emu.api().volumesList(returnRawAPIData=True)
    assert len(vols) == 64
    assert len({v["globalId"] for v in vols}) == 64
    assert len({v["visibleVolumeId"] for v in vols}) == 64
    assert emu.state_snapshot()["state"]["generation"] == 64
