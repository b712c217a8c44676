"""Test helpers: a strict reply checker built from the bindings' types, and raw HTTP.

The official bindings parse replies leniently: a missing required field
becomes ``None`` and the call still "succeeds" (storpool-api.md §1.8). `check`
parses a raw reply with the bindings' own type and fails on any error, then
walks the type definition and fails on any REQUIRED field that is absent or
null, however deep.
"""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

from storpool import spapi, sptype, sptypes
from storpool.spcatch import InvalidArgumentError
from storpool.spjson import JsonObjectImpl

TOKEN = "1556129910218014736"


def field_kind(t: sptype.SpType) -> str:
    """ "required", "optional", "internal" or "defaulted", as the bindings treat the field."""
    if t.name.startswith("Optional("):
        return "optional"
    if t.name.startswith("Internal("):
        return "internal"
    try:
        t.defaultVal()
    except Exception:
        return "required"
    return "defaulted"


def required_fields(cls: type) -> set[str]:
    return {a for a, t in cls.__jsonAttrDefs__.items() if field_kind(t) == "required"}


_LIST_RE = re.compile(r"^\[(\w+)\]$")
_DICT_RE = re.compile(r"^\{[^:]+: (\w+)\}$")


def _json_class(name: str) -> type | None:
    for module in (sptypes, spapi):
        obj = getattr(module, name, None)
        if isinstance(obj, type) and issubclass(obj, JsonObjectImpl):
            return obj
    return None


def _nested(t: sptype.SpType) -> Any:
    """The JsonObject type (or [type] / {key: type}) inside a field's type, if any."""
    if isinstance(t.handleVal, type) and issubclass(t.handleVal, JsonObjectImpl):
        return t.handleVal
    m = _LIST_RE.match(t.name)
    if m and _json_class(m.group(1)):
        return [_json_class(m.group(1))]
    m = _DICT_RE.match(t.name)
    if m and _json_class(m.group(1)):
        return {str: _json_class(m.group(1))}
    return None


def _walk(tp: Any, raw: Any, path: str) -> None:
    if isinstance(tp, list):
        assert isinstance(raw, list), f"{path}: expected a list, got {raw!r}"
        for i, item in enumerate(raw):
            _walk(tp[0], item, f"{path}[{i}]")
    elif isinstance(tp, dict):
        assert isinstance(raw, dict), f"{path}: expected an object, got {raw!r}"
        (value_type,) = tp.values()
        for key, item in raw.items():
            _walk(value_type, item, f"{path}[{key}]")
    elif isinstance(tp, type) and issubclass(tp, JsonObjectImpl):
        assert isinstance(raw, dict), f"{path}: expected an object, got {raw!r}"
        for attr, t in tp.__jsonAttrDefs__.items():
            if field_kind(t) == "required":
                assert attr in raw, f"{path}: required field {attr!r} missing"
                assert raw[attr] is not None, f"{path}: required field {attr!r} is null"
            if attr in raw and raw[attr] is not None:
                sub = _nested(t)
                if sub is not None:
                    _walk(sub, raw[attr], f"{path}.{attr}")


def check(tp: Any, raw: Any, path: str = "data") -> Any:
    """Parse `raw` as bindings type `tp` (e.g. ``[sptypes.VolumeSummary]``) strictly."""
    try:
        parsed = sptype.spType(tp).handleVal(raw)
    except InvalidArgumentError as exc:
        raise AssertionError(f"{path}: the bindings reject the reply: {exc}") from None
    _walk(tp, raw, path)
    return parsed


def check_summary(raw: dict[str, Any]) -> None:
    """A volume or snapshot summary, plus what CloudStack needs: ``tags`` is always an object."""
    cls = sptypes.SnapshotSummary if "onVolume" in raw else sptypes.VolumeSummary
    check(cls, raw)
    assert isinstance(raw.get("tags"), dict), f"tags must always be an object: {raw}"


def raw_call(
    port: int,
    method: str,
    path: str,
    body: bytes | str | Any = None,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, Any]:
    """One raw HTTP request; `path` is sent exactly as given. Returns (status, JSON)."""
    if body is not None and not isinstance(body, bytes | str):
        body = json.dumps(body)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Storpool v1:{token}"
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def error_of(reply: Any) -> dict[str, Any]:
    """The error object of an error envelope, checked for shape."""
    assert isinstance(reply, dict) and "error" in reply, f"not an error envelope: {reply!r}"
    assert "data" not in reply, f"an error envelope must carry no data: {reply!r}"
    err = reply["error"]
    assert isinstance(err.get("name"), str) and err["name"], err
    assert isinstance(err.get("descr"), str), err
    assert isinstance(err.get("transient"), bool), err
    return err
