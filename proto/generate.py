"""Generate the Python gRPC stubs of `proto/spcs/v1/*.proto` into `services/spcs/v1/`.

The stubs are committed (maturin does not run protoc at build time); `--check` regenerates
into a temporary directory and fails when the committed files differ, so they never drift.

googleapis-common-protos ships `google/longrunning/operations.proto` under the file name
`operations_proto.proto` (its descriptor is still registered as `.../operations.proto`), so
the include path gets a small overlay that puts it under the name our imports use.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import google.longrunning
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "services"
PACKAGE = Path("spcs") / "v1"


def _include_overlay(tmp: Path) -> Path:
    """google/longrunning/operations.proto, as the googleapis sources name it."""
    overlay = tmp / "overlay"
    target = overlay / "google" / "longrunning" / "operations.proto"
    target.parent.mkdir(parents=True)
    shutil.copyfile(Path(google.longrunning.__path__[0]) / "operations_proto.proto", target)
    return overlay


def generate(out_dir: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / PACKAGE).glob("*.proto"))
    googleapis_root = Path(google.longrunning.__path__[0]).parent.parent
    well_known = Path(grpc_tools.__path__[0]) / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        overlay = _include_overlay(Path(tmp))
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{overlay}",
            f"-I{googleapis_root}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *sources,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
    init = out_dir / PACKAGE / "__init__.py"
    init.write_text('"""Generated from proto/spcs/v1 by proto/generate.py. Do not edit."""\n')


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected = sorted(p.name for p in (fresh / PACKAGE).iterdir())
        actual = sorted(
            p.name for p in (OUT_DIR / PACKAGE).iterdir() if p.suffix in (".py", ".pyi")
        )
        problems = []
        if expected != actual:
            problems.append(f"file sets differ: generated {expected}, committed {actual}")
        for name in expected:
            committed = OUT_DIR / PACKAGE / name
            if committed.exists() and not filecmp.cmp(fresh / PACKAGE / name, committed, False):
                problems.append(f"{committed.relative_to(ROOT)} differs from proto/")
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `just proto` and commit the result", file=sys.stderr)
            return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed stubs drift")
    args = parser.parse_args()
    if args.check:
        return check()
    (OUT_DIR / PACKAGE).mkdir(parents=True, exist_ok=True)
    for stale in (OUT_DIR / PACKAGE).glob("*_pb2*"):
        stale.unlink()
    generate(OUT_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
