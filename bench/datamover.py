#!/usr/bin/env python3
"""Benchmark `spcs convert` against `qemu-img convert` on this machine.

Generates the test images under --workdir, then runs each case with each tool,
alternating tools within every round, with the source warm in the page cache and a
`sync` inside the clock (durable copies). Prints median times, GiB/s of virtual size,
qemu-img/spcs ratios, and each run's write rate as a fraction of the machine's durable
write limit (`dd oflag=direct`) measured in the same run.

The encrypted ROOT case (`raw-luks-loop`, root only) writes a 2 GiB raw template (half hex
text, half zeros) as a LUKS1 volume onto a loop device, as CloudStack does with
`qemu-img convert --object secret,... -O luks` (skip-zero off): spcs against qemu-img with
the same passphrase file and PBKDF2 iteration time (--luks-iter-time-ms, 2000 like both
defaults), alternating, medians and the qemu-img/spcs ratio.

Usage: python bench/datamover.py [--size-gib 4] [--runs 3] [--cases a,b] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
REPO = Path(__file__).resolve().parent.parent
SPCS = [sys.executable, "-m", "spcs.cli"]


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # image key
    dst_format: str
    compression: str | None = None
    note: str = ""


CASES: tuple[Case, ...] = (
    Case("raw-raw-stripe", "stripe.raw", "raw", note="4 GiB, 50 % written zeros"),
    Case("raw-raw-dense", "dense.raw", "raw", note="dense random"),
    Case("raw-raw-sparse", "sparse.raw", "raw", note="2x size, 1/16 data"),
    Case("qcow2-raw", "stripe.qcow2", "raw"),
    Case("qcow2zlib-raw", "stripe.zlib.qcow2", "raw"),
    Case("qcow2zstd-raw", "stripe.zstd.qcow2", "raw"),
    Case("raw-qcow2", "stripe.raw", "qcow2"),
    Case("raw-qcow2zlib", "stripe.raw", "qcow2", "zlib"),
    Case("raw-qcow2zstd", "stripe.raw", "qcow2", "zstd"),
)


@dataclass
class Sample:
    seconds: list[float] = field(default_factory=list)
    out_bytes: list[int] = field(default_factory=list)  # allocated bytes of the output


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: Sequence[str], **kw: object) -> None:
    subprocess.run(list(cmd), check=True, **kw)  # type: ignore[call-overload]


def sync() -> None:
    os.sync()


# ---------------------------------------------------------------- image generation


def _write_stripe(path: Path, size: int) -> None:
    """Alternating 1 MiB of hex text (about 2:1 compressible) and 1 MiB of written zeros."""
    zeros = bytes(MiB)
    with path.open("wb") as f:
        for i in range(size // MiB):
            f.write(os.urandom(MiB // 2).hex().encode() if i % 2 == 0 else zeros)


def _write_dense(path: Path, size: int) -> None:
    pool = os.urandom(64 * MiB)
    with path.open("wb") as f:
        for i in range(size // (64 * MiB)):
            # Rotate the pool so no two 64 MiB blocks are equal.
            k = (i * 4099) % len(pool)
            f.write(pool[k:] + pool[:k])


def _write_sparse(path: Path, size: int) -> None:
    """1 MiB of random data every 16 MiB, holes elsewhere."""
    with path.open("wb") as f:
        f.truncate(size)
        for off in range(0, size, 16 * MiB):
            f.seek(off)
            f.write(os.urandom(MiB))


def generate(workdir: Path, size: int) -> dict[str, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = workdir / f".generated-{size}"
    images = {
        name: workdir / name
        for name in (
            "stripe.raw",
            "dense.raw",
            "sparse.raw",
            "stripe.qcow2",
            "stripe.zlib.qcow2",
            "stripe.zstd.qcow2",
        )
    }
    if stamp.exists() and all(p.exists() for p in images.values()):
        log(f"reusing images in {workdir}")
        return images
    for p in workdir.iterdir():
        if p.is_file():
            p.unlink()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("stripe.raw", lambda: _write_stripe(images["stripe.raw"], size)),
        ("dense.raw", lambda: _write_dense(images["dense.raw"], size)),
        ("sparse.raw", lambda: _write_sparse(images["sparse.raw"], 2 * size)),
    ]
    qi = ["qemu-img", "convert", "-m", "16", "-W", "-O", "qcow2"]
    src = str(images["stripe.raw"])
    steps += [
        ("stripe.qcow2", lambda: run([*qi, src, str(images["stripe.qcow2"])])),
        ("stripe.zlib.qcow2", lambda: run([*qi, "-c", src, str(images["stripe.zlib.qcow2"])])),
        (
            "stripe.zstd.qcow2",
            lambda: run(
                [*qi, "-c", "-o", "compression_type=zstd", src, str(images["stripe.zstd.qcow2"])]
            ),
        ),
    ]
    for name, step in steps:
        t = time.monotonic()
        step()
        log(f"generated {name} in {time.monotonic() - t:.1f}s")
    sync()
    stamp.touch()
    return images


# ---------------------------------------------------------------- tools


def tool_commands(case: Case, src: Path, dst: Path) -> dict[str, list[str]]:
    qemu = ["qemu-img", "convert", "-O", case.dst_format]
    spcs = [*SPCS, "convert", "-O", case.dst_format]
    if case.compression:
        qemu += ["-c", "-o", f"compression_type={case.compression}"]
        spcs += ["--compression", case.compression]
    return {
        "spcs": [*spcs, str(src), str(dst)],
        "qemu-default": [*qemu, str(src), str(dst)],
        "qemu-best": [*qemu[:2], "-t", "none", "-m", "8", "-W", *qemu[2:], str(src), str(dst)],
    }


def warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(8 * MiB):
            pass


def prepare(dst: Path) -> None:
    dst.unlink(missing_ok=True)
    sync()
    time.sleep(1)


def timed(cmd: Sequence[str]) -> float:
    """Wall time of `cmd` followed by `sync` (durable copy)."""
    t = time.monotonic()
    run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sync()
    return time.monotonic() - t


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def measure_limits(src: Path, out: Path) -> tuple[float, float]:
    """(cached read GiB/s, durable O_DIRECT write GiB/s) of `src`, via dd."""
    size = src.stat().st_size
    warm(src)
    t = time.monotonic()
    run(["dd", f"if={src}", "of=/dev/null", "bs=4M"], stderr=subprocess.DEVNULL)
    read = size / (time.monotonic() - t) / GiB
    prepare(out)
    warm(src)
    t = timed(["dd", f"if={src}", f"of={out}", "bs=4M", "oflag=direct", "status=none"])
    out.unlink()
    return read, size / t / GiB


# ---------------------------------------------------------------- main


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b > 0 else "  -  "


def report(
    cases: Sequence[Case],
    images: dict[str, Path],
    results: dict[tuple[str, str], Sample],
    limits: list[tuple[float, float]],
    runs: int,
) -> None:
    read_lim = statistics.median(r for r, _ in limits)
    write_lim = statistics.median(w for _, w in limits)
    print()
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(
        f"machine limits (median of {len(limits)}): cached read {read_lim:.2f} GiB/s "
        f"(dd to /dev/null), durable write {write_lim:.2f} GiB/s (dd oflag=direct + sync)"
    )
    print(f"runs per tool and case: {runs} (alternating); every time includes a final sync")
    print()
    hdr = (
        f"{'case':16} {'tool':13} {'median s':>9} {'min-max s':>13} {'GiB/s':>7} "
        f"{'vs default':>10} {'vs best':>8} {'write/limit':>11} {'output':>10}"
    )
    print(hdr)
    print("-" * len(hdr))
    for case in cases:
        vsize = _virtual_size(images[case.source])
        med = {t: statistics.median(results[case.name, t].seconds) for t in TOOLS}
        for tool in TOOLS:
            s = results[case.name, tool]
            m = med[tool]
            out = statistics.median(s.out_bytes)
            wfrac = (out / m / GiB) / write_lim if write_lim else 0.0
            vs_def = fmt_ratio(med["qemu-default"], m) if tool == "spcs" else ""
            vs_best = fmt_ratio(med["qemu-best"], m) if tool == "spcs" else ""
            print(
                f"{case.name:16} {tool:13} {m:9.2f} "
                f"{min(s.seconds):6.2f}-{max(s.seconds):<6.2f} {vsize / m / GiB:7.2f} "
                f"{vs_def:>10} {vs_best:>8} {wfrac * 100:10.0f}% {out / MiB:8.0f}Mi"
            )
        if case.compression:
            ours = statistics.median(results[case.name, "spcs"].out_bytes)
            theirs = statistics.median(results[case.name, "qemu-default"].out_bytes)
            print(f"{'':16} output size spcs/qemu-img ({case.compression}): {ours / theirs:.3f}")
    print()
    print("ratios: qemu-img median / spcs median (higher is better for spcs);")
    print("write/limit: allocated output bytes / median time, as a fraction of the dd limit")


TOOLS = ("spcs", "qemu-default", "qemu-best")

LUKS_CASE = "raw-luks-loop"
LUKS_TEMPLATE = 2 * GiB


def luks_commands(src: Path, dev: Path, key: Path, iter_ms: int) -> dict[str, list[str]]:
    secret = f"secret,id=s,file={key}"
    qemu = ["qemu-img", "convert", "--object", secret, "-O", "luks"]
    opts = ["-o", f"key-secret=s,iter-time={iter_ms}"]
    return {
        "spcs": [
            *(*SPCS, "convert", "-O", "luks", "-o", f"iter-time={iter_ms}"),
            *("--passphrase-file", str(key), str(src), str(dev)),
        ],
        "qemu-default": [*qemu, *opts, str(src), str(dev)],
        "qemu-best": [
            *qemu[:2],
            "-t",
            "none",
            "-m",
            "8",
            "-W",
            *qemu[2:],
            *opts,
            str(src),
            str(dev),
        ],
    }


def bench_luks(workdir: Path, runs: int, iter_ms: int) -> None:
    """The encrypted ROOT case: a 2 GiB raw template as LUKS onto a loop device."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        log(f"skipping {LUKS_CASE}: needs root and losetup")
        return
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "template.raw"
    if not src.exists() or src.stat().st_size != LUKS_TEMPLATE:
        _write_stripe(src, LUKS_TEMPLATE)
    backing = workdir / "luks-loop-backing"
    with backing.open("wb") as f:
        f.truncate(LUKS_TEMPLATE + 2 * MiB)
    key = workdir / "luks.key"
    key.write_bytes(os.urandom(24).hex().encode())
    dev = Path(
        subprocess.run(
            ["losetup", "--find", "--show", str(backing)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    times: dict[str, list[float]] = {t: [] for t in TOOLS}
    try:
        cmds = luks_commands(src, dev, key, iter_ms)
        for r in range(runs):
            order = TOOLS[r % 3 :] + TOOLS[: r % 3]
            for tool in order:
                sync()
                time.sleep(1)
                warm(src)
                t = timed(cmds[tool])
                times[tool].append(t)
                log(f"  {LUKS_CASE:16} {tool:13} {t:7.2f}s")
        check = [*("qemu-img", "compare", "--object", f"secret,id=s,file={key}", "--image-opts")]
        check += [
            f"driver=luks,key-secret=s,file.filename={dev}",
            f"driver=raw,file.filename={src}",
        ]
        run(cmds["spcs"], stdout=subprocess.DEVNULL)
        same = subprocess.run(check, capture_output=True, text=True).returncode == 0
    finally:
        subprocess.run(["losetup", "-d", str(dev)], check=False)
        backing.unlink(missing_ok=True)
    med = {t: statistics.median(v) for t, v in times.items()}
    print()
    print(
        f"{LUKS_CASE}: 2 GiB raw template (half zeros) -> LUKS1 on {dev}, iter-time {iter_ms} ms,"
        f" {runs} runs per tool (alternating), each with a final sync"
    )
    for tool in TOOLS:
        ratio = "" if tool == "spcs" else f"  qemu/spcs {fmt_ratio(med[tool], med['spcs'])}"
        lo, hi = min(times[tool]), max(times[tool])
        print(f"  {tool:13} median {med[tool]:6.2f}s  ({lo:.2f}-{hi:.2f}){ratio}")
    print(f"  spcs output judged by qemu-img compare: {'identical' if same else 'DIFFERENT'}")


def _virtual_size(path: Path) -> int:
    from spcs import datamover

    return datamover.info(path).virtual_size


def _chosen_cases(p: argparse.ArgumentParser, chosen: str | None) -> list[Case]:
    if not chosen:
        return list(CASES)
    wanted = chosen.split(",")
    unknown = set(wanted) - {c.name for c in CASES}
    if unknown:
        p.error(f"unknown cases: {', '.join(sorted(unknown))}")
    return [c for c in CASES if c.name in wanted]


def bench_cases(cases: Sequence[Case], workdir: Path, size: int, runs: int) -> None:
    """The unencrypted cases: each tool writes `workdir/out.img`."""
    log(f"generating images ({size / GiB:.2f} GiB) in {workdir}")
    images = generate(workdir, size)
    dst = workdir / "out.img"
    results = {(c.name, t): Sample() for c in cases for t in TOOLS}
    limits: list[tuple[float, float]] = []
    try:
        for r in range(runs):
            limits.append(measure_limits(images["dense.raw"], dst))
            log(f"round {r + 1}: limits read {limits[-1][0]:.2f} write {limits[-1][1]:.2f} GiB/s")
            for case in cases:
                src = images[case.source]
                cmds = tool_commands(case, src, dst)
                # Rotate the order every round so no tool always runs first.
                order = TOOLS[r % 3 :] + TOOLS[: r % 3]
                for tool in order:
                    prepare(dst)
                    warm(src)
                    t = timed(cmds[tool])
                    results[case.name, tool].seconds.append(t)
                    results[case.name, tool].out_bytes.append(allocated(dst))
                    log(f"  {case.name:16} {tool:13} {t:7.2f}s")
        dst.unlink(missing_ok=True)
        report(cases, images, results, limits, runs)
    finally:
        dst.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, default=REPO / "bench-data")
    p.add_argument("--size-gib", type=float, default=4.0, help="size of the stripe/dense images")
    p.add_argument("--runs", type=int, default=3, help="runs per tool and case")
    p.add_argument(
        "--cases",
        help="comma-separated subset of: " + ",".join([*(c.name for c in CASES), LUKS_CASE]),
    )
    p.add_argument(
        "--luks-iter-time-ms", type=int, default=2000, help=f"PBKDF2 time of {LUKS_CASE}"
    )
    p.add_argument("--quick", action="store_true", help="0.5 GiB images, 1 run (smoke test)")
    p.add_argument("--keep", action="store_true", help="keep generated images for the next run")
    args = p.parse_args(argv)
    if args.quick:
        args.size_gib, args.runs = min(args.size_gib, 0.5), 1
    size = int(args.size_gib * GiB) // (64 * MiB) * 64 * MiB
    if size <= 0:
        p.error("--size-gib is too small (minimum 0.0625)")
    named = args.cases.split(",") if args.cases else None
    want_luks = named is None or LUKS_CASE in named
    plain = [c for c in named if c != LUKS_CASE] if named is not None else None
    cases = [] if plain == [] else _chosen_cases(p, None if plain is None else ",".join(plain))
    for tool in ("qemu-img", "dd", "uptime"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not installed")
    workdir: Path = args.workdir
    try:
        if cases:
            bench_cases(cases, workdir, size, args.runs)
        if want_luks:
            bench_luks(workdir, args.runs, args.luks_iter_time_ms)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
