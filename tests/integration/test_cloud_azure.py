"""Azure Blob contexts end to end against Azurite: the account's shared key
(``AZURE_STORAGE_ACCESS_KEY``, as kaniko) and a SAS URL; the kaniko-style
``https://<account>.blob.core.windows.net/...`` URL is pointed at the emulator with
``AZURE_STORAGE_BLOB_ENDPOINT``; bad objects and keys are context errors (exit 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_remote_context import image_files, lamina_build, targz
from tests.support.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, AzuriteFixtureError, start_azurite

CONTEXT = {"Dockerfile": b"FROM scratch\nCOPY . /app/\n", "hello.txt": b"hi azure\n"}
URL = f"https://{ACCOUNT}.blob.core.windows.net/ctx"


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    try:
        emulator = start_azurite(tmp_path_factory.mktemp("azurite"))
    except AzuriteFixtureError as exc:
        pytest.skip(str(exc))
    emulator.put_blob("ctx", "app/context.tar.gz", targz(CONTEXT))
    emulator.put_blob("ctx", "plain.txt", b"not a tarball\n" * 20)
    yield emulator
    emulator.stop()


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
