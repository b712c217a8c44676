"""`spcs convert`: copy or convert a disk image (RAW, QCOW2, LUKS), with qemu-img-like flags.

Passphrases come from files (``--passphrase-file``, ``--src-passphrase-file``), read byte for
byte like qemu's ``--object secret,file=`` and ``cryptsetup --key-file``; never from argv.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from spcs import datamover
from spcs.datamover._format import human_size

_BAR_WIDTH = 30


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="source image (file or block device)")
    parser.add_argument(
        "dst", metavar="DST", help="destination (new file, or existing device/file)"
    )
    parser.add_argument(
        "-f", dest="src_format", choices=datamover.FORMATS, help="source format (default: probe)"
    )
    parser.add_argument(
        "-O", dest="dst_format", choices=datamover.FORMATS, default="raw", help="output format"
    )
    parser.add_argument("-c", dest="compress", action="store_true", help="compress QCOW2 output")
    parser.add_argument(
        "--compression",
        choices=datamover.COMPRESSIONS,
        help="compression algorithm (implies -c; default zlib)",
    )
    parser.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPTS",
        help="output options, qemu-img style: cluster_size=N,compression_type=zlib|zstd,"
        "encrypt.format=luks (encrypted qcow2),iter-time=MS (PBKDF2 time per key slot)",
    )
    _add_passphrase_options(parser)
    _add_copy_options(parser)


def _add_passphrase_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="passphrase of the encrypted output (-O luks, or -o encrypt.format=luks)",
    )
    parser.add_argument(
        "--src-passphrase-file",
        metavar="FILE",
        help="passphrase of an encrypted source (-f luks, or a LUKS-encrypted qcow2)",
    )


def _add_copy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", dest="progress", action="store_true", help="show a progress bar")
    parser.add_argument(
        "--target-is-zero",
        action="store_true",
        help="the existing target already reads as zeros: skip zero regions",
    )
    parser.add_argument(
        "-t",
        dest="cache",
        choices=("none", "writeback", "unsafe"),
        help="target cache: none = O_DIRECT required; writeback/unsafe = page cache"
        " (default: O_DIRECT where supported, for long runs on files)",
    )
    parser.add_argument("--checksum", choices=datamover.CHECKSUMS, help="digest the virtual disk")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing non-raw destination"
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
    parser.add_argument("-m", dest="threads", type=int, metavar="N", help="worker threads")
    parser.add_argument("--json", action="store_true", help="print the copy's statistics as JSON")


def _parse_options(opts: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for group in opts:
        for item in filter(None, group.split(",")):
            key, sep, value = item.partition("=")
            key = {"encrypt.iter-time": "iter-time"}.get(key, key)
            if not sep or key not in (
                "cluster_size",
                "compression_type",
                "encrypt.format",
                "iter-time",
            ):
                raise ValueError(f"unsupported output option {item!r}")
            out[key] = value
    return out


def read_passphrase(path: str | None) -> bytes | None:
    """The contents of a passphrase file, exactly (no newline stripped), or None."""
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _encryption(opts: dict[str, str]) -> datamover.Encryption | None:
    value = opts.get("encrypt.format")
    if value is None:
        return None
    if value != "luks":
        raise ValueError(f'unsupported encrypt.format "{value}" (expected "luks")')
    return "luks"


def _parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "M": 1 << 20, "K": 1 << 10}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def _compression(name: str | None) -> datamover.Compression | None:
    """`name` as a compression algorithm; ValueError (the extension's message) when unknown."""
    for known in datamover.COMPRESSIONS:
        if name == known:
            return known
    if name is None:
        return None
    raise ValueError(f'unknown compression "{name}" (expected "zlib" or "zstd")')


def _draw(stream: TextIO, p: datamover.Progress) -> None:
    frac = p.done_bytes / p.total_bytes if p.total_bytes else 0.0
    filled = int(frac * _BAR_WIDTH)
    bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
    stream.write(
        f"\r[{bar}] {frac * 100:6.2f}%  {human_size(p.done_bytes)} / {human_size(p.total_bytes)}"
        f"  {human_size(p.rate_bytes_per_sec)}/s   "
    )
    stream.flush()


def _wait(job: datamover.Job, progress: bool) -> datamover.ConvertStats:
    while True:
        stats = job.wait(timeout=0.25)
        if progress:
            _draw(sys.stderr, job.progress())
        if stats is not None:
            if progress:
                sys.stderr.write("\n")
            return stats


def _wanted_compression(args: argparse.Namespace, opts: dict[str, str]) -> str | None:
    """-c compresses (zlib unless named); -o compression_type only names the algorithm, as
    with qemu-img, which needs -c to compress."""
    if not (args.compress or args.compression):
        return None
    return str(args.compression or opts.get("compression_type") or "zlib")


def run(args: argparse.Namespace) -> int:
    try:
        opts = _parse_options(args.options)
        compression = _wanted_compression(args, opts)
        cluster_size = _parse_size(opts.get("cluster_size", "65536"))
        direct = {"none": True, "writeback": False, "unsafe": False}.get(args.cache or "")
        passphrase = read_passphrase(args.passphrase_file)
        src_passphrase = read_passphrase(args.src_passphrase_file)
        job = datamover.start_convert(
            args.src,
            args.dst,
            src_format=args.src_format,
            dst_format=args.dst_format,
            compression=_compression(compression),
            target_is_zero=args.target_is_zero,
            direct=direct,
            checksum=args.checksum,
            cluster_size=cluster_size,
            backing_chain_limit=args.backing_chain_limit,
            overwrite=args.overwrite,
            threads=args.threads,
            confine_to=args.confine_to,
            encryption=_encryption(opts),
            passphrase=passphrase,
            src_passphrase=src_passphrase,
            iter_time_ms=int(opts.get("iter-time", "2000")),
        )
    except (OSError, ValueError, datamover.DataMoverError) as e:
        print(f"spcs convert: error: {e}", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        stats = _wait(job, args.progress)
    except KeyboardInterrupt:
        job.cancel()
        try:
            job.wait()
        except datamover.DataMoverError as e:
            print(f"\nspcs convert: {e}", file=sys.stderr)
        return 130
    except (ValueError, datamover.DataMoverError) as e:
        if args.progress:
            sys.stderr.write("\n")
        print(f"spcs convert: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        fields = ("bytes_read", "bytes_written", "bytes_skipped", "virtual_size", "checksum")
        doc = {k: getattr(stats, k) for k in fields}
        doc["seconds"] = round(stats.seconds, 6)
        print(json.dumps(doc))
    elif args.checksum:
        print(f"{stats.checksum}  {args.src} ({args.checksum}, virtual disk)")
    elif args.progress:
        rate = stats.virtual_size / max(time.monotonic() - started, 1e-9)
        print(
            f"{human_size(stats.virtual_size)} in {stats.seconds:.2f}s ({human_size(rate)}/s), "
            f"{human_size(stats.bytes_written)} written",
            file=sys.stderr,
        )
    return 0
