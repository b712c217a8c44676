# spcs: StorPool primary storage for Apache CloudStack.
# `just` lists recipes; every recipe works from a fresh clone (it runs `setup` first).

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
py := venv / "bin" / "python"
run_dir := justfile_directory() / ".spcs-run"

_default:
    @just --list --unsorted

# Create .venv and install spcs (editable, with the Rust extension built in release mode)
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{py}}" ]; then python3 -m venv "{{venv}}"; fi
    "{{py}}" -m pip install -q --upgrade pip
    "{{py}}" -m pip install -q "maturin>=1.9,<2"
    "{{venv}}/bin/maturin" develop --release --extras dev -q

# Build the wheel (Python + extension) into dist/
build: setup
    "{{venv}}/bin/maturin" build --release --out dist

# Debian packages spcs, spcs-management and spcs-node into dist/ (docs/packages.md)
package: build
    "{{py}}" packaging/build_deb.py --out dist

# Regenerate the gRPC stubs from proto/ (commit the result)
proto: setup
    "{{py}}" proto/generate.py

# Lint: ruff, mypy (strict, services/spcs and packaging), rustfmt, clippy, and the stubs match proto/
lint: setup
    "{{venv}}/bin/ruff" check services tests proto bench packaging
    "{{venv}}/bin/ruff" format --check services tests proto bench packaging
    "{{venv}}/bin/mypy"
    cargo fmt --manifest-path datamover/Cargo.toml --check
    cargo clippy --manifest-path datamover/Cargo.toml --all-targets -- -D warnings
    "{{py}}" proto/generate.py --check

# Format Python and Rust sources in place
fmt: setup
    "{{venv}}/bin/ruff" format services tests proto bench packaging
    "{{venv}}/bin/ruff" check --fix services tests proto bench packaging
    cargo fmt --manifest-path datamover/Cargo.toml

# Run every test: Rust unit tests, then pytest (real servers on loopback)
test *ARGS: setup
    cargo test --manifest-path datamover/Cargo.toml --release -q
    "{{py}}" -m pytest {{ARGS}}

# The fast tier: in-process tests only (marked `fast`; no service processes), under a minute
test-fast *ARGS: setup
    "{{py}}" -m pytest -m fast {{ARGS}}

# Benchmarks: data mover vs qemu-img (files and block devices), control plane vs direct StorPool calls, replicas, end-to-end copies and concurrent copies (root), emulator copy-on-write
bench: bench-datamover bench-devices bench-controlplane bench-replicas bench-endtoend bench-concurrency bench-encryption bench-emulator

# Data mover vs qemu-img convert, same inputs, alternating runs (`--quick` for a short run)
bench-datamover *ARGS: setup
    "{{py}}" bench/datamover.py {{ARGS}}

# Management service vs the same StorPool calls made directly (`--quick` for a short run)
bench-controlplane *ARGS: setup
    "{{py}}" bench/controlplane.py {{ARGS}}

# Management on 1 replica with SQLite, 1 with MariaDB, 3 with MariaDB (`--quick` for a short run)
bench-replicas *ARGS: setup
    "{{py}}" bench/replicas.py {{ARGS}}

# Copies through management + node vs spcs convert and qemu-img, on loop devices (root; `--quick`)
bench-endtoend *ARGS: setup
    "{{py}}" bench/endtoend.py {{ARGS}}

# The data mover reading and writing loop devices vs qemu-img's best flags (root; `--quick`)
bench-devices *ARGS: setup
    "{{py}}" bench/devices.py {{ARGS}}

# 1, 2 and 4 copies at once on one host: aggregate throughput vs one copy (root; `--quick`)
bench-concurrency *ARGS: setup
    "{{py}}" bench/concurrency.py {{ARGS}}

# An encrypted ROOT from a cached template through management + node vs qemu-img convert -O luks (root; `--quick`)
bench-encryption *ARGS: setup
    "{{py}}" bench/encryption.py {{ARGS}}

# The emulator's snapshots, clones and template caching with copy-on-write and without (root for the XFS image)
bench-emulator *ARGS: setup
    "{{py}}" bench/emulator_cow.py {{ARGS}}

# The end-to-end demo on this machine
demo: setup
    "{{venv}}/bin/spcs" demo

# Run emulator + management + node in the foreground (for grpcurl); Ctrl-C stops all
up: setup
    "{{venv}}/bin/spcs" up --workdir "{{run_dir}}"
