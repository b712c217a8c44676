"""storpool.conf as the services read it: host sections, drop-in files, the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from spcs.common.settings import ConfigError
from spcs.storpool import conf as storpool_conf

pytestmark = pytest.mark.fast


def test_storpool_conf_sections_dropins_and_environment(tmp_path: Path):
    conf = tmp_path / "storpool.conf"
    conf.write_text(
        "SP_API_HTTP_HOST=10.0.0.1\nSP_AUTH_TOKEN=base\nSP_CLUSTER_ID=nzkr.b\n"
        "[kvm1]\nSP_OURID=11\n[kvm2]\nSP_OURID=12\n"
    )
    (tmp_path / "storpool.conf.d").mkdir()
    (tmp_path / "storpool.conf.d" / "50-port.conf").write_text("SP_API_HTTP_PORT=8181\n")
    (tmp_path / "storpool.conf.d" / ".hidden.conf").write_text("SP_API_HTTP_PORT=1\n")
    kvm1 = storpool_conf.load(conf, section="kvm1", environ={})
    assert (kvm1.api_host, kvm1.api_port, kvm1.auth_token, kvm1.our_id, kvm1.cluster_id) == (
        "10.0.0.1",
        8181,
        "base",
        11,
        "nzkr.b",
    )
    assert storpool_conf.load(conf, section="kvm2", environ={}).our_id == 12
    env = storpool_conf.load(
        conf, section="kvm2", environ={"SP_AUTH_TOKEN": "env", "SP_OURID": "3"}
    )
    assert (env.auth_token, env.our_id) == ("env", 3)
    other = storpool_conf.load(conf, section="other", environ={})
    with pytest.raises(
        ConfigError, match=r"^SP_OURID: StorPool setting SP_OURID is missing.*section \[other\]"
    ):
        other.require("SP_OURID")
    with pytest.raises(ConfigError, match="does not exist"):
        storpool_conf.load(tmp_path / "nope.conf", environ={})
