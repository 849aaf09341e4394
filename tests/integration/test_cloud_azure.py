"""Azure recipes end to end. Blob contexts against Azurite: the account's shared key
(``AZURE_STORAGE_ACCESS_KEY``, as kaniko) and a SAS URL; the kaniko-style
``https://<account>.blob.core.windows.net/...`` URL is pointed at the emulator with
``AZURE_STORAGE_BLOB_ENDPOINT``; bad objects and keys are context errors (exit 3).

ACR: a client-secret identity whose AAD token comes from a fake authority
(``AZURE_AUTHORITY_HOST``) and is exchanged at ``https://myreg.azurecr.io/oauth2/exchange``
(an ``HTTPS_PROXY`` tunnels to the fake); the image is pushed to ``myreg.azurecr.io``, a
real htpasswd registry reached through ``HTTP_PROXY`` with ``--insecure-registry``,
accepting ``00000000-…`` and the refresh token only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.integration.test_remote_context import image_files, lamina_build
from tests.support.azure_fakes import (
    CLIENT_ID,
    CLIENT_SECRET,
    FEDERATED_TOKEN,
    TENANT,
    ConnectProxy,
    FakeAzure,
)
from tests.support.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from tests.support.cloud import ACR, ACR_REFRESH, BLOB_CONTEXT
from tests.support.registry import RegistryServer, skopeo

CONTEXT = BLOB_CONTEXT
REFRESH = ACR_REFRESH
URL = f"https://{ACCOUNT}.blob.core.windows.net/ctx"


def test_shared_key_context(tmp_path: Path, azurite: Azurite) -> None:
    env = {"AZURE_STORAGE_ACCESS_KEY": ACCOUNT_KEY, "AZURE_STORAGE_BLOB_ENDPOINT": azurite.endpoint}
    proc = lamina_build(tmp_path, f"--context={URL}/app/context.tar.gz", env=env)
    assert ACCOUNT_KEY.encode() not in proc.stderr
    assert image_files(tmp_path / "out")["app/hello.txt"] == b"hi azure\n"


def test_sas_url_context(tmp_path: Path, azurite: Azurite) -> None:
    sas = azurite.sas_query("ctx", "app/context.tar.gz")
    env = {"AZURE_STORAGE_BLOB_ENDPOINT": azurite.endpoint}
    proc = lamina_build(tmp_path, f"--context={URL}/app/context.tar.gz?{sas}", env=env)
    signature = sas.split("sig=")[1].split("&")[0]
    assert signature.encode() not in proc.stderr
    assert b"?<SAS>" in proc.stderr
    assert image_files(tmp_path / "out")["app/Dockerfile"] == CONTEXT["Dockerfile"]


@pytest.mark.parametrize(
    ("blob", "key", "text"),
    [
        ("app/missing.tar.gz", ACCOUNT_KEY, "BlobNotFound"),
        ("app/context.tar.gz", "d3Jvbmcta2V5", "AZURE_STORAGE_ACCESS_KEY"),
        ("plain.txt", ACCOUNT_KEY, "cannot unpack the build context"),
    ],
)
def test_bad_blobs_and_keys_are_context_errors(
    tmp_path: Path, azurite: Azurite, blob: str, key: str, text: str
) -> None:
    env = {"AZURE_STORAGE_ACCESS_KEY": key, "AZURE_STORAGE_BLOB_ENDPOINT": azurite.endpoint}
    proc = lamina_build(tmp_path, f"--context={URL}/{blob}", env=env, expect=3)
    err = proc.stderr.decode()
    assert text in err
    assert f"{URL}/{blob}" in err
    assert "hint:" in err
    assert key not in err


# -- ACR ---------------------------------------------------------------------------------


def push_to_acr(
    tmp_path: Path,
    registry: RegistryServer,
    fake: FakeAzure,
    proxy: ConnectProxy,
    *,
    env: Mapping[str, str] | None = None,
    expect: int = 0,
) -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nENV WHO=acr\n", encoding="utf-8")
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
        "HTTP_PROXY": f"http://{registry.host}",
        "HTTPS_PROXY": proxy.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "SSL_CERT_FILE": str(fake.ca),
        "REQUESTS_CA_BUNDLE": str(fake.ca),
        "AZURE_AUTHORITY_HOST": f"https://{fake.host}",
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_CLIENT_SECRET": CLIENT_SECRET,
        **(env or {}),
    }
    proc = subprocess.run(
        [
            sys.executable, "-m", "lamina", "build", f"--context={ctx}",
            f"--destination={ACR}/app:1", f"--insecure-registry={ACR}",
            f"--kaniko-dir={tmp_path / 'kaniko'}",
        ],
        capture_output=True, env=full_env, timeout=180, check=False,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == expect, err
    assert "Traceback" not in err
    for secret in (CLIENT_SECRET, REFRESH, fake.aad_token):
        assert secret not in err
    return err


def test_acr_push_with_a_client_secret(
    tmp_path: Path, acr_registry: RegistryServer, azure: tuple[FakeAzure, ConnectProxy]
) -> None:
    fake, proxy = azure
    push_to_acr(tmp_path, acr_registry, fake, proxy)
    out = skopeo("inspect", "--config", *acr_registry.skopeo_args(),
                 f"docker://{acr_registry.host}/app:1")  # fmt: skip
    assert "WHO=acr" in json.loads(out)["config"]["Env"]
    assert fake.exchanges == 1  # one exchange for the whole push
    assert fake.token_requests == 1
    assert proxy.tunnels == [f"{ACR}:443"]


def test_acr_push_with_aks_workload_identity(
    tmp_path: Path, acr_registry: RegistryServer, azure: tuple[FakeAzure, ConnectProxy]
) -> None:
    fake, proxy = azure
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(FEDERATED_TOKEN, encoding="utf-8")
    env = {"AZURE_CLIENT_SECRET": "", "AZURE_FEDERATED_TOKEN_FILE": str(token_file)}
    err = push_to_acr(tmp_path, acr_registry, fake, proxy, env=env)
    assert FEDERATED_TOKEN not in err
    assert fake.token_requests == 1
    assert fake.exchanges == 1


def test_acr_exchange_refused_is_a_registry_error(
    tmp_path: Path, acr_registry: RegistryServer, azure: tuple[FakeAzure, ConnectProxy]
) -> None:
    fake, proxy = azure
    fake.exchange_status = 401
    err = push_to_acr(tmp_path, acr_registry, fake, proxy, expect=4)
    assert f"https://{ACR}/oauth2/exchange" in err
    assert "UNAUTHORIZED" in err
    assert "AZURE_CLIENT_SECRET" in err


def test_aad_refusing_the_secret_is_a_registry_error(
    tmp_path: Path, acr_registry: RegistryServer, azure: tuple[FakeAzure, ConnectProxy]
) -> None:
    fake, proxy = azure
    err = push_to_acr(
        tmp_path,
        acr_registry,
        fake,
        proxy,
        env={"AZURE_CLIENT_SECRET": "wrong-secret-4711"},
        expect=4,
    )
    assert "AADSTS7000215" in err
    assert "wrong-secret-4711" not in err
    assert fake.exchanges == 0
