"""`spcs info`: describe a disk image like `qemu-img info`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from spcs import datamover
from spcs.datamover._format import human_size
from spcs.datamover.cli_convert import read_passphrase

_FIELDS = (
    "format",
    "virtual_size",
    "actual_size",
    "cluster_size",
    "compression",
    "backing_file",
    "backing_format",
    "compat",
    "extended_l2",
    "dirty",
    "checksum",
    "encryption",
    "payload_offset",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="image file or block device")
    parser.add_argument("--json", action="store_true", help="print as JSON")
    parser.add_argument(
        "-f", dest="src_format", choices=datamover.FORMATS, help="image format (default: probe)"
    )
    parser.add_argument(
        "--checksum", choices=datamover.CHECKSUMS, help="also digest the virtual disk contents"
    )
    parser.add_argument(
        "--src-passphrase-file",
        metavar="FILE",
        help="passphrase of an encrypted image (needed only with --checksum)",
    )
    parser.add_argument(
        "--backing-chain-limit", type=int, default=16, metavar="N", help="longest backing chain"
    )
    parser.add_argument(
        "--confine-to",
        metavar="DIR",
        help="refuse the image unless it and its whole backing chain lie in DIR (no absolute"
        " or '..' backing names); default: follow backing names like qemu-img",
    )


def as_dict(path: str, info: datamover.ImageInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {"filename": path}
    doc.update({k: getattr(info, k) for k in _FIELDS})
    return doc


def _text(path: str, info: datamover.ImageInfo) -> str:
    lines = [
        f"image: {path}",
        f"file format: {info.format}",
        f"virtual size: {human_size(info.virtual_size)} ({info.virtual_size} bytes)",
        f"disk size: {human_size(info.actual_size)}",
    ]
    if info.encryption is not None:
        lines.append("encrypted: yes")
    if info.cluster_size is not None:
        lines.append(f"cluster_size: {info.cluster_size}")
    if info.backing_file is not None:
        lines.append(f"backing file: {info.backing_file}")
    if info.backing_format is not None:
        lines.append(f"backing file format: {info.backing_format}")
    if info.format == "qcow2":
        lines.append("Format specific information:")
        lines.append(f"    compat: {info.compat}")
        lines.append(f"    compression type: {info.compression}")
        lines.append(f"    extended l2: {str(info.extended_l2).lower()}")
        if info.dirty:
            lines.append("    dirty: true")
        if info.encryption is not None:
            lines.append(f"    encrypt format: {info.encryption}")
    if info.format == "luks" and info.payload_offset is not None:
        lines.append("Format specific information:")
        lines.append(f"    payload offset: {info.payload_offset}")
    if info.checksum is not None:
        lines.append(f"checksum: {info.checksum}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        result = datamover.info(
            args.path,
            checksum=args.checksum,
            src_format=args.src_format,
            backing_chain_limit=args.backing_chain_limit,
            confine_to=args.confine_to,
            src_passphrase=read_passphrase(args.src_passphrase_file),
        )
    except (OSError, ValueError, datamover.DataMoverError) as e:
        print(f"spcs info: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(as_dict(args.path, result), indent=2))
    else:
        print(_text(args.path, result))
    return 0
