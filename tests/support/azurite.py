"""Azurite (npm ``azurite``), the Azure Blob Storage emulator, on loopback.

``start_azurite(workdir)`` runs ``azurite-blob`` from the test cache
(``~/.cache/lamina-tests/azurite``, installed by scripts/test.sh with
``npm install azurite@AZURITE_VERSION``) on a free port. Its account is the emulator's
well-known ``devstoreaccount1``; :meth:`Azurite.put_blob` and :meth:`Azurite.sas_query`
prepare a context with azure-storage-blob.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.registry import free_port

AZURITE_VERSION = "3.37.0"
ACCOUNT = "devstoreaccount1"
#: Azurite's documented development key (public, not a secret)
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class AzuriteFixtureError(RuntimeError):
    """Azurite is not installed or did not start."""


def azurite_binary() -> Path | None:
    cache = Path(os.environ.get("LAMINA_TEST_CACHE", Path.home() / ".cache/lamina-tests"))
    binary = cache / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    return binary if binary.exists() and shutil.which("node") else None


@dataclass(slots=True)
class Azurite:
    host: str
    process: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        """The value for ``AZURE_STORAGE_BLOB_ENDPOINT``."""
        return f"http://{self.host}/{ACCOUNT}"

    def put_blob(self, container: str, name: str, data: bytes) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient(
            self.endpoint, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
        )
        with service:
            with contextlib.suppress(ResourceExistsError):
                service.create_container(container)
            service.get_blob_client(container, name).upload_blob(data, overwrite=True)

    def sas_query(self, container: str, name: str) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        return generate_blob_sas(
            ACCOUNT, container, name, account_key=ACCOUNT_KEY,
            permission=BlobSasPermissions(read=True),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        )  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_azurite(workdir: Path, *, timeout: float = 30.0) -> Azurite:
    binary = azurite_binary()
    if binary is None:
        raise AzuriteFixtureError(
            f"azurite is not installed: npm install azurite@{AZURITE_VERSION} "
            "in ~/.cache/lamina-tests/azurite (scripts/test.sh does it)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (workdir / "azurite.log").open("ab")
    proc = subprocess.Popen(
        [
            str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port),
            "--location", str(workdir / "data"), "--silent", "--skipApiVersionCheck", "--loose",
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    log.close()
    azurite = Azurite(host=f"127.0.0.1:{port}", process=proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return azurite
        except OSError:
            time.sleep(0.1)
    azurite.stop()
    raise AzuriteFixtureError(f"azurite did not listen on port {port}")
