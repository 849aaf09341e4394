"""The cloud recipes of issue 13 run in the executor image, as kaniko's users run them.

``podman run --rm --network=host`` of the ``executor`` image (no ``--privileged``), the
credentials handed over the way kaniko's documentation and the clusters do:

* AWS: ``--context=s3://…`` from moto and a push to an ECR-named registry, with a shared
  credentials file mounted at ``/root/.aws/credentials``, or EKS's IRSA (the projected
  token at ``/var/run/secrets/eks.amazonaws.com/serviceaccount/token``, STS); an HTTPS S3
  endpoint whose CA is a file mounted into ``/kaniko/ssl/certs/``;
* Google: ``--context=gs://…`` from gcp-storage-emulator and a push to a ``*.pkg.dev`` name
  with ``GOOGLE_APPLICATION_CREDENTIALS`` naming a mounted service-account key (its
  ``token_uri`` the fake token endpoint), or to ``gcr.io`` with GKE's metadata server;
* Azure: an Azure Blob context from Azurite (``AZURE_STORAGE_ACCESS_KEY``) and a push to
  ``*.azurecr.io`` through the fake Entra ID and ACR exchange, with a client secret or AKS
  workload identity (``AZURE_FEDERATED_TOKEN_FILE``), the authority's CA trusted through
  ``SSL_CERT_FILE`` or, kaniko's way, a file in ``/kaniko/ssl/certs/`` alone (azure-core's
  requests transport is handed lamina's trust as a CA file).

The emulators, fakes and cloud-named registries are the host tests' fixtures
(tests/support/cloud.py); the cloud host names reach the loopback registries through
``HTTP_PROXY`` exactly as on the host. Each test checks the pushed image with skopeo (the
context's file is the layer's only file, the config's ENV, LABEL and CMD) and that no secret
(keys, tokens) is in the container's output at ``--verbosity=debug``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.azure_fakes import (
    CLIENT_ID,
    CLIENT_SECRET,
    FEDERATED_TOKEN,
    TENANT,
    ConnectProxy,
    FakeAzure,
)
from tests.support.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from tests.support.cloud import ACR, ACR_REFRESH, BUCKET, GOOGLE_TOKEN, targz
from tests.support.executor_images import ExecutorImages
from tests.support.forward_proxy import ForwardProxy
from tests.support.gcs import GcsEmulator
from tests.support.google_fakes import FakeGoogle
from tests.support.moto import ECR_HOST, ECR_USERNAME, MotoServer, ecr_password, start_moto
from tests.support.registry import RegistryServer, make_tls_material

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.registry]

if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("patchelf"):
    pytest.skip("needs root, podman and patchelf", allow_module_level=True)


def project(provider: str) -> dict[str, bytes]:
    """A context tarball's files: a file copied into the image, an ENV and a LABEL."""
    return {
        "Dockerfile": (
            f"FROM scratch\nCOPY hello.txt /app/hello.txt\nENV PROVIDER={provider}\n"
            f'LABEL org.example.provider={provider}\nCMD ["/app/hello.txt"]\n'
        ).encode(),
        "hello.txt": f"hello from {provider} in the image\n".encode(),
    }


def run_executor(
    images: ExecutorImages,
    tmp_path: Path,
    *flags: str,
    env: Mapping[str, str],
    volumes: tuple[str, ...] = (),
    secrets: Iterable[str],
    expect: int = 0,
) -> str:
    """The executor image on ``flags`` (an empty /workspace): exit ``expect``, no
    traceback, no secret in its output; returns the output."""
    tag = images.build_variant("executor")
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    env_args = tuple(f"--env={key}={value}" for key, value in env.items())
    proc = images.podman.executor(
        tag,
        workspace,
        *flags,
        # debug for a build that works (every line checked for secrets); an error at debug
        # verbosity prints its traceback by design
        f"--verbosity={'debug' if expect == 0 else 'info'}",
        volumes=volumes,
        podman_args=env_args,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect, output[-6000:]
    assert "Traceback" not in output
    for secret in secrets:
        assert secret not in output, f"a secret in the container's output: {secret[:6]}…"
    return output


@dataclass(frozen=True, slots=True)
class Pushed:
    config: Mapping[str, object]
    files: Mapping[str, bytes]
    entries: frozenset[str]


def pushed(registry: RegistryServer, repo: str, tmp_path: Path) -> Pushed:
    """The image ``repo`` in ``registry`` (its loopback address), copied out with skopeo."""
    target = tmp_path / "pulled"
    subprocess.run(
        ["skopeo", "copy", "-q", *registry.skopeo_src_args(),
         f"docker://{registry.host}/{repo}", f"dir:{target}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    manifest = json.loads((target / "manifest.json").read_text())
    config = json.loads((target / manifest["config"]["digest"].removeprefix("sha256:")).read_text())
    files: dict[str, bytes] = {}
    entries: set[str] = set()
    for layer in manifest["layers"]:
        with tarfile.open(target / layer["digest"].removeprefix("sha256:"), mode="r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./").rstrip("/")
                entries.add(name)
                data = tar.extractfile(member) if member.isfile() else None
                if data is not None:
                    files[name] = data.read()
    return Pushed(config, files, frozenset(entries))


def check_image(image: Pushed, provider: str) -> None:
    """The project's image: its one file, ENV, LABEL, CMD; nothing of the container."""
    assert image.files == {"app/hello.txt": project(provider)["hello.txt"]}
    assert image.entries == {"app", "app/hello.txt"}
    config = image.config["config"]
    assert isinstance(config, dict)
    assert f"PROVIDER={provider}" in config["Env"]
    assert config["Labels"] == {"org.example.provider": provider}
    assert config["Cmd"] == ["/app/hello.txt"]
    assert image.config["os"] == "linux"
    rootfs = image.config["rootfs"]
    assert isinstance(rootfs, dict)
    assert len(rootfs["diff_ids"]) == 1


# -- the recipes -------------------------------------------------------------------------


def test_s3_context_and_ecr_push_with_a_mounted_credentials_file(
    executor_images: ExecutorImages,
    tmp_path: Path,
    moto: MotoServer,
    ecr_registry: RegistryServer,
    ecr_proxy: ForwardProxy,
) -> None:
    moto.client("s3").put_object(Bucket=BUCKET, Key="img/ctx.tar.gz", Body=targz(project("aws")))
    secret_key = "lamina-image-secret-key-4711"
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        f"[default]\naws_access_key_id = AKIAIMAGETEST\naws_secret_access_key = {secret_key}\n"
    )
    env = moto.environ(HTTP_PROXY=ecr_proxy.url, http_proxy=ecr_proxy.url)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    token = base64.b64encode(f"{ECR_USERNAME}:{ecr_password()}".encode()).decode()
    output = run_executor(
        executor_images,
        tmp_path,
        f"--context=s3://{BUCKET}/img/ctx.tar.gz",
        f"--destination={ECR_HOST}/app:image",
        f"--insecure-registry={ECR_HOST}",
        env=env,
        volumes=(f"{aws}:/root/.aws:ro",),
        secrets=(secret_key, ecr_password(), token),
    )
    assert "/root/.aws/credentials" in output  # where the AWS chain found the keys
    assert ("PUT", ECR_HOST, "/v2/app/manifests/image") in ecr_proxy.requests
    check_image(pushed(ecr_registry, "app:image", tmp_path), "aws")


def test_s3_context_and_ecr_push_with_eks_irsa(
    executor_images: ExecutorImages,
    tmp_path: Path,
    moto: MotoServer,
    ecr_registry: RegistryServer,
    ecr_proxy: ForwardProxy,
) -> None:
    """EKS's IRSA: the projected service-account token where EKS mounts it, exchanged at
    STS (botocore's trimmed data keeps sts)."""
    moto.client("s3").put_object(Bucket=BUCKET, Key="img/ctx.tar.gz", Body=targz(project("aws")))
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJpbWFnZS1pcnNhIn0.aW1hZ2Utc2lnbmF0dXJl"
    tokens = tmp_path / "eks-token"
    tokens.mkdir()
    (tokens / "token").write_text(jwt)
    mounted = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
    env = moto.environ(
        HTTP_PROXY=ecr_proxy.url,
        http_proxy=ecr_proxy.url,
        AWS_ROLE_ARN="arn:aws:iam::123456789012:role/ci-builder",
        AWS_WEB_IDENTITY_TOKEN_FILE=f"{mounted}/token",
    )
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    output = run_executor(
        executor_images,
        tmp_path,
        f"--context=s3://{BUCKET}/img/ctx.tar.gz",
        f"--destination={ECR_HOST}/app:irsa",
        f"--insecure-registry={ECR_HOST}",
        env=env,
        volumes=(f"{tokens}:{mounted}:ro",),
        secrets=(jwt, ecr_password()),
    )
    assert "credentials from AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (STS)" in output
    check_image(pushed(ecr_registry, "app:irsa", tmp_path), "aws")


def test_s3_over_https_trusts_a_ca_added_to_the_kaniko_certs_dir(
    executor_images: ExecutorImages,
    tmp_path: Path,
    ecr_registry: RegistryServer,
    ecr_proxy: ForwardProxy,
) -> None:
    """kaniko's way to trust a private CA: a file mounted into /kaniko/ssl/certs/. botocore
    (S3 and ECR's token) reads no SSL_CERT_DIR: lamina hands it the image's trust. A second
    run without the CA fails to verify the endpoint."""
    ca, cert, key = make_tls_material(tmp_path / "tls")
    with start_moto(tls=(cert, key)) as server:
        s3 = server.client("s3", verify=str(ca))
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="ctx.tar.gz", Body=targz(project("aws")))
        # kaniko's MinIO recipe: S3_ENDPOINT and path-style; ECR's token service by its own
        # variable (no AWS_ENDPOINT_URL for every service)
        env = server.environ(
            HTTP_PROXY=ecr_proxy.url,
            http_proxy=ecr_proxy.url,
            S3_ENDPOINT=server.endpoint,
            S3_FORCE_PATH_STYLE="true",
            AWS_ENDPOINT_URL_ECR=server.endpoint,
        )
        del env["AWS_ENDPOINT_URL"]
        secrets = ("testing", ecr_password())
        run_executor(
            executor_images,
            tmp_path,
            f"--context=s3://{BUCKET}/ctx.tar.gz",
            f"--destination={ECR_HOST}/app:https",
            f"--insecure-registry={ECR_HOST}",
            env=env,
            volumes=(f"{ca}:/kaniko/ssl/certs/private-ca.pem:ro",),
            secrets=secrets,
        )
        check_image(pushed(ecr_registry, "app:https", tmp_path), "aws")
        output = run_executor(
            executor_images, tmp_path, f"--context=s3://{BUCKET}/ctx.tar.gz", "--no-push",
            env=env, secrets=secrets, expect=3,
        )  # fmt: skip
    assert "CERTIFICATE_VERIFY_FAILED" in output  # the mounted CA was what made it work


def test_gs_context_and_artifact_registry_push_with_a_key_file(
    executor_images: ExecutorImages,
    tmp_path: Path,
    gcs: GcsEmulator,
    gcr: RegistryServer,
    google: tuple[FakeGoogle, Path],
) -> None:
    fake, key = google
    gcs.upload("ctx", "img/context.tar.gz", targz(project("google")))
    private_key = json.loads(key.read_text())["private_key"]
    key_body = private_key.splitlines()[5]  # a line of the PEM body
    run_executor(
        executor_images,
        tmp_path,
        "--context=gs://ctx/img/",
        "--destination=europe-docker.pkg.dev/lamina-test/repo/app:image",
        "--insecure-registry=europe-docker.pkg.dev",
        env={
            "GOOGLE_APPLICATION_CREDENTIALS": "/secret/key.json",
            "STORAGE_EMULATOR_HOST": gcs.host,
            "HTTP_PROXY": f"http://{gcr.host}",
            "NO_PROXY": "127.0.0.1,localhost",
            "NO_GCE_CHECK": "true",
        },
        volumes=(f"{key.parent}:/secret:ro",),
        secrets=(GOOGLE_TOKEN, key_body, "PRIVATE KEY"),
    )
    assert 1 <= fake.grants <= 2  # the key's JWT grant, verified by the fake
    check_image(pushed(gcr, "lamina-test/repo/app:image", tmp_path), "google")


def test_gs_context_and_gcr_push_with_the_gke_metadata_server(
    executor_images: ExecutorImages,
    tmp_path: Path,
    gcs: GcsEmulator,
    gcr: RegistryServer,
    google: tuple[FakeGoogle, Path],
) -> None:
    """GKE workload identity: no key, the metadata server's token (google-auth's
    compute_engine credentials in the image)."""
    fake, _ = google
    gcs.upload("ctx", "img/context.tar.gz", targz(project("google")))
    run_executor(
        executor_images,
        tmp_path,
        "--context=gs://ctx/img/",
        "--destination=gcr.io/lamina-test/app:gke",
        "--insecure-registry=gcr.io",
        env={
            "STORAGE_EMULATOR_HOST": gcs.host,
            "GCE_METADATA_HOST": fake.host,
            "GCE_METADATA_IP": fake.host,
            "HTTP_PROXY": f"http://{gcr.host}",
            "NO_PROXY": "127.0.0.1,localhost",
        },
        secrets=(GOOGLE_TOKEN,),
    )
    assert fake.metadata_tokens >= 1
    assert fake.grants == 0
    check_image(pushed(gcr, "lamina-test/app:gke", tmp_path), "google")


#: how the fake Entra ID's CA is trusted: SSL_CERT_FILE and REQUESTS_CA_BUNDLE (as the host
#: test), or kaniko's way, a file in /kaniko/ssl/certs/ (SSL_CERT_DIR)
TRUST = {
    "env": (
        {"SSL_CERT_FILE": "/certs/ca.pem", "REQUESTS_CA_BUNDLE": "/certs/ca.pem"},
        "/certs/ca.pem",
    ),
    "kaniko-certs-dir": ({}, "/kaniko/ssl/certs/fake-azure-ca.pem"),
}


#: the AAD identity: a client secret, or AKS workload identity (the federated token where
#: AKS mounts it)
AKS_TOKEN_DIR = "/var/run/secrets/azure/tokens"
IDENTITY = {
    "secret": {"AZURE_CLIENT_SECRET": CLIENT_SECRET},
    "workload-identity": {"AZURE_FEDERATED_TOKEN_FILE": f"{AKS_TOKEN_DIR}/azure-identity-token"},
}


@pytest.mark.parametrize(
    ("identity", "trust"),
    [
        ("secret", "env"),
        ("workload-identity", "env"),
        ("secret", "kaniko-certs-dir"),
    ],
)
def test_blob_context_and_acr_push(
    identity: str,
    trust: str,
    executor_images: ExecutorImages,
    tmp_path: Path,
    *,
    azurite: Azurite,
    acr_registry: RegistryServer,
    azure: tuple[FakeAzure, ConnectProxy],
) -> None:
    fake, proxy = azure
    azurite.put_blob("ctx", "img/context.tar.gz", targz(project("azure")))
    trust_env, ca_path = TRUST[trust]
    volumes = [f"{fake.ca}:{ca_path}:ro"]
    if identity == "workload-identity":
        tokens = tmp_path / "aks-token"
        tokens.mkdir()
        (tokens / "azure-identity-token").write_text(FEDERATED_TOKEN, encoding="utf-8")
        volumes.append(f"{tokens}:{AKS_TOKEN_DIR}:ro")
    run_executor(
        executor_images,
        tmp_path,
        f"--context=https://{ACCOUNT}.blob.core.windows.net/ctx/img/context.tar.gz",
        f"--destination={ACR}/app:image",
        f"--insecure-registry={ACR}",
        env={
            "AZURE_STORAGE_ACCESS_KEY": ACCOUNT_KEY,
            "AZURE_STORAGE_BLOB_ENDPOINT": azurite.endpoint,
            "HTTP_PROXY": f"http://{acr_registry.host}",
            "HTTPS_PROXY": proxy.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "AZURE_AUTHORITY_HOST": f"https://{fake.host}",
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": CLIENT_ID,
            **IDENTITY[identity],
            **trust_env,
        },
        volumes=tuple(volumes),
        secrets=(ACCOUNT_KEY, CLIENT_SECRET, FEDERATED_TOKEN, ACR_REFRESH, fake.aad_token),
    )
    assert fake.token_requests == 1
    assert fake.exchanges == 1
    assert proxy.tunnels == [f"{ACR}:443"]
    check_image(pushed(acr_registry, "app:image", tmp_path), "azure")
