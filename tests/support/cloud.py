"""The cloud emulators as pytest fixtures, shared by the host tests
(tests/integration/test_cloud_{aws,gcp,azure}.py) and the executor-image tests
(tests/integration/test_cloud_images.py); registered in ``tests/conftest.py``.

* AWS: ``moto`` (S3 bucket :data:`BUCKET` holding :data:`S3_CONTEXT` as ``ctx.tar.gz``
  and ``context.tar.gz``, a non-tarball and a hostile tarball), ``ecr_registry`` (an
  htpasswd registry accepting moto's ECR token pair), ``ecr_proxy`` (a forward proxy to it).
* Google: ``gcs`` (gcp-storage-emulator, bucket ``ctx``), ``gcr`` (an htpasswd registry
  accepting ``oauth2accesstoken`` / :data:`GOOGLE_TOKEN`), ``google`` (the fake token
  endpoint and metadata server, and a service-account key file pointing at it).
* Azure: ``azurite`` (container ``ctx``), ``acr_registry`` (an htpasswd registry
  accepting :data:`ACR_USER` / :data:`ACR_REFRESH`), ``azure`` (fake Entra ID and ACR
  exchange over TLS, and a CONNECT proxy to it).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.azure_fakes import ConnectProxy, FakeAzure
from tests.support.azurite import Azurite, AzuriteFixtureError, start_azurite
from tests.support.forward_proxy import ForwardProxy
from tests.support.gcs import GcsEmulator, GcsFixtureError, start_gcs_emulator
from tests.support.google_fakes import FakeGoogle, make_service_account_key
from tests.support.moto import ECR_USERNAME, MotoServer, ecr_password, start_moto
from tests.support.registry import RegistryServer, start_registry


def targz(entries: Mapping[str, bytes]) -> bytes:
    """A gzip tarball of regular files (mode 0644, a fixed mtime)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, value in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(value)
            info.mode = 0o644
            info.mtime = 1_600_000_000
            tar.addfile(info, io.BytesIO(value))
    return gzip.compress(raw.getvalue())


# -- AWS ---------------------------------------------------------------------------------

BUCKET = "ctx-bucket"
S3_CONTEXT = {
    "Dockerfile": b"FROM scratch\nCOPY . /app/\n",
    "hello.txt": b"hello from s3\n",
    "sub/Dockerfile": b"FROM scratch\nCOPY inner.txt /s/\n",
    "sub/inner.txt": b"inner\n",
}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    pytest.importorskip("moto")
    with start_moto() as server:
        s3 = server.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="ctx.tar.gz", Body=targz(S3_CONTEXT))
        s3.put_object(Bucket=BUCKET, Key="context.tar.gz", Body=targz(S3_CONTEXT))
        s3.put_object(Bucket=BUCKET, Key="plain.txt", Body=b"this is not a tarball\n" * 40)
        hostile = {"Dockerfile": S3_CONTEXT["Dockerfile"], "../escaped.txt": b"up\n"}
        s3.put_object(Bucket=BUCKET, Key="hostile.tar.gz", Body=targz(hostile))
        yield server


@pytest.fixture(scope="module")
def ecr_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """An htpasswd registry that accepts the token moto's GetAuthorizationToken hands out."""
    running = start_registry(
        "htpasswd",
        tmp_path_factory.mktemp("ecr-registry"),
        credentials=(ECR_USERNAME, ecr_password()),
    )
    try:
        yield running.server
    finally:
        running.stop()


@pytest.fixture
def ecr_proxy(ecr_registry: RegistryServer) -> Iterator[ForwardProxy]:
    with ForwardProxy(ecr_registry.host) as proxy:
        yield proxy


# -- Google ------------------------------------------------------------------------------

GOOGLE_TOKEN = "ya29.lamina-fake-token"
GCS_CONTEXT = {
    "Dockerfile": b"FROM scratch\nCOPY hello.txt /hello.txt\n",
    "hello.txt": b"hi gcs\n",
}


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    try:
        emulator = start_gcs_emulator(tmp_path_factory.mktemp("gcs"))
    except GcsFixtureError as exc:
        pytest.skip(str(exc))
    emulator.create_bucket("ctx")
    emulator.upload("ctx", "app/context.tar.gz", targz(GCS_CONTEXT))
    emulator.upload("ctx", "context.tar.gz", targz(GCS_CONTEXT))
    emulator.upload("ctx", "plain.txt", b"this is not a tarball\n" * 10)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def gcr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    running = start_registry(
        "htpasswd", tmp_path_factory.mktemp("gcr"), credentials=("oauth2accesstoken", GOOGLE_TOKEN)
    )
    yield running.server
    running.stop()


@pytest.fixture
def google(tmp_path: Path) -> Iterator[tuple[FakeGoogle, Path]]:
    """The fake and a service-account key file (``tmp_path/secret/key.json``) for it."""
    fake = FakeGoogle(access_token=GOOGLE_TOKEN).start()
    info, public = make_service_account_key(fake.token_uri)
    fake.public_key = public
    key = tmp_path / "secret" / "key.json"
    key.parent.mkdir()
    key.write_text(json.dumps(info), encoding="utf-8")
    yield fake, key
    fake.stop()


# -- Azure -------------------------------------------------------------------------------

BLOB_CONTEXT = {"Dockerfile": b"FROM scratch\nCOPY . /app/\n", "hello.txt": b"hi azure\n"}
ACR = "myreg.azurecr.io"
ACR_USER = "00000000-0000-0000-0000-000000000000"
ACR_REFRESH = "acr-fake-refresh-token"


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    try:
        emulator = start_azurite(tmp_path_factory.mktemp("azurite"))
    except AzuriteFixtureError as exc:
        pytest.skip(str(exc))
    emulator.put_blob("ctx", "app/context.tar.gz", targz(BLOB_CONTEXT))
    emulator.put_blob("ctx", "plain.txt", b"not a tarball\n" * 20)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def acr_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    running = start_registry(
        "htpasswd", tmp_path_factory.mktemp("acr"), credentials=(ACR_USER, ACR_REFRESH)
    )
    yield running.server
    running.stop()


@pytest.fixture
def azure(tmp_path: Path) -> Iterator[tuple[FakeAzure, ConnectProxy]]:
    fake = FakeAzure(workdir=tmp_path / "fake-azure", registry=ACR, refresh_token=ACR_REFRESH)
    fake.start()
    proxy = ConnectProxy(fake.host)
    yield fake, proxy
    proxy.close()
    fake.stop()
