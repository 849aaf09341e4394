"""Google recipes end to end: a context tarball in gcp-storage-emulator, credentials from
a service-account key (its ``token_uri`` a fake that checks the signed JWT) or a fake
metadata server, and a push to a ``gcr.io`` / ``*.pkg.dev`` name.

The cloud-named registry is a real htpasswd registry accepting ``oauth2accesstoken`` and
the fake's token, reached through ``HTTP_PROXY`` (the registry serves absolute-form
requests) with ``--insecure-registry``: lamina sees the cloud host name, so the provider
is chosen by it, as in production; nothing in lamina is switched for the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.integration.test_remote_context import image_files, lamina_build, targz
from tests.support.cloud import GOOGLE_TOKEN
from tests.support.gcs import GcsEmulator
from tests.support.google_fakes import FakeGoogle
from tests.support.registry import RegistryServer, skopeo

pytestmark = [pytest.mark.registry]

SRC = Path(__file__).resolve().parents[2] / "src"
TOKEN = GOOGLE_TOKEN


def run_executor(
    tmp_path: Path, gcr: RegistryServer, *args: str, env: Mapping[str, str], expect: int = 0
) -> str:
    """``python -m lamina build ARGS`` as the executor, cloud hosts proxied to ``gcr``."""
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(SRC),
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
        "HTTP_PROXY": f"http://{gcr.host}",
        "NO_PROXY": "127.0.0.1,localhost",
        "NO_GCE_CHECK": "true",  # no metadata probe unless a test points at the fake
        **env,
    }
    proc = subprocess.run(
        [
            sys.executable, "-m", "lamina", "build", *args,
            f"--kaniko-dir={tmp_path / 'kaniko'}",
            "--insecure-registry=gcr.io", "--insecure-registry=europe-docker.pkg.dev",
        ],
        capture_output=True, env=full_env, timeout=180, check=False,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == expect, err
    assert "Traceback" not in err
    assert TOKEN not in err
    return err


def pushed_file(gcr: RegistryServer, repo: str, tmp_path: Path) -> dict[str, object]:
    """``skopeo inspect`` of ``repo`` on the real registry (its loopback address)."""
    out = skopeo("inspect", *gcr.skopeo_args(), f"docker://{gcr.host}/{repo}")
    inspected: dict[str, object] = json.loads(out)
    return inspected


def test_gs_context_and_gcr_push_with_a_service_account_key(
    tmp_path: Path, gcs: GcsEmulator, gcr: RegistryServer, google: tuple[FakeGoogle, Path]
) -> None:
    fake, key = google
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key), "STORAGE_EMULATOR_HOST": gcs.host}
    run_executor(
        tmp_path, gcr, "--context=gs://ctx/app/", "--destination=gcr.io/lamina-test/app:1",
        env=env,
    )  # fmt: skip
    inspected = pushed_file(gcr, "lamina-test/app:1", tmp_path)
    assert len(inspected["Layers"]) == 1  # type: ignore[arg-type]
    # one exchange for the context, one for the registry: not one per request
    assert 1 <= fake.grants <= 2


def test_bucket_flag_and_metadata_server_push_to_artifact_registry(
    tmp_path: Path, gcs: GcsEmulator, gcr: RegistryServer, google: tuple[FakeGoogle, Path]
) -> None:
    fake, _ = google
    env = {
        "STORAGE_EMULATOR_HOST": gcs.host,
        "GCE_METADATA_HOST": fake.host,
        "GCE_METADATA_IP": fake.host,  # google-auth probes this address first
        "NO_GCE_CHECK": "false",
    }
    run_executor(
        tmp_path, gcr, "--bucket=ctx", "--destination=europe-docker.pkg.dev/proj/repo/app:2",
        env=env,
    )  # fmt: skip
    pushed_file(gcr, "proj/repo/app:2", tmp_path)
    assert fake.metadata_tokens >= 1
    assert fake.grants == 0


def test_token_endpoint_refusing_is_a_registry_error(
    tmp_path: Path, gcr: RegistryServer, google: tuple[FakeGoogle, Path]
) -> None:
    fake, key = google
    fake.answer = 403
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nENV A=1\n", encoding="utf-8")
    err = run_executor(
        tmp_path, gcr, f"--context={tmp_path / 'ctx'}", "--destination=gcr.io/lamina-test/x:1",
        env={"GOOGLE_APPLICATION_CREDENTIALS": str(key)}, expect=4,
    )  # fmt: skip
    assert f"GOOGLE_APPLICATION_CREDENTIALS={key}" in err
    assert "access_denied" in err
    assert "PRIVATE KEY" not in err


def test_token_endpoint_down_and_malformed_key(
    tmp_path: Path, gcs: GcsEmulator, gcr: RegistryServer, google: tuple[FakeGoogle, Path]
) -> None:
    fake, key = google
    fake.stop()
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key), "STORAGE_EMULATOR_HOST": gcs.host}
    err = run_executor(tmp_path, gcr, "--context=gs://ctx/app/", "--no-push", env=env, expect=3)
    assert "gs://ctx/app/context.tar.gz" in err
    assert "token exchange" in err
    key.write_text('{"type": "service_account"}', encoding="utf-8")
    err = run_executor(tmp_path, gcr, "--context=gs://ctx/", "--no-push", env=env, expect=3)
    assert "not a usable credentials file" in err
    assert str(key) in err


@pytest.mark.parametrize(
    ("context", "text"),
    [
        ("gs://ctx/missing.tar.gz", "gs://ctx/missing.tar.gz"),
        ("gs://no-such-bucket/", "gs://no-such-bucket/context.tar.gz"),
        ("gs://ctx/plain.txt", "cannot unpack the build context gs://ctx/plain.txt"),
    ],
)
def test_bad_bucket_objects_are_context_errors(
    tmp_path: Path, gcs: GcsEmulator, gcr: RegistryServer, context: str, text: str
) -> None:
    env = {"STORAGE_EMULATOR_HOST": gcs.host}
    err = run_executor(tmp_path, gcr, f"--context={context}", "--no-push", env=env, expect=3)
    assert text in err
    assert "hint:" in err


def test_hostile_bucket_tarball_stays_inside(tmp_path: Path, gcs: GcsEmulator) -> None:
    """A bucket object is unpacked like a tar:// context: nothing lands outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    entries: dict[str, bytes | str] = {
        "Dockerfile": b"FROM scratch\nCOPY . /app/\n",
        "../escaped.txt": b"up\n",
        "esc": str(outside),
        "esc/pwned": b"pwned\n",
    }
    gcs.upload("ctx", "hostile/context.tar.gz", targz(entries))
    proc = lamina_build(
        tmp_path, "--context=gs://ctx/hostile/", env={"STORAGE_EMULATOR_HOST": gcs.host,
                                                     "NO_GCE_CHECK": "true"}
    )  # fmt: skip
    assert list(outside.iterdir()) == []
    assert not list(tmp_path.glob("**/escaped.txt"))
    assert not list(tmp_path.glob("**/pwned*"))
    assert b"../escaped.txt" in proc.stderr
    assert "app/escaped.txt" not in image_files(tmp_path / "out")
