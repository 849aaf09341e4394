"""``lamina copy`` and ``lamina inspect`` end to end against the real registries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.images import BuiltLayout
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry


def lamina(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamina", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def _reg_flags(server: RegistryServer) -> list[str]:
    if server.kind == "tls":
        assert server.ca_cert is not None
        return [f"--registry-certificate={server.host}={server.ca_cert}"]
    return [f"--insecure-registry={server.host}"]


def _env(server: RegistryServer, tmp_path: Path) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["DOCKER_CONFIG"] = str(
        server.write_docker_config(tmp_path / f"docker-{server.kind}").parent
    )
    return env


def test_copy_layout_to_all_registries_and_back(
    busybox_layout: BuiltLayout,
    registry_plain: RegistryServer,
    registry_htpasswd: RegistryServer,
    registry_tls: RegistryServer,
    tmp_path: Path,
) -> None:
    src = f"oci:{busybox_layout.layout}:{busybox_layout.tag}"
    for server in (registry_plain, registry_htpasswd, registry_tls):
        env = _env(server, tmp_path)
        dst = f"docker://{server.host}/cli/busybox:copied"
        proc = lamina("copy", *_reg_flags(server), src, dst, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == busybox_layout.manifest_digest
        # an independent tool reads what we pushed
        info = subprocess.run(
            [
                "skopeo",
                "inspect",
                *server.skopeo_args(),
                f"docker://{server.host}/cli/busybox:copied",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(info.stdout)["Digest"] == busybox_layout.manifest_digest
        # inspect through lamina
        proc = lamina("inspect", *_reg_flags(server), dst, env=env)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert json.dumps(doc).count(busybox_layout.manifest_digest) >= 1
    # registry -> docker-archive -> OCI layout, checked by skopeo and umoci
    archive = tmp_path / "busybox.tar"
    env = _env(registry_plain, tmp_path)
    proc = lamina(
        "copy",
        *_reg_flags(registry_plain),
        f"docker://{registry_plain.host}/cli/busybox:copied",
        f"docker-archive:{archive}:example.com/busybox:1",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    subprocess.run(
        ["skopeo", "inspect", f"docker-archive:{archive}"], check=True, capture_output=True
    )
    layout = tmp_path / "layout"
    proc = lamina("copy", f"docker-archive:{archive}", f"oci:{layout}:v1")
    assert proc.returncode == 0, proc.stderr
    stat = subprocess.run(
        ["umoci", "stat", "--image", f"{layout}:v1"], capture_output=True, text=True, check=False
    )
    assert stat.returncode == 0, stat.stderr


def test_clear_errors(
    registry_htpasswd: RegistryServer, registry_tls: RegistryServer, tmp_path: Path
) -> None:
    # no credentials on the htpasswd registry
    import os

    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path / "empty"))
    proc = lamina(
        "inspect",
        f"--insecure-registry={registry_htpasswd.host}",
        f"docker://{registry_htpasswd.host}/nothing/here:1",
        env=env,
    )
    assert proc.returncode == 4
    assert "Traceback" not in proc.stderr
    assert registry_htpasswd.host in proc.stderr
    # TLS without the CA
    proc = lamina("inspect", f"docker://{registry_tls.host}/nothing/here:1", env=env)
    assert proc.returncode == 4
    assert "Traceback" not in proc.stderr
    assert "hint:" in proc.stderr
    # a missing tag
    proc = lamina(
        "inspect",
        f"--registry-certificate={registry_tls.host}={registry_tls.ca_cert}",
        f"docker://{registry_tls.host}/nothing/here:1",
        env=env,
    )
    assert proc.returncode == 4
    assert "nothing/here" in proc.stderr
    # bad location syntax
    proc = lamina("copy", "busybox", "oci:/tmp/x")
    assert proc.returncode == 2
    assert "unknown image location" in proc.stderr
