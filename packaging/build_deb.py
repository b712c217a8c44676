"""Build the Debian packages of spcs from its wheel (docs/packages.md).

- `spcs`: a virtualenv at /opt/spcs on Debian's python3.X holding the wheel and its
  dependencies from PyPI, and /usr/bin/spcs. Architecture-specific (compiled extensions).
- `spcs-management`: its systemd unit, example configs as conffiles, the `spcs` user.
- `spcs-node`: its systemd unit and example configs.

The virtualenv is made in a staging directory and its paths (script shebangs, pyvenv.cfg,
activate scripts) rewritten to /opt/spcs; bytecode is compiled with the final paths. The
packages are built with plain `dpkg-deb --build --root-owner-group`, so no root and no
debhelper; the maintainer scripts are the packaging/<package>.<script> files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
DEPLOY = REPO / "deploy"
PREFIX = "/opt/spcs"
SCRIPTS = ("postinst", "prerm", "postrm", "triggers")
COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: spcs
Comment: /opt/spcs also holds the Python packages from PyPI that spcs depends on, each under
 its own license, named in its METADATA in /opt/spcs/lib/python3*/site-packages/*.dist-info.

Files: *
License: Apache-2.0
 On Debian systems the full text of the license is in /usr/share/common-licenses/Apache-2.0.
"""


@dataclass(frozen=True)
class Package:
    name: str
    architecture: str
    depends: list[str]
    description: str
    recommends: tuple[str, ...] = ()


def run(argv: list[str | Path]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:  # pip's and dpkg-deb's own words
        raise SystemExit(f"{' '.join(map(str, argv))}: exit {done.returncode}\n{done.stderr}")
    return done.stdout


def maintainer() -> str:
    """Debian's convention for who builds a package: DEBFULLNAME and DEBEMAIL."""
    name = os.environ.get("DEBFULLNAME", "spcs packagers")
    return f"{name} <{os.environ.get('DEBEMAIL', 'spcs@localhost')}>"


def find_wheel(dist: Path, version: str) -> Path:
    wheels = sorted(dist.glob(f"spcs-{version}-*.whl"), key=lambda path: path.stat().st_mtime)
    if not wheels:
        raise SystemExit(f"no spcs-{version}-*.whl in {dist}: run `just build` first")
    return wheels[-1]  # the one `just build` just wrote


def glibc_of(wheel: Path) -> str | None:
    """The oldest glibc the wheel runs on, from its manylinux_2_NN tag."""
    for tag in wheel.stem.split("-")[-1].split("."):
        parts = tag.split("_")
        if parts[0] == "manylinux" and len(parts) >= 3 and parts[1].isdigit():
            return f"{parts[1]}.{parts[2]}"
    return None


def python_of(interpreter: str) -> Path:
    """The versioned interpreter (/usr/bin/python3.11) behind `interpreter`: the venv points
    at it, so a later python3 of another minor version leaves it working."""
    minor = run([interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    versioned = Path(interpreter).parent / f"python{minor.strip()}"
    if not versioned.exists():
        raise SystemExit(f"{versioned} not found (from {interpreter})")
    return versioned


def relocate(venv: Path, final: str) -> None:
    """Replace the staging path by `final` in every text file of the venv; a compiled file
    holding it could not be fixed, so it stops the build."""
    old, new = str(venv).encode(), final.encode()
    for path in venv.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old not in data:
            continue
        if b"\0" in data:
            raise SystemExit(f"{path} (binary) holds the staging path {venv}")
        path.write_bytes(data.replace(old, new))


def make_venv(root: Path, wheel: Path, python: Path) -> None:
    venv = root / PREFIX.lstrip("/")
    run([python, "-m", "venv", "--without-pip", venv])
    # pip from this environment installs into the venv (none ships in the package); without
    # system site-packages yet, so that the build machine's python3-* packages count for none
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python"]
    pip.append("install")
    run([*pip, "--no-compile", "--no-warn-script-location", "--disable-pip-version-check", wheel])
    relocate(venv, PREFIX)
    config = venv / "pyvenv.cfg"
    # the node uses Debian's python3-libvirt (docs/deploy.md step 2)
    config.write_text(
        config.read_text().replace(
            "include-system-site-packages = false", "include-system-site-packages = true"
        )
    )
    # bytecode with the installed paths; hash-checked, so dpkg's timestamps do not matter
    compile_all: list[str | Path] = [venv / "bin" / "python", "-m", "compileall", "-q", "-j0"]
    compile_all += ["--invalidation-mode", "checked-hash", "-s", root, "-p", "/", venv / "lib"]
    run(compile_all)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "spcs").symlink_to(f"{PREFIX}/bin/spcs")
    (root / "etc" / "spcs").mkdir(parents=True)


def add_service(root: Path, kind: str) -> None:
    """The unit and the example configs of `spcs-<kind>`."""
    units = root / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(DEPLOY / "systemd" / f"spcs-{kind}.service", units)
    etc = root / "etc" / "spcs"
    etc.mkdir(parents=True)
    for suffix in ("toml", "env"):
        shutil.copy(DEPLOY / "config" / f"{kind}.{suffix}", etc)


def normalize_modes(root: Path) -> None:
    """0755/0644 whatever the umask; the configs 0640 (they may hold a database password)."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
    for config in (root / "etc" / "spcs").glob("*.*"):
        config.chmod(0o640)


def installed_size(root: Path) -> int:
    """In KiB, as dpkg-gencontrol counts: each file rounded up, 1 for anything else."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += -(-path.stat().st_size // 1024)
        else:
            total += 1
    return total


def control(package: Package, version: str, root: Path) -> str:
    fields = {
        "Package": package.name,
        "Version": version,
        "Architecture": package.architecture,
        "Maintainer": maintainer(),
        "Installed-Size": str(installed_size(root)),
        "Depends": ", ".join(package.depends),
        "Recommends": ", ".join(package.recommends),
        "Section": "admin",
        "Priority": "optional",
        "Description": package.description,
    }
    return "".join(f"{key}: {value}\n" for key, value in fields.items() if value)


def build(package: Package, version: str, root: Path, out: Path) -> Path:
    doc = root / "usr" / "share" / "doc" / package.name
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    normalize_modes(root)
    debian = root / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(control(package, version, root))
    conffiles = sorted(f"/{p.relative_to(root)}" for p in (root / "etc").rglob("*") if p.is_file())
    if conffiles:
        (debian / "conffiles").write_text("".join(f"{path}\n" for path in conffiles))
    for script in SCRIPTS:
        source = PACKAGING / f"{package.name}.{script}"
        if source.exists():
            shutil.copy(source, debian / script)
            (debian / script).chmod(0o644 if script == "triggers" else 0o755)
    deb = out / f"{package.name}_{version}_{package.architecture}.deb"
    # xz as dpkg's default, at level 1: 6 s instead of 40 for a 15% larger package
    run(["dpkg-deb", "-Zxz", "-z1", "--build", "--root-owner-group", root, deb])
    return deb


def main(argv: list[str] | None = None) -> int:
    from spcs import __version__

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="default: dist/spcs-VERSION-*.whl")
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="default: dist/")
    parser.add_argument(
        "--revision", type=int, default=1, help="Debian revision: VERSION-REVISION (default 1)"
    )
    parser.add_argument(
        "--python",
        default="/usr/bin/python3",
        help="the hosts' interpreter the venv is built on (default /usr/bin/python3)",
    )
    args = parser.parse_args(argv)
    if "+" in __version__:
        raise SystemExit(f"spcs {__version__} is not installed from a release: run `just setup`")
    version = f"{__version__}-{args.revision}"
    wheel = args.wheel or find_wheel(REPO / "dist", __version__)
    python = python_of(args.python)
    architecture = run(["dpkg", "--print-architecture"]).strip()
    depends = [python.name]
    if glibc := glibc_of(wheel):
        depends.append(f"libc6 (>= {glibc})")
    base = f"spcs (= {version})"
    packages = [
        Package(
            "spcs",
            architecture,
            depends,
            "StorPool primary storage for Apache CloudStack: the spcs command\n"
            " spcs in a Python virtualenv at /opt/spcs, with its Rust data mover and the\n"
            " Python packages it needs; the services are in spcs-management and spcs-node.",
        ),
        Package(
            "spcs-management",
            "all",
            [base, "adduser"],
            "StorPool primary storage for Apache CloudStack: management service\n"
            " The spcs-management systemd unit (one per CloudStack region), its example\n"
            " configuration in /etc/spcs and the spcs system user it runs as.",
        ),
        Package(
            "spcs-node",
            "all",
            [base],
            "StorPool primary storage for Apache CloudStack: node service\n"
            " The spcs-node systemd unit (one per KVM host) and its example configuration\n"
            " in /etc/spcs.",
            recommends=("nfs-common", "python3-libvirt"),
        ),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spcs-deb-") as tmp:
        for package in packages:
            root = Path(tmp) / package.name
            if package.name == "spcs":
                make_venv(root, wheel.resolve(), python)
            else:
                add_service(root, package.name.removeprefix("spcs-"))
            print(build(package, version, root, args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
