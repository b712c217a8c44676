"""`template.properties` exactly as CloudStack's `TemplateLocation` writes it.

CloudStack's secondary-storage VM and KVM agents read a template directory through
`TemplateLocation.load()`: it needs `uniquename`, `virtualsize` and, per format, `<ext>=true`,
`<ext>.filename`, `<ext>.size`, `<ext>.virtualsize`. The file is a Java properties file
(`Properties.store`: a comment line, a date line, `key=value` lines with Java's escaping).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

FILE_NAME = "template.properties"
# CloudStack ImageFormat.getFileExtension()
EXTENSIONS = {"qcow2": "qcow2", "raw": "raw"}


def _escape(text: str, *, key: bool) -> str:
    """Java Properties.saveConvert."""
    out = []
    for index, char in enumerate(text):
        if char == " ":
            out.append("\\ " if key or index == 0 else " ")
        elif char in "\\=:#!":
            out.append("\\" + char)
        elif char in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[char])
        elif ord(char) < 0x20 or ord(char) > 0x7E:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return "".join(out)


def render(values: Mapping[str, str], now: float | None = None) -> str:
    stamp = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(now))
    lines = ["#", f"#{stamp}"]
    lines += [f"{_escape(k, key=True)}={_escape(v, key=False)}" for k, v in sorted(values.items())]
    return "\n".join(lines) + "\n"


def template_values(
    *,
    unique_name: str,
    template_id: int,
    file_name: str,
    image_format: str,
    physical_size: int,
    virtual_size: int,
    checksum: str,
    description: str = "",
) -> dict[str, str]:
    """The properties a template directory made from a volume or snapshot gets."""
    ext = EXTENSIONS[image_format]
    values = {
        # TemplateLocation.create(id, isPublic, uniqueName)
        "id": str(template_id or 1),
        "public": "true",
        "uniquename": unique_name,
        # what StorPool's agent wrapper writes before TemplateLocation loads the file
        "filename": file_name,
        # TemplateLocation.addFormat + save
        "virtualsize": str(virtual_size),
        "size": str(physical_size),
        ext: "true",
        f"{ext}.filename": file_name,
        f"{ext}.size": str(physical_size),
        f"{ext}.virtualsize": str(virtual_size),
        "checksum": checksum,
    }
    if description:
        values["description"] = description
    return values


def write(directory: Path, values: Mapping[str, str]) -> Path:
    """Write atomically (temp + rename), so a reader never sees half a file."""
    path = directory / FILE_NAME
    tmp = directory / f".{FILE_NAME}.tmp"
    tmp.write_bytes(render(values).encode("latin-1", errors="replace"))
    tmp.replace(path)
    return path


def parse(text: str) -> dict[str, str]:
    """Read back a properties file (for tests and for template directories we pick images from)."""
    values = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key: list[str] = []
        value: list[str] = []
        escaped, in_key = False, True
        for char in line:
            if escaped:
                (key if in_key else value).append(
                    {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(char, char)
                )
                escaped = False
            elif char == "\\":
                escaped = True
            elif in_key and char in "=:":
                in_key = False
            else:
                (key if in_key else value).append(char)
        values["".join(key).strip()] = "".join(value).lstrip()
    return values
