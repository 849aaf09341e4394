"""gcp-storage-emulator (PyPI) on loopback, for ``gs://`` context tests.

``start_gcs_emulator(workdir)`` runs ``gcp-storage-emulator start --in-memory`` on a
free port and returns a :class:`GcsEmulator` whose ``host`` is the value of
``STORAGE_EMULATOR_HOST``; ``create_bucket`` and ``upload`` use its JSON API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.support.registry import free_port


class GcsFixtureError(RuntimeError):
    """The emulator could not be started."""


@dataclass(slots=True)
class GcsEmulator:
    host: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def create_bucket(self, name: str) -> None:
        body = json.dumps({"name": name}).encode()
        req = urllib.request.Request(
            f"{self.url}/storage/v1/b", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def upload(self, bucket: str, name: str, data: bytes) -> None:
        query = f"uploadType=media&name={quote(name, safe='')}"
        req = urllib.request.Request(
            f"{self.url}/upload/storage/v1/b/{bucket}/o?{query}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_gcs_emulator(workdir: Path, *, timeout: float = 30.0) -> GcsEmulator:
    binary = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent))
    if binary is None:
        raise GcsFixtureError("gcp-storage-emulator is not installed: pip install -e '.[test]'")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (workdir / "gcs-emulator.log").open("ab")
    proc = subprocess.Popen(
        [binary, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    emulator = GcsEmulator(host=f"127.0.0.1:{port}", process=proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{emulator.url}/storage/v1/b", timeout=2):
                return emulator
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    emulator.stop()
    raise GcsFixtureError(f"gcp-storage-emulator did not answer on port {port}")
