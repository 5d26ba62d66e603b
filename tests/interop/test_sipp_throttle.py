"""200 SIPp phones refreshing through a throttling edge, in compressed time:
a refresh every second stands for one every 60 s, 10 of them for 10 minutes.
The phones are granted 2 s; the upstream registrar (a second edgeproxy,
behind a counting relay) is asked for 10 s, its lifetime here."""

from __future__ import annotations

import math
import pathlib
import time

import pytest

from benchmarks.harness import sipp_users
from tests.integration.test_throttle import deployment
from tests.interop.sipp import run_sipp

PHONES = 200
REFRESH = 1.0  # seconds between a phone's refreshes
CLIENT_EXPIRES = 2
UPSTREAM_EXPIRES = 10


@pytest.mark.parametrize("mode", ["contact", "aor"])
def test_sipp_phones_cost_the_upstream_one_registration_per_lifetime(mode: str, tmp_path: pathlib.Path) -> None:
    csv, toml = sipp_users(tmp_path, PHONES)
    with deployment(tmp_path, mode, client_expires=CLIENT_EXPIRES, upstream_expires=UPSTREAM_EXPIRES,
                    users=toml) as (_, relay, (edge,)):
        started = time.monotonic()
        code, output = run_sipp("register_refresh.xml", f"127.0.0.1:{edge.port}", "udp", calls=PHONES, rate=100,
                                workdir=tmp_path, inf=csv, timeout=60,
                                extra=["-d", str(int(REFRESH * 1000)), "-key", "expires", str(CLIENT_EXPIRES),
                                       "-l", str(PHONES)])
        elapsed = time.monotonic() - started
        assert code == 0, output  # every REGISTER and refresh of every phone got its 200
        client_registers = PHONES * 11
        lifetimes = 1 + math.floor(elapsed / UPSTREAM_EXPIRES)  # lifetimes begun during the run
        registrations = relay.counts["200 REGISTER"]
        print(f"\n{mode}: {client_registers} client REGISTERs in {elapsed:.1f} s → {registrations} upstream "
              f"registrations ({relay.counts['REGISTER']} REGISTER messages with challenges); "
              f"bound {PHONES} × {lifetimes} lifetimes")
        assert registrations >= PHONES  # each phone (each AoR) was registered upstream
        assert registrations <= PHONES * lifetimes, relay.counts
