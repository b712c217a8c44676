"""How `spcs ctl` shows what it read: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(value: int) -> str:
    """1536 → "1.5 KiB": sizes as people read them (exact bytes are in --json)."""
    amount = float(value)
    for unit in UNITS:
        if amount < 1024 or unit == UNITS[-1]:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def table(
    header: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO = sys.stdout
) -> None:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def plain(message: Message) -> dict[str, Any]:
    """A message as JSON data: field names as in the proto, enums by name, defaults included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def emit_json(data: object, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
