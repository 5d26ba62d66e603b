"""deploy/ is checked as far as this machine can: the manifests parse, every
edgeproxy config in them passes check-config, the systemd unit verifies, the
image runs as an unprivileged user."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.helpers import ROOT

DEPLOY = pathlib.Path(ROOT) / "deploy"


def check_config(path: pathlib.Path) -> None:
    result = subprocess.run([sys.executable, "-m", "edgeproxy.cli", "check-config", str(path)], capture_output=True,
                            text=True, check=False, timeout=30)
    assert result.returncode == 0, result.stderr


def test_compose_parses_and_its_config_passes() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"edge-1", "edge-2", "redis-1", "redis-2", "sentinel-1", "sentinel-2", "sentinel-3", "asterisk"} <= set(services)
    for name in ("edge-1", "edge-2"):
        assert services[name]["healthcheck"]["test"][-1].endswith("/ready', timeout=2)")
        for volume in services[name]["volumes"]:
            assert (DEPLOY / "compose" / volume.split(":")[0]).exists(), volume
    check_config(DEPLOY / "compose" / "edge.toml")


def test_kubernetes_manifests_parse_and_probe_ready_and_health(tmp_path: pathlib.Path) -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "edgeproxy.yaml").read_text())}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= set(docs)
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert docs["Service"]["spec"]["externalTrafficPolicy"] == "Local"  # sources stay visible (NAT, bans)
    config = tmp_path / "edge.toml"
    config.write_text(docs["ConfigMap"]["data"]["edge.toml"])
    check_config(config)


def test_systemd_unit_verifies(tmp_path: pathlib.Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed here (package systemd)")
    unit = tmp_path / "edgeproxy.service"
    binary = pathlib.Path(sys.executable).with_name("edgeproxy")
    unit.write_text((DEPLOY / "systemd" / "edgeproxy.service").read_text().replace(
        "/opt/edgeproxy/.venv/bin/edgeproxy", str(binary)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr


def test_image_runs_unprivileged_and_copies_what_exists() -> None:
    lines = [line.split() for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line and line[0] != "#"]
    users = [words[1] for words in lines if words[0] == "USER"]
    assert users and users[-1] not in ("root", "0")
    for words in lines:
        if words[0] == "COPY" and not words[1].startswith("--from"):
            for source in words[1:-1]:
                assert (pathlib.Path(ROOT) / source).exists(), source
