"""Lazy registry cache hits: what a fully cached build downloads, corrupted entries found
late (stage materialisation, the final verification), and cross-repository mounts.

The cache is a repository on the real plain registry; requests are counted in the
registry's access log. Each test builds content of its own (a marker in the
Dockerfile), so corrupting a blob in the registry's storage touches no other test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from lamina.builder import BuildOptions, CacheOptions, OutputOptions, build_and_output
from lamina.cache import open_layer_cache
from lamina.oci.oci_layout import OCILayout
from lamina.registry import RegistryClient
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.root, pytest.mark.namespaces, pytest.mark.registry]

LOG = logging.getLogger("lamina.tests.cachelazy")

if os.geteuid() != 0 or not Path("/bin/busybox").exists():  # pragma: no cover
    pytest.skip("builds need root and /bin/busybox", allow_module_level=True)

MULTI = """\
FROM {base} AS builder
RUN echo {marker} > /artifact.txt
COPY lib/ /src/
RUN cat /src/a.txt >> /artifact.txt && echo {marker} > /other.txt

FROM {base}
RUN echo {marker} final > /final.txt
COPY --from=builder /artifact.txt /artifact.txt
COPY app/main.py /app/
"""
FILES = {"lib/a.txt": "alpha\n", "app/main.py": "print(1)\n"}
_REQUEST = re.compile(r'"(GET|HEAD|POST|PUT|PATCH) (\S+) HTTP/[0-9.]+" (\d+)')


@dataclass(frozen=True, slots=True)
class Built:
    digest: str
    log: str
    records: list[dict[str, object]]
    #: (method, uri, status) of every registry request during the build
    requests: list[tuple[str, str, int]]

    def record(self, step: int, stage: str) -> dict[str, object]:
        for r in self.records:
            if r["step"] == step and r["stage"] == stage:
                return r
        raise AssertionError(f"no record for step {step} of stage {stage}: {self.records}")

    def layer(self, step: int, stage: str) -> str:
        return str(self.record(step, stage)["layer_digest"])

    def blob_gets(self, digest: str) -> int:
        return sum(
            1 for m, uri, _ in self.requests if m == "GET" and uri.endswith(f"/blobs/{digest}")
        )


class Runner:
    def __init__(
        self,
        tmp: Path,
        server: RegistryServer,
        client: RegistryClient,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        self.tmp = tmp
        self.server = server
        self.client = client
        self.caplog = caplog
        self.repo = f"{server.host}/cachelazy/{tmp.name.lower()}/cache"
        self.n = 0

    def __call__(self, ctx: Path, *, destination: str | None = None) -> Built:
        self.n += 1
        layout = self.tmp / f"out-{self.n}"
        report = self.tmp / f"report-{self.n}.json"
        layer_cache = open_layer_cache(
            enabled=True,
            cache_repo=self.repo,
            cache_dir=None,
            cache_dir_explicit=False,
            ttl=timedelta(hours=1),
            no_push_cache=False,
            destinations=[],
            registry_client=self.client,
            work_dir=self.tmp / f"downloads-{self.n}",
            log=LOG,
        )
        output = OutputOptions(
            no_push=destination is None,
            destinations=(destination,) if destination else (),
            oci_layout_path=str(layout),
        )
        options = BuildOptions(
            dockerfile=str(ctx / "Dockerfile"),
            context=str(ctx),
            kaniko_dir=self.tmp / f"kaniko-{self.n}",
            reproducible=True,
        )
        cache = CacheOptions(enabled=True, dir=self.tmp / "no-cache-dir", report=report)
        offset = self.server.log_file.stat().st_size
        self.caplog.clear()
        with self.caplog.at_level(logging.INFO, logger=LOG.name):
            result = build_and_output(
                options,
                cache,
                output,
                registry=self.client,
                runner=None,
                log=LOG,
                layer_cache=layer_cache,
            )
        with self.server.log_file.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        requests = [(m, urllib.parse.unquote(u), int(s)) for m, u, s in _REQUEST.findall(text)]
        assert OCILayout.open(layout).image().digest() == result.digest
        for blob in (layout / "blobs" / "sha256").iterdir():  # linked or written: intact
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
        return Built(
            digest=str(result.digest),
            log=self.caplog.text,
            records=json.loads(report.read_text())["steps"],
            requests=requests,
        )


@pytest.fixture
def run(
    tmp_path: Path,
    registry_plain: RegistryServer,
    client: RegistryClient,
    caplog: pytest.LogCaptureFixture,
) -> Runner:
    return Runner(tmp_path, registry_plain, client, caplog)


def _context(tmp_path: Path, base: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(MULTI.format(base=base, marker=f"m-{tmp_path.name}"))
    for name, text in FILES.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def _blob_file(server: RegistryServer, digest: str) -> Path:
    hex_ = digest.removeprefix("sha256:")
    return server.data_dir / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def test_a_fully_cached_build_downloads_only_the_target_stage_layers(
    run: Runner, tmp_path: Path, busybox_image: str
) -> None:
    ctx = _context(tmp_path, busybox_image)
    cold = run(ctx)
    builder_layers = [cold.layer(s, "builder") for s in (1, 2, 3)]
    target_layers = [cold.layer(s, "1") for s in (1, 2, 3)]
    warm = run(ctx)
    assert [r["status"] for r in warm.records] == ["hit"] * 6
    assert warm.digest == cold.digest
    assert "extracting" not in warm.log
    if not Path("/kaniko").is_dir():  # --isolation=auto could not build in place here
        assert "isolation:" not in warm.log  # nothing runs: no runner is even probed
        assert "isolation:" in cold.log
    for digest in builder_layers:
        assert warm.blob_gets(digest) == 0, f"the builder's layer {digest} was downloaded"
    for digest in target_layers:
        # verified once (the final pass), then read from the downloaded file
        assert warm.blob_gets(digest) == 1, f"target layer {digest}: {warm.requests}"


def test_corrupted_entries_of_both_stages_are_rebuilt_and_the_image_is_right(
    run: Runner, tmp_path: Path, busybox_image: str, registry_plain: RegistryServer
) -> None:
    ctx = _context(tmp_path, busybox_image)
    cold = run(ctx)
    # the builder's last RUN, and the final stage's COPY --from (found by the final
    # verification; rebuilding it reads the builder stage, whose corrupted layer is
    # then found while the stage is materialised)
    corrupt = [cold.layer(3, "builder"), cold.layer(2, "1")]
    originals: dict[Path, bytes] = {}
    try:
        for digest in corrupt:
            blob = _blob_file(registry_plain, digest)
            data = blob.read_bytes()
            originals[blob] = data
            blob.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # same size
        warm = run(ctx)
    finally:
        for blob, data in originals.items():
            blob.write_bytes(data)
    assert warm.digest == cold.digest
    warnings = [line for line in warm.log.splitlines() if "WARNING" in line]
    assert sum("corrupted" in w and "treated as a miss" in w for w in warnings) == 2, warnings
    assert "rebuilding from stage builder" in warm.log
    statuses = {(r["stage"], r["step"]): r["status"] for r in warm.records}
    assert statuses == {
        ("builder", 1): "hit",
        ("builder", 2): "hit",
        ("builder", 3): "miss",
        ("1", 1): "hit",
        ("1", 2): "miss",
        ("1", 3): "hit",
    }
    assert str(warm.record(3, "builder")["reason"]).startswith("corrupted: ")
    assert str(warm.record(2, "1")["reason"]).startswith("corrupted: ")


def test_pushing_a_cached_build_to_the_cache_registry_mounts_its_layers(
    run: Runner, tmp_path: Path, busybox_image: str, registry_plain: RegistryServer
) -> None:
    ctx = _context(tmp_path, busybox_image)
    cold = run(ctx)
    target_layers = [cold.layer(s, "1") for s in (1, 2, 3)]
    dest_repo = f"cachelazy/{tmp_path.name.lower()}/app"
    warm = run(ctx, destination=f"{registry_plain.host}/{dest_repo}:1")
    assert warm.digest == cold.digest
    cache_repo = run.repo.removeprefix(registry_plain.host + "/")
    for digest in target_layers:
        mounts = [
            (uri, status)
            for m, uri, status in warm.requests
            if m == "POST"
            and uri.startswith(f"/v2/{dest_repo}/blobs/uploads/?")
            and f"mount={digest}" in uri
        ]
        assert mounts == [
            (f"/v2/{dest_repo}/blobs/uploads/?mount={digest}&from={cache_repo}", 201)
        ], warm.requests
        uploads = [uri for m, uri, _ in warm.requests if m in ("PUT", "PATCH") and digest in uri]
        assert uploads == []
