"""Every bad setting of `spcs management` and `spcs node` ends in exit status 2 and one line
`spcs <service>: configuration error: <setting>: <why>` naming the setting, never a traceback.

Each option of both services (taken from their OPTIONS, so a new option without bad values
here fails `test_every_option_has_bad_values`) gets bad values through a flag, an SPCS_*
variable and a `--config` TOML file, plus TOML values of the wrong type (a list, a table, a
boolean or a date where a string is expected), combinations that do not fit together, bad
StorPool config values and files this process cannot read.

The bulk runs through `spcs.cli.main` in one helper process that forks a child per case after
importing what `spcs <service>` imports (the child does what the interpreter does for the
console script: an exception that escapes main is printed as a traceback, exit status 1); a
fresh interpreter per case would cost ~0.4 s each. The unreadable-file cases and a few others
run as real `python -m spcs.cli` processes, to keep the helper honest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RUNNER_FLAG = "--run-cases"
# one case: (value as typed, setting the message must name or None for the option's flag,
# extra flags the case needs to reach the check)
Bad = tuple[str, str | None, tuple[str, ...]]


def bad(value: str, setting: str | None = None, *extra: str) -> Bad:
    return (value, setting, extra)


# a MariaDB that is never reached: the cases stop at the settings
MYSQL_URL = "mysql+pymysql://spcs@127.0.0.1:1/spcs"
NUMBER_OF_SECONDS = [bad("0"), bad("-1"), bad("nan"), bad("inf"), bad("1e9"), bad("soon")]
WITH_KEY = ("--tls-key", "{key}")
WITH_CERT = ("--tls-cert", "{cert}")

SERVER_BAD: dict[str, list[Bad]] = {
    "listen": [
        bad(""),
        bad("9710"),
        bad("127.0.0.1:99999"),
        bad("[::1:9710"),
        bad("[zz]:1"),
        bad("127.0.0.1:port"),
    ],
    "log_file": [bad(""), bad("{dir}"), bad("{missing}/spcs.log"), bad("{plain}/spcs.log")],
    "log_level": [bad(""), bad("LOUD"), bad("5")],
    "log_format": [bad(""), bad("xml"), bad("JSON5")],
    "metrics_listen": [bad(""), bad("9100"), bad("127.0.0.1:99999")],
    "tls_cert": [
        bad("", None, *WITH_KEY),
        bad("{missing}", None, *WITH_KEY),
        bad("{dir}", None, *WITH_KEY),
        bad("{garbage}", None, *WITH_KEY),
        bad("{key}", None, *WITH_KEY),  # a key where the certificate belongs
    ],
    "tls_key": [
        bad("", None, *WITH_CERT),
        bad("{missing}", None, *WITH_CERT),
        bad("{garbage}", None, *WITH_CERT),
        bad("{other_key}", None, *WITH_CERT),  # not the certificate's key
        bad("{encrypted_key}", None, *WITH_CERT),
        bad("{cert}", None, *WITH_CERT),
    ],
    "tls_ca": [bad(""), bad("{missing}"), bad("{garbage}"), bad("{key}")],
    # a boolean flag takes no value: bad values come from the environment and the file
    "tls_client_auth": [bad("maybe"), bad("2"), bad("enabled")],
    "workers": [bad(""), bad("0"), bad("-1"), bad("x"), bad("1.5")],
    "max_concurrent_rpcs": [bad("0"), bad("many"), bad("-3")],
    "grace_seconds": NUMBER_OF_SECONDS,
    "port_file": [bad(""), bad("{dir}"), bad("{missing}/port")],
}
STORPOOL_CONF_BAD = [
    bad(""),
    bad("{missing}"),
    bad("{dir}"),
    bad("{sp_malformed}"),
    bad("{sp_binary}"),
    bad("{sp_ourid_0}", "SP_OURID"),
    bad("{sp_ourid_abc}", "SP_OURID"),
    bad("{sp_ourid_4096}", "SP_OURID"),
    bad("{sp_port_abc}", "SP_API_HTTP_PORT"),
    bad("{sp_port_0}", "SP_API_HTTP_PORT"),
    bad("{sp_port_big}", "SP_API_HTTP_PORT"),
]
SERVICE_BAD: dict[str, dict[str, list[Bad]]] = {
    "management": {
        **SERVER_BAD,
        "db": [
            bad(""),
            bad("{dir}"),
            bad("{plain}/management.db"),  # its directory is a file
            bad("{garbage}"),  # not an SQLite database
            bad("/proc/spcs-test/management.db"),  # a directory that cannot be created
        ],
        "database_url": [
            bad("postgresql://spcs@db.example.com/spcs"),  # not an engine spcs runs on
            bad("not a url"),
            bad("mysql://spcs@db.example.com/spcs"),  # MySQL's default driver, not PyMySQL
            bad("sqlite://"),  # in memory: nothing would be kept
            bad("mysql+pymysql://spcs@db.example.com"),  # no database
            bad("sqlite:///{dir}"),  # a directory
            bad("sqlite:///{garbage}"),  # not an SQLite database
            bad("postgresql://spcs:hunter2@db.example.com/spcs"),  # (the password not repeated)
        ],
        "database_password_file": [
            bad(""),
            bad("{missing}"),
            bad("{dir}"),
            bad("{plain}"),  # a password, but the state database is SQLite (--db)
            bad("{empty}", None, "--database-url", MYSQL_URL),
            bad("{binary}", None, "--database-url", MYSQL_URL),  # not text
        ],
        "storpool_conf": STORPOOL_CONF_BAD,
        "storpool_retry_seconds": NUMBER_OF_SECONDS,
        "node_retry_seconds": NUMBER_OF_SECONDS,
        "volume_stats_seconds": NUMBER_OF_SECONDS,
        "zone_copy_stall_seconds": NUMBER_OF_SECONDS,
    },
    "node": {
        **SERVER_BAD,
        "host_id": [bad(""), bad("has space"), bad("a/b"), bad("-x")],
        "device_root": [bad(""), bad("{missing}"), bad("{plain}")],
        # the sources take turns: flag, env, toml, flag, env, toml, ...
        "management": [
            bad(""),
            bad("mgmt"),
            bad("mgmt:x"),
            bad("mgmt:70000"),
            bad("127.0.0.1:9710,,127.0.0.1:9711"),  # an empty item (environment)
            bad("mgmt:9710,"),  # a trailing comma (TOML string)
            bad("mgmt1:9710,,mgmt2:9710"),  # an empty item (flag)
            bad("mgmt:0"),  # no port to call
            bad("dns://resolver.example/mgmt:9710"),  # a DNS server of its own: not supported
            bad("ipv4:127.0.0.1:9710,127.0.0.1:9711"),  # gRPC's own list syntax
            bad("mgmt:9710,mgmt:9710"),  # the same replica twice
            bad(",".join(f"10.0.0.{n}:9710" for n in range(1, 18))),  # more than 16
            bad("dns:///mgmt"),  # no port
            bad("mgmt/x:9710"),  # not a host name
            bad("[::1]:9710, [::1]:9710"),
        ],
        "advertise": [bad(""), bad("kvm1"), bad("kvm1:x"), bad(":9711")],
        "storpool_conf": [
            *STORPOOL_CONF_BAD,
            bad("{sp_no_token}", "SP_AUTH_TOKEN"),
            bad("{sp_no_ourid}", "SP_OURID"),
        ],
        # a section without this host's client id
        "storpool_section": [bad("other", "SP_OURID"), bad("kvm2", "SP_OURID")],
        "storpool_retry_seconds": NUMBER_OF_SECONDS,
        "secondary_store": [
            bad("ftp://server/export"),
            bad("nfs://server/export,smb://server/share"),  # the environment's list form
            bad("nfs://"),
            bad("file://relative/dir"),
        ],
        "mount_root": [bad(""), bad("{plain}"), bad("/proc/spcs-test/mnt")],
        "state_dir": [bad(""), bad("{plain}"), bad("/proc/spcs-test/state")],
        "device_wait_seconds": NUMBER_OF_SECONDS,
        "detach_attempts": [bad("0"), bad("x"), bad("2.5")],
        "max_copies": [bad("0"), bad("-1"), bad("x")],
        "luks_iter_time_ms": [bad("0"), bad("x"), bad("60001")],
        "direct_download_url": [
            bad("ftp://images.example.com/"),
            bad("https://"),
            bad("https://user:pw@images.example.com/"),
            bad("https://images.example.com/?q=1"),
        ],
        "direct_download_ca_file": [bad("/nonexistent/ca.pem"), bad("/")],
        "direct_download_max_bytes": [bad("0"), bad("x")],
    },
}

# StorPool configs: good for each service, and one per bad value
GOOD_STORPOOL_CONF = "SP_API_HTTP_HOST=127.0.0.1\nSP_API_HTTP_PORT=81\nSP_AUTH_TOKEN=tok\n"
STORPOOL_FILES = {
    "sp_good": GOOD_STORPOOL_CONF + "[kvm1]\nSP_OURID=1\n",
    "sp_malformed": "SP_AUTH_TOKEN tok\n",
    # the unnamed section: read by both services whatever the host's name
    "sp_ourid_0": GOOD_STORPOOL_CONF + "SP_OURID=0\n",
    "sp_ourid_abc": GOOD_STORPOOL_CONF + "SP_OURID=abc\n",
    "sp_ourid_4096": GOOD_STORPOOL_CONF + "SP_OURID=4096\n",
    "sp_port_abc": "SP_API_HTTP_PORT=eighty\nSP_AUTH_TOKEN=tok\n[kvm1]\nSP_OURID=1\n",
    "sp_port_0": "SP_API_HTTP_PORT=0\nSP_AUTH_TOKEN=tok\n[kvm1]\nSP_OURID=1\n",
    "sp_port_big": "SP_API_HTTP_PORT=65536\nSP_AUTH_TOKEN=tok\n[kvm1]\nSP_OURID=1\n",
    "sp_no_token": "SP_API_HTTP_HOST=127.0.0.1\n[kvm1]\nSP_OURID=1\n",
    "sp_no_ourid": GOOD_STORPOOL_CONF,
}


@dataclass
class Case:
    id: str
    service: str
    setting: str  # what the message must name
    argv: list[str] = field(default_factory=list)  # after `spcs <service>`
    env: dict[str, str] = field(default_factory=dict)
    toml: str | None = None
    omit: tuple[str, ...] = ()  # base settings left out (the one under test)
    unreadable: tuple[str, ...] = ()  # files chmod 000 for this case

    @property
    def needs_own_process(self) -> bool:
        return bool(self.unreadable)


def toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string


def option_cases() -> Iterator[Case]:
    """Each bad value of each option, the sources taking turns; then the wrong TOML types."""
    from spcs.management.settings import OPTIONS as MANAGEMENT
    from spcs.node.settings import OPTIONS as NODE

    for service, options in (("management", MANAGEMENT), ("node", NODE)):
        for opt in options:
            values = SERVICE_BAD[service].get(opt.name, [])
            sources = ("env", "toml") if opt.is_bool else ("flag", "env", "toml")
            for index, (value, setting, extra) in enumerate(values):
                source = sources[index % len(sources)]
                case = Case(
                    f"{service}-{opt.name}-{source}-{value or 'empty'}",
                    service,
                    setting or opt.cli_flag,
                    argv=list(extra),
                    omit=(opt.name,),
                )
                if source == "flag":
                    case.argv.append(f"{opt.cli_flag}={value}")  # also a value like "-x"
                elif source == "env":
                    case.env[opt.env_var] = value
                else:
                    case.toml = f"{opt.name} = {toml_string(value)}\n"
                yield case
            wrong_types = {"table": "{ a = 1 }", "date": "1979-05-27"}
            wrong_types["scalar"] = "5" if opt.is_bool else "true"
            if opt.repeated:
                wrong_types["list-of-tables"] = "[{ a = 1 }]"
            else:
                wrong_types["list"] = '["a", "b"]'
            for kind, toml_value in wrong_types.items():
                yield Case(
                    f"{service}-{opt.name}-toml-{kind}",
                    service,
                    opt.cli_flag,
                    toml=f"{opt.name} = {toml_value}\n",
                    omit=(opt.name,),
                )


def other_cases() -> Iterator[Case]:
    for service in ("management", "node"):
        yield from (
            Case(f"{service}-config-missing", service, "--config", ["--config", "{missing}"]),
            Case(f"{service}-config-dir", service, "--config", ["--config", "{dir}"]),
            Case(f"{service}-config-empty-path", service, "--config", ["--config", ""]),
            Case(f"{service}-config-not-toml", service, "--config", toml='listen = "a\n'),
            Case(f"{service}-config-not-utf8", service, "--config", ["--config", "{binary}"]),
            Case(f"{service}-config-unknown", service, "--config", toml="lisen = 'a:1'\n"),
            Case(f"{service}-config-nested", service, "--config", toml="config = 'x.toml'\n"),
            Case(
                f"{service}-config-env-missing",
                service,
                "--config",
                env={"SPCS_CONFIG": "{missing}"},
            ),
            # combinations
            Case(
                f"{service}-client-auth-alone", service, "--tls-client-auth", ["--tls-client-auth"]
            ),
            Case(
                f"{service}-client-auth-no-ca",
                service,
                "--tls-client-auth",
                ["--tls-client-auth", *WITH_CERT, *WITH_KEY],
            ),
            Case(f"{service}-cert-without-key", service, "--tls-key", list(WITH_CERT)),
            Case(f"{service}-key-without-cert", service, "--tls-cert", list(WITH_KEY)),
            # StorPool values from the environment override the file
            Case(f"{service}-sp-ourid-0", service, "SP_OURID", env={"SP_OURID": "0"}),
            Case(f"{service}-sp-ourid-x", service, "SP_OURID", env={"SP_OURID": "x"}),
            Case(
                f"{service}-sp-port-x", service, "SP_API_HTTP_PORT", env={"SP_API_HTTP_PORT": "x"}
            ),
            Case(
                f"{service}-sp-port-big",
                service,
                "SP_API_HTTP_PORT",
                env={"SP_API_HTTP_PORT": "70000"},
            ),
            # files this process cannot read (real processes; see own_process_cases)
            Case(
                f"{service}-config-unreadable", service, "--config", toml="", unreadable=("config",)
            ),
            Case(
                f"{service}-tls-cert-unreadable",
                service,
                "--tls-cert",
                [*WITH_CERT, *WITH_KEY],
                unreadable=("cert",),
            ),
            Case(
                f"{service}-tls-ca-unreadable",
                service,
                "--tls-ca",
                ["--tls-ca", "{ca}"],
                unreadable=("ca",),
            ),
            Case(
                f"{service}-storpool-conf-unreadable",
                service,
                "--storpool-conf",
                unreadable=("sp_good",),
            ),
            Case(
                f"{service}-log-file-read-only",
                service,
                "--log-file",
                ["--log-file", "{plain}"],
                unreadable=("plain",),
            ),
        )
    yield from (
        Case("node-no-host-id", "node", "--host-id", omit=("host_id",)),
        # --management repeated, and the items of a TOML list, are checked like one value
        Case(
            "node-management-repeated-twice",
            "node",
            "--management",
            ["--management", "mgmt:9710", "--management", "mgmt:9710"],
        ),
        Case(
            "node-management-repeated-empty",
            "node",
            "--management",
            ["--management", "mgmt:9710", "--management", ""],
        ),
        Case(
            "node-management-toml-list-empty-item",
            "node",
            "--management",
            toml='management = ["mgmt1:9710", ""]\n',
        ),
        Case(
            "node-management-toml-list-bad-port",
            "node",
            "--management",
            toml='management = ["mgmt1:9710", "mgmt2:port"]\n',
        ),
        Case(
            "node-management-toml-list-twice",
            "node",
            "--management",
            toml='management = ["mgmt1:9710", "mgmt2:9710,mgmt1:9710"]\n',
        ),
        Case("node-sp-ourid-empty", "node", "SP_OURID", env={"SP_OURID": ""}),
        Case("node-sp-token-empty", "node", "SP_AUTH_TOKEN", env={"SP_AUTH_TOKEN": ""}),
        Case(
            "node-storpool-dropins-unreadable",
            "node",
            "--storpool-conf",
            unreadable=("sp_good.d",),
        ),
        Case("node-device-root-unreadable", "node", "--device-root", unreadable=("dev",)),
        Case("node-state-dir-read-only", "node", "--state-dir", unreadable=("state",)),
        Case("management-db-unreadable", "management", "--db", unreadable=("db",)),
        Case(
            "management-database-password-file-unreadable",
            "management",
            "--database-password-file",
            ["--database-url", MYSQL_URL, "--database-password-file", "{password}"],
            unreadable=("password",),
        ),
        Case(
            "management-database-password-env-sqlite",
            "management",
            "SPCS_DATABASE_PASSWORD",
            env={"SPCS_DATABASE_PASSWORD": "hunter2"},  # but the state database is SQLite
        ),
    )


ALL_CASES = [*option_cases(), *other_cases()]


def test_every_option_has_bad_values():
    from spcs.management.settings import OPTIONS as MANAGEMENT
    from spcs.node.settings import OPTIONS as NODE

    for service, options in (("management", MANAGEMENT), ("node", NODE)):
        missing = [opt.name for opt in options if len(SERVICE_BAD[service].get(opt.name, [])) < 2]
        assert missing == [], f"spcs {service}: add bad values for {missing}"
    assert len({case.id for case in ALL_CASES}) == len(ALL_CASES)


# ------------------------------------------------------------------ the files cases refer to


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Named files and directories the case values point at (`{name}` in a value)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    top = tmp_path_factory.mktemp("settings-files")
    paths = {"dir": top / "dir", "plain": top / "plain", "missing": top / "missing"}
    paths["dir"].mkdir()
    paths["plain"].write_text("x\n")
    paths["garbage"] = top / "garbage.pem"
    paths["garbage"].write_text("this is neither a certificate nor a key nor a database\n")
    paths["binary"] = top / "binary.toml"
    paths["binary"].write_bytes(b"\xff\xfe\x00listen\n")
    paths["empty"] = top / "empty"
    paths["empty"].write_text("\n")
    paths["password"] = top / "password"
    paths["password"].write_text("hunter2\n")
    curve = ("-pkeyopt", "ec_paramgen_curve:P-256")
    for name, key in (("cert", "key"), ("ca", "ca_key")):
        subject = ("-subj", f"/CN={name}", "-days", "2")
        openssl(
            "req",
            "-x509",
            "-newkey",
            "ec",
            *curve,
            "-nodes",
            "-keyout",
            f"{key}.pem",
            "-out",
            f"{name}.pem",
            *subject,
            cwd=top,
        )
        paths[name], paths[key] = top / f"{name}.pem", top / f"{key}.pem"
    openssl("genpkey", "-algorithm", "EC", *curve, "-out", "other_key.pem", cwd=top)
    paths["other_key"] = top / "other_key.pem"
    encrypt = ("-aes256", "-passout", "pass:secret")
    openssl("pkey", "-in", "key.pem", *encrypt, "-out", "encrypted_key.pem", cwd=top)
    paths["encrypted_key"] = top / "encrypted_key.pem"
    paths["sp_binary"] = top / "sp_binary.conf"
    paths["sp_binary"].write_bytes(b"\xff\xfe\x00SP_OURID=1\n")
    for name, text in STORPOOL_FILES.items():
        paths[name] = top / f"{name}.conf"
        paths[name].write_text(text)
    return paths


def fill(text: str, names: dict[str, str]) -> str:
    """`{name}` → the path of that file (other braces, as in TOML tables, stay)."""
    return re.sub(r"\{(\w+)\}", lambda match: names.get(match[1], match[0]), text)


def prepare(case: Case, files: dict[str, Path], root: Path) -> tuple[list[str], dict[str, str]]:
    """The case's argv (after `spcs`) and environment, with a case directory `root` holding
    the base settings: every required setting valid, the one under test left out."""
    root.mkdir(parents=True)
    names = {name: str(path) for name, path in files.items()}
    sp_good = root / "storpool.conf"
    shutil.copy(files["sp_good"], sp_good)
    (root / "storpool.conf.d").mkdir()
    (root / "dev").mkdir()
    base = {
        "listen": "127.0.0.1:0",
        "storpool_conf": str(sp_good),
        "db": str(root / "db" / "management.db"),
        "host_id": "kvm-host-1",
        "storpool_section": "kvm1",
        "device_root": str(root / "dev"),
        "state_dir": str(root / "state"),
        "mount_root": str(root / "mnt"),
    }
    if case.service == "management":
        keys = ("listen", "storpool_conf", "db")
    else:
        keys = ("listen", "storpool_conf", "host_id", "storpool_section")
        keys += ("device_root", "state_dir", "mount_root")
    argv = [case.service]
    for key in keys:
        if key not in case.omit:
            argv += ["--" + key.replace("_", "-"), base[key]]
    if case.toml is not None:
        config = root / "config.toml"
        config.write_text(fill(case.toml, names))
        argv += ["--config", str(config)]
    argv += [fill(arg, names) for arg in case.argv]
    env = {key: fill(value, names) for key, value in case.env.items()}
    for what in case.unreadable:
        target = {
            "config": root / "config.toml",
            "sp_good": sp_good,
            "sp_good.d": root / "storpool.conf.d",
            "dev": root / "dev",
            "state": root / "state",
            "db": root / "db" / "management.db",
        }.get(what)
        if target is None:  # one of the shared files: use a private copy
            target = root / files[what].name
            shutil.copy(files[what], target)
            argv = [arg.replace(str(files[what]), str(target)) for arg in argv]
        if what == "state":
            target.mkdir()
            target.chmod(0o500)  # exists, but not writable
        elif what == "db":
            target.parent.mkdir()
            target.write_bytes(b"")
            target.chmod(0)
        elif what == "plain":
            target.chmod(0o444)  # readable, not writable
        else:
            target.chmod(0)
    return argv, env


def clean_environment() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")
    return {key: os.environ[key] for key in keep if key in os.environ}


def without_file_access_override() -> list[str]:
    """The prefix that makes root subject to file permissions (as any other user is)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root ignores file permissions and setpriv (util-linux) is missing")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


def message_of(case: Case, code: int | str, output: str) -> str:
    context = f"case {case.id}: exit {code}, output:\n{output}"
    assert "Traceback" not in output, context
    assert "hunter2" not in output, context  # the cases' database password: never shown
    assert code == 2, context
    lines = output.strip().splitlines()
    assert len(lines) == 1, context
    match = re.fullmatch(
        rf"spcs {case.service}: configuration error: (\S+)( \([^)]*\))?: (\S.*)", lines[0]
    )
    assert match is not None, context
    assert match.group(1) == case.setting, context
    return lines[0]


def run_in_runner(prepared: list[tuple[Case, list[str], dict[str, str], Path]]) -> list[dict]:
    payload = [
        {"argv": argv, "env": {**clean_environment(), **env}, "cwd": str(cwd)}
        for _, argv, env, cwd in prepared
    ]
    done = subprocess.run(
        [sys.executable, __file__, RUNNER_FLAG],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("service", ["management", "node"])
def test_bad_settings_are_configuration_errors(
    service: str, files: dict[str, Path], tmp_path: Path
):
    cases = [c for c in ALL_CASES if c.service == service and not c.needs_own_process]
    prepared = []
    for number, case in enumerate(cases):
        argv, env = prepare(case, files, tmp_path / str(number))
        prepared.append((case, argv, env, tmp_path / str(number)))
    results = run_in_runner(prepared)
    failures = []
    for (case, _, _, cwd), result in zip(prepared, results, strict=True):
        try:
            message_of(case, result["code"], (cwd / "output").read_text(errors="replace"))
        except AssertionError as error:
            failures.append(str(error))
    assert failures == [], f"{len(failures)} of {len(cases)} cases:\n" + "\n\n".join(failures)
    assert len(cases) > 100


OWN_PROCESS = [c for c in ALL_CASES if c.needs_own_process] + [
    # a few of the runner's cases again as real processes: the runner tells the same
    next(c for c in ALL_CASES if c.id == "node-workers-env-0"),
    next(c for c in ALL_CASES if c.id == "management-listen-toml-table"),
    next(c for c in ALL_CASES if c.id == "node-sp-ourid-0"),
]


@pytest.mark.parametrize("case", OWN_PROCESS, ids=lambda c: c.id)
def test_bad_settings_in_a_real_process(case: Case, files: dict[str, Path], tmp_path: Path):
    argv, env = prepare(case, files, tmp_path / "case")
    prefix = without_file_access_override() if case.unreadable else []
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "spcs.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean_environment(), **env},
        cwd=tmp_path / "case",
    )
    assert result.stdout == ""
    message_of(case, result.returncode, result.stderr)


# ------------------------------------------------------------------ the runner process


def run_cases() -> None:
    """Read cases (JSON) from stdin; run each in a forked child; print the exit codes."""
    import signal
    import time
    import traceback

    # what `spcs management` / `spcs node` import before they read their settings
    import spcs.cli
    import spcs.management.app
    import spcs.management.cli
    import spcs.node.app
    import spcs.node.cli

    results = []
    for case in json.load(sys.stdin):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                out = os.open(
                    Path(case["cwd"], "output"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
                )
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.chdir(case["cwd"])
                os.environ.clear()
                os.environ.update(case["env"])
                code = spcs.cli.main(case["argv"])
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:
                traceback.print_exc()  # what the interpreter prints for an uncaught exception
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code if isinstance(code, int) else 1)
        deadline = time.monotonic() + 20
        while True:
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                results.append({"code": os.waitstatus_to_exitcode(status)})
                break
            if time.monotonic() > deadline:  # the settings were taken: it is serving
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                results.append({"code": "still running after 20 s (settings accepted)"})
                break
            time.sleep(0.002)
    print(json.dumps(results))


if __name__ == "__main__" and sys.argv[1:] == [RUNNER_FLAG]:
    run_cases()
