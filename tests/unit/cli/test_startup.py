"""Start-up cost: a command imports only what it uses (``lamina version`` no builder,
no HTTP client, no importlib.metadata until the version is asked for)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lamina.cli.main import LAMINA_USAGE

SRC = Path(__file__).resolve().parents[3] / "src"

_PROBE = """
import json, sys
from lamina.cli.main import run
before = sorted(sys.modules)
code = run(sys.argv[1:], {}, prog="lamina")
print(json.dumps({"code": code, "before": before, "after": sorted(sys.modules)}))
"""


def _modules(*argv: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def test_importing_the_cli_pulls_in_no_builder_registry_client_or_http() -> None:
    loaded = set(_modules("version")["before"])
    heavy = {
        "httpx",
        "importlib.metadata",
        "lamina.builder._build",
        "lamina.builder._stage",
        "lamina.registry._client",
        "lamina.sandbox",
        "lamina.cache",
        "lamina.dockerfile",
    }
    assert loaded & heavy == set()


_BUILD_PROBE = """
import json, sys
import lamina.builder._build, lamina.builder._stage, lamina.builder._cache
import lamina.cache, lamina.registry
print(json.dumps(sorted(sys.modules)))
"""


def test_a_build_imports_no_run_time_only_code_up_front() -> None:
    """What a build imports before its first step leaves out what only a step that runs
    (or an ADD archive, a zstd layer, a download) needs: a fully cached build never pays
    for it."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD_PROBE],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert "lamina.builder._stage" in loaded  # the probe did import the builder
    run_only = {
        "lamina.sandbox",
        "lamina.builder._git",
        "lamina.context._git",
        "lamina.builder._mounts",
        "lamina.builder._inplace",
        "lamina.fs._extract",
        "lamina.fs._tarwriter",
        "lamina.fs._statindex",
        "lamina.oci.docker_archive",
        "zstandard",
        "tarfile",
        "httpx",
        "subprocess",
        "botocore",
        "lamina.registry._aws",
        "lamina.context._s3",
    }
    assert loaded & run_only == set()


def test_a_plain_build_never_imports_a_cloud_sdk(tmp_path: Path) -> None:
    """botocore (and the AWS code) is imported only for an ECR host or an s3:// context."""
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    out = _modules(
        "build",
        f"--context={tmp_path / 'ctx'}",
        "--no-push",
        f"--oci-layout-path={tmp_path / 'out'}",
        f"--kaniko-dir={tmp_path / 'kaniko'}",
    )
    assert out["code"] == 0
    after = set(out["after"])
    assert "lamina.builder._build" in after  # the probe did build
    cloud = {"botocore", "boto3", "lamina.registry._aws", "lamina.registry._ecr"}
    cloud |= {"google.auth", "azure.identity", "lamina.registry._gar", "lamina.registry._acr"}
    assert after & cloud == set()
    assert "lamina.context._s3" not in after
    assert "lamina.context._gcs" not in after
    assert "lamina.context._azblob" not in after


def test_version_reads_the_version_and_still_imports_no_builder() -> None:
    out = _modules("version")
    assert out["code"] == 0
    after = set(out["after"])
    assert "importlib.metadata" in after
    assert "lamina.builder._build" not in after
    assert "httpx" not in after


def test_lazy_package_exports_resolve() -> None:
    import lamina
    import lamina.builder
    import lamina.registry

    assert isinstance(lamina.__version__, str)
    assert lamina.builder.build_image.__module__ == "lamina.builder._build"
    assert lamina.registry.RegistryClient.__module__ == "lamina.registry._client"
    import lamina.fs
    import lamina.sandbox

    assert lamina.sandbox.detect_container.__module__ == "lamina.sandbox._detect"
    for pkg in (lamina.builder, lamina.registry, lamina.fs, lamina.sandbox):
        for name in pkg.__all__:
            assert getattr(pkg, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = lamina.builder.no_such_name


def test_fast_exit_keeps_output_and_exit_code(tmp_path: Path) -> None:
    """The console entry ends with os._exit: what was written must still arrive whole
    (through a pipe and into a file) and the exit code must be the command's."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.pop("LAMINA_SLOW_EXIT", None)
    help_piped = subprocess.run(
        [sys.executable, "-m", "lamina", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert help_piped.returncode == 0
    assert help_piped.stdout == LAMINA_USAGE
    out = tmp_path / "out.txt"
    with out.open("w") as fh:  # a regular file: block-buffered, only flushed at exit
        code = subprocess.run(
            [sys.executable, "-m", "lamina", "--help"], stdout=fh, env=env, check=False
        ).returncode
    assert code == 0
    assert out.read_text() == help_piped.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lamina", "no-such-command"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2
    assert 'unknown command "no-such-command"' in bad.stderr
    slow = subprocess.run(
        [sys.executable, "-m", "lamina", "--help"],
        capture_output=True,
        text=True,
        env={**env, "LAMINA_SLOW_EXIT": "1"},
        check=False,
    )
    assert slow.returncode == 0
    assert slow.stdout == help_piped.stdout


_CLOUD_PROBE = """
import json, sys
from lamina.cli.main import run
from lamina.registry._auth import Keychain
ctx = sys.argv[1]
code = run(["build", f"--context={ctx}", "--no-push", f"--tar-path={ctx}/out.tar",
            f"--kaniko-dir={ctx}/k"], {"HOME": ctx}, prog="lamina")
Keychain(None, environ={}).resolve("127.0.0.1:5000")
Keychain(None, environ={}).resolve("registry.example.com")
print(json.dumps({"code": code, "after": sorted(sys.modules)}))
"""


def test_a_plain_build_and_its_keychain_load_no_google_or_azure(tmp_path: Path) -> None:
    """Google and Azure code is imported only for a matching registry host or bucket URL."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\nENV A=1\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-c", _CLOUD_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["code"] == 0, proc.stderr
    loaded = set(out["after"])
    assert "lamina.registry._cloud" in loaded  # the keychain did ask for providers
    cloud = {
        m
        for m in loaded
        if m.split(".")[0] in ("google", "azure", "msal", "requests")
        or m
        in (
            "lamina.registry._gar",
            "lamina.registry._acr",
            "lamina.context._gcs",
            "lamina.context._azblob",
        )
    }
    assert cloud == set()
