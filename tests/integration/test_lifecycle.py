"""The process contract: config errors exit 2 naming the key, SIGTERM drains and exits 0."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from tests.helpers import ROOT, options, running_proxy, status_of


def edgeproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeproxy.cli", *args], capture_output=True, text=True, cwd=ROOT, check=False,
                          timeout=30)


def test_check_config_names_the_bad_key(tmp_path: pathlib.Path) -> None:
    cases = {
        '[server]\nlisten = ["udp:127.0.0.1"]\n': "server.listen[0]",
        "[server]\nlistn = []\n": "server.listn",
        "[nosuch]\n": "nosuch",
        '[server]\nlisten = ["tls:127.0.0.1:5061"]\n': "tls.cert_file",
        "[limits]\nmax_connections = -1\n": "limits.max_connections",
        '[keepalive]\nmode = "sometimes"\n': "keepalive.mode",
        "[security]\nrate_limit = -5\n": "security.rate_limit",
        "[limits]\noverload_queue = 1.5\n": "limits.overload_queue",
        '[metrics]\nlisten = "localhost:9090"\n': "metrics.listen",
        '[throttle]\nmode = "contact"\n': "throttle.upstream",
        '[throttle]\nmode = "aor"\nupstream = "sip:10.0.0.1"\nclient_expires = 7200\n': "throttle.client_expires",
        '[security]\nscanner_action = "shout"\n': "security.scanner_action",
        "[security]\nscanner_user_agents = [1]\n": "security.scanner_user_agents[0]",
        '[server]\nuser_agent = "A\\r\\nX-Evil: 1"\n': "server.user_agent",
        '[state]\nsentinels = ["127.0.0.1"]\n': "state.sentinels[0]",
        "[server]\nworkers = 0\n": "server.workers",
        "[server]\nworkers = 2\n": "server.workers",  # the memory store cannot be shared by processes
        '[server]\nworkers = 2\nlisten = ["udp:127.0.0.1:0"]\n[state]\nbackend = "redis"\n': "server.workers",
        "[server\n": "not valid TOML",
    }
    for text, key in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        for args in (["check-config", str(path)], ["run", "--config", str(path)]):
            result = edgeproxy(*args)
            assert result.returncode == 2, (text, result.stderr)
            assert key in result.stderr
    good = tmp_path / "good.toml"
    good.write_text('[server]\nlisten = ["udp:127.0.0.1:5060"]\n')
    assert edgeproxy("check-config", str(good)).returncode == 0


def test_examples_pass_check_config() -> None:
    examples = sorted((ROOT / "deploy" / "examples").glob("*.toml"))
    assert examples
    for path in examples:
        result = edgeproxy("check-config", str(path))
        assert result.returncode == 0, (path, result.stderr)


def test_sigterm_exits_zero() -> None:
    with running_proxy() as proxy:
        assert status_of(proxy.udp(options(proxy.uri))) == 200
        assert proxy.stop() == 0
        assert b"stopped" in proxy.log.read_bytes()


def test_log_lines_about_a_message_name_it() -> None:
    """A refused request's log line carries its Call-ID, method, source and the instance (JSON logs)."""
    import json

    with running_proxy('instance_id = "edge-t"\n[log]\nlevel = "debug"\n') as proxy:
        bad = options(proxy.uri).replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS")
        assert status_of(proxy.udp(bad)) == 400
        assert proxy.stop() == 0
        lines = [json.loads(line) for line in proxy.log.read_text().splitlines() if line.startswith("{")]
    refused = [line for line in lines if line["event"] == "request refused"]
    assert len(refused) == 1, lines
    call_id = re.search(rb"Call-ID: (\S+)", bad).group(1).decode()  # type: ignore[union-attr]
    assert refused[0]["call_id"] == call_id and refused[0]["method"] == "OPTIONS"
    assert refused[0]["source"].startswith("udp:127.0.0.1:") and refused[0]["reply"] == 400
    assert all(line["instance"] == "edge-t" for line in lines)
