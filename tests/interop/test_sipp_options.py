"""SIPp, a peer nobody here wrote, against a real edgeproxy over UDP and TCP."""

from __future__ import annotations

import pathlib

import pytest

from tests.helpers import options, running_proxy, status_of
from tests.interop.sipp import run_sipp


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_options_get_200(transport: str, tmp_path: pathlib.Path) -> None:
    with running_proxy() as proxy:
        code, output = run_sipp("options.xml", f"127.0.0.1:{proxy.port}", transport, calls=200, rate=100,
                                workdir=tmp_path)
        assert code == 0, output
        assert proxy.proc.poll() is None


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_malformed_get_400_and_proxy_keeps_serving(transport: str, tmp_path: pathlib.Path) -> None:
    with running_proxy() as proxy:
        code, output = run_sipp("malformed.xml", f"127.0.0.1:{proxy.port}", transport, calls=50, rate=50,
                                workdir=tmp_path)
        assert code == 0, output
        assert status_of(proxy.udp(options(proxy.uri))) == 200
