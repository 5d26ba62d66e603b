"""The edge under attack by tools nobody here wrote: SIPVicious (svwar, svcrack,
svmap) and a flood from one source while SIPp clients register and call from
others. Every run is bounded in requests and time."""

from __future__ import annotations

import contextlib
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from benchmarks.harness import sipp_users
from tests.helpers import digest_header, free_port, header_values, options, running_proxy, status_of
from tests.interop.sipp import SippServer, run_sipp

# extensions that exist; 1001 is also registered (online)
USERS = {"1000": "1234", "1001": "77", "1005": "pass5"}


def tool(name: str) -> str:
    """A SIPVicious command: installed with the test extra, next to this interpreter."""
    path = pathlib.Path(sys.executable).parent / f"sipvicious_{name}"
    found = str(path) if path.exists() else shutil.which(f"sipvicious_{name}")
    if found is None:
        pytest.fail(f"sipvicious_{name} not installed: `make test` installs the sipvicious package")
    return found


def sipvicious(name: str, *args: str, timeout: float = 90) -> str:
    proc = subprocess.run([tool(name), *args], capture_output=True, text=True, timeout=timeout, check=False)
    return proc.stdout + proc.stderr


def users_config(tmp_path: pathlib.Path, extra: str = "") -> str:
    users = tmp_path / "users.toml"
    users.write_text("[users]\n" + "".join(f'"{u}" = {{ password = "{p}" }}\n' for u, p in USERS.items()))
    return (f'domains = ["example.com"]\n[registrar]\nusers = "{users}"\nalgorithms = ["MD5"]\nsecret = "t"\n'
            f'{extra}')


def register(port: int, user: str, password: str, sock: socket.socket | None = None) -> int:
    """A digest REGISTER (from 127.0.0.8, or from `sock`, which becomes the Contact); the final status."""
    with contextlib.ExitStack() as stack:
        if sock is None:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind(("127.0.0.8", 0))
        sock.settimeout(3)
        host, port_ = sock.getsockname()
        sent_by = f"{host}:{port_}"

        def request(cseq: int, auth: str = "") -> bytes:
            return (f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {sent_by};branch=z9hG4bKr{cseq}{user};rport\r\n"
                    f"From: <sip:{user}@example.com>;tag=r1\r\nTo: <sip:{user}@example.com>\r\nCall-ID: reg-{user}\r\n"
                    f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{sent_by}>\r\nExpires: 600\r\nMax-Forwards: 70\r\n"
                    f"{auth}Content-Length: 0\r\n\r\n").encode()

        sock.sendto(request(1), ("127.0.0.1", port))
        challenge = sock.recv(65535)
        if status_of(challenge) != 401:
            return status_of(challenge)
        value = header_values(challenge, "WWW-Authenticate")[0]
        auth = f"Authorization: {digest_header(value, user, password, 'REGISTER', 'sip:example.com')}\r\n"
        sock.sendto(request(2, auth), ("127.0.0.1", port))
        return status_of(sock.recv(65535))


def table_rows(output: str) -> list[list[str]]:
    """Rows of the result table SIPVicious prints (| a | b |), header excluded."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in output.splitlines()
            if line.startswith("|")]
    return rows[1:]


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_finds_no_extension(method: str, tmp_path: pathlib.Path) -> None:
    with running_proxy(users_config(tmp_path)) as proxy:
        assert register(proxy.port, "1001", USERS["1001"]) == 200
        output = sipvicious("svwar", "--force", "-m", method, "-e", "990-1010", "-b", "127.0.0.5",
                            "-p", str(proxy.port), "127.0.0.1")
        assert "SIP/2.0 40" in output, output  # it did get answers: the same challenge for everyone
        assert table_rows(output) == [], output
        assert "found nothing" in output, output


def test_svcrack_is_banned_before_it_finds_the_password(tmp_path: pathlib.Path) -> None:
    """svcrack always sends from 127.0.0.1 (it ignores -b); the legitimate client is 127.0.0.8."""
    config = users_config(tmp_path, "[security]\nauth_fail_limit = 5\nauth_fail_window = 60.0\nban_time = 120.0\n")
    with running_proxy(config) as proxy:
        # control: within the limit (3 wrong guesses, then the right one) svcrack does crack it,
        # so the tool and our digest agree and the attack below could succeed if the ban failed
        output = sipvicious("svcrack", "-u", "1000", "-r", "1231-1240", "--maximumtime", "3",
                            "-p", str(proxy.port), "127.0.0.1")
        assert ["1000", "1234"] in table_rows(output), output
    with running_proxy(config) as proxy:
        # the attack: 2,000 guesses, the password among them; banned after the 5th wrong one
        started = time.monotonic()
        output = sipvicious("svcrack", "-u", "1000", "-r", "1-2000", "--maximumtime", "3",
                            "-p", str(proxy.port), "127.0.0.1")
        assert table_rows(output) == [] and "found nothing" in output, output
        assert time.monotonic() - started < 60
        banned = [line for line in proxy.log.read_text().splitlines() if '"banned"' in line]
        assert len(banned) == 1 and '"key": "ip:127.0.0.1"' in banned[0], banned
        assert '"reason": "failed authentication"' in banned[0]
        # the banned address gets no answer at all; everyone else is served
        with pytest.raises(TimeoutError):
            proxy.udp(options(f"sip:127.0.0.1:{proxy.port}"), timeout=1.0)
        assert register(proxy.port, "1000", USERS["1000"]) == 200


@pytest.mark.parametrize("user_agent", ["", "ACME SBC 2.1"])
def test_svmap_fingerprint_shows_only_the_configured_name(user_agent: str) -> None:
    config = f'user_agent = "{user_agent}"\n' if user_agent else ""
    with running_proxy(config) as proxy:
        output = sipvicious("svmap", "-p", str(proxy.port), "-b", "127.0.0.5", "127.0.0.1", timeout=60)
        rows = {row[0]: row[1] for row in table_rows(output) if len(row) >= 2}
        assert rows.get(f"127.0.0.1:{proxy.port}") == (user_agent or "unknown"), output
        assert "edgeproxy" not in output.lower()


def test_scanner_user_agents_dropped_or_refused() -> None:
    with running_proxy('[security]\nscanner_action = "drop"\n') as proxy:
        output = sipvicious("svmap", "-p", str(proxy.port), "-b", "127.0.0.5", "127.0.0.1", timeout=60)
        assert table_rows(output) == [], output  # svmap does not even see a SIP device
        assert status_of(proxy.udp(options(f"sip:127.0.0.1:{proxy.port}", extra="User-Agent: Linphone/5\r\n"))) == 200
    with running_proxy('[security]\nscanner_action = "403"\n') as proxy:
        probe = options(f"sip:127.0.0.1:{proxy.port}", extra="User-Agent: friendly-scanner\r\n")
        assert status_of(proxy.udp(probe)) == 403


def flood(port: int, rate: int, seconds: float, answers: list[int]) -> None:
    """OPTIONS from 127.0.0.9 at `rate`/s for `seconds`; counts the answers it gets."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.9", 0))
        s.setblocking(False)
        sent_by = f"127.0.0.9:{s.getsockname()[1]}"
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - start < seconds:
            while sent < (now - start) * rate:
                s.sendto(options(f"sip:127.0.0.1:{port}", sent_by=sent_by), ("127.0.0.1", port))
                sent += 1
            try:
                while s.recv(65535):
                    answers[0] += 1
            except BlockingIOError:
                time.sleep(0.002)
        answers[1] = sent


def test_flooding_source_is_banned_while_others_register_and_call(tmp_path: pathlib.Path) -> None:
    limit = 50  # messages per second and source
    csv, toml = sipp_users(tmp_path, 100)
    uas_port = free_port()
    backend = SippServer("uas_call.xml", uas_port, tmp_path, "uas")
    config = (f'domains = ["example.com"]\n[registrar]\nusers = "{toml}"\nalgorithms = ["MD5"]\nsecret = "t"\n'
              f'[security]\nrate_limit = {limit}\nrate_window = 1.0\nban_time = 60.0\n'
              f'[dispatcher]\nprobe_interval = 1.0\n[[dispatcher.backends]]\nuri = "sip:127.0.0.1:{uas_port}"\n')
    try:
        with running_proxy(config) as proxy:
            time.sleep(1.0)  # the first probe finds the backend
            answers = [0, 0]
            flooder = threading.Thread(target=flood, args=(proxy.port, 10 * limit, 10.0, answers))
            flooder.start()
            time.sleep(0.5)
            results: dict[str, tuple[int, str]] = {}
            caller = threading.Thread(target=lambda: results.setdefault("calls", run_sipp(
                "uac_call.xml", f"127.0.0.1:{proxy.port}", "udp", calls=40, rate=4, workdir=tmp_path,
                local_ip="127.0.0.4", timeout=40)))
            caller.start()
            results["register"] = run_sipp("register_auth.xml", f"127.0.0.1:{proxy.port}", "udp", calls=100,
                                           rate=10, workdir=tmp_path, inf=csv, local_ip="127.0.0.3", timeout=40)
            caller.join(60)
            flooder.join(20)
            for name, (code, output) in results.items():
                assert code == 0, f"{name}: {output}"  # every legitimate registration and call succeeded
            assert answers[1] >= 45 * limit, answers  # it did flood at ~10x the limit for 10 s
            assert answers[0] <= 2 * limit, answers  # and was cut off within its first window
            log = proxy.log.read_text()
            assert re.search(r'"key": "ip:127\.0\.0\.9".*"reason": "flood"', log), log[-2000:]
            assert "127.0.0.3" not in re.findall(r'"key": "ip:([0-9.]+)"', log)
            time.sleep(2.5)
            assert backend.successful() == 40
    finally:
        backend.stop()
