"""The layer cache in real builds: hits, explained misses, TTL, corruption, stage skipping.

Base images come from the real plain registry; the cache is a repository on that registry
or the local directory back end (``--cache-dir``); outputs are OCI layouts compared by
digest with ``--reproducible``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from lamina.builder import BuildOptions, CacheOptions, OutputOptions, build_and_output
from lamina.cache import LayerCache, open_layer_cache
from lamina.cli import run as cli_run
from lamina.oci.oci_layout import OCILayout
from lamina.registry import RegistryClient
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.root, pytest.mark.namespaces, pytest.mark.registry]

LOG = logging.getLogger("lamina.tests.buildcache")

if os.geteuid() != 0 or not Path("/bin/busybox").exists():  # pragma: no cover
    pytest.skip("builds need root and /bin/busybox", allow_module_level=True)

DOCKERFILE = """\
FROM {base}
ARG VERSION
ENV GREETING=hi
RUN echo "v=$VERSION $GREETING" > /version.txt
WORKDIR /srv
COPY lib/ /srv/lib/
RUN cat /srv/lib/a.txt > /srv/copied.txt
COPY app/main.py /srv/app/
CMD ["sh"]
"""
FILES = {"lib/a.txt": "alpha\n", "lib/b.txt": "beta\n", "app/main.py": "print(1)\n"}
#: the cacheable steps of DOCKERFILE, by step number
CACHEABLE = [3, 4, 5, 6, 7]


@dataclass(frozen=True, slots=True)
class Outcome:
    digest: str
    log: str
    records: list[dict[str, object]]

    def status(self, step: int, stage: str = "0") -> str:
        rec = self.record(step, stage)
        return str(rec["status"])

    def record(self, step: int, stage: str = "0") -> dict[str, object]:
        for r in self.records:
            if r["step"] == step and r["stage"] == stage:
                return r
        raise AssertionError(f"no record for step {step} of stage {stage}: {self.records}")


def make_context(root: Path, dockerfile: str, files: Mapping[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


class Builder:
    """Builds with ``--reproducible`` and the cache in a directory or a registry repository."""

    def __init__(
        self,
        tmp_path: Path,
        client: RegistryClient,
        caplog: pytest.LogCaptureFixture,
        *,
        repo: str | None = None,
    ) -> None:
        self.tmp = tmp_path
        self.client = client
        self.caplog = caplog
        self.cache_dir = tmp_path / "cache"
        self.repo = repo
        self.n = 0

    def layer_cache(self, ttl: timedelta) -> LayerCache | None:
        if self.repo is None:
            return None  # the builder's default: the directory cache under cache.dir
        return open_layer_cache(
            enabled=True,
            cache_repo=self.repo,
            cache_dir=None,
            cache_dir_explicit=False,
            ttl=ttl,
            no_push_cache=False,
            destinations=[],
            registry_client=self.client,
            work_dir=self.tmp / "cache-downloads",
            log=LOG,
        )

    def __call__(
        self,
        ctx: Path,
        *,
        build_args: Mapping[str, str] | None = None,
        ttl: timedelta = timedelta(hours=336),
        enabled: bool = True,
    ) -> Outcome:
        self.n += 1
        layout = self.tmp / f"out-{self.n}"
        report = self.tmp / f"report-{self.n}.json"
        options = BuildOptions(
            dockerfile=str(ctx / "Dockerfile"),
            context=str(ctx),
            kaniko_dir=self.tmp / f"kaniko-{self.n}",
            reproducible=True,
            build_args=tuple((build_args or {}).items()),
        )
        cache = CacheOptions(enabled=enabled, dir=self.cache_dir, ttl=ttl, report=report)
        output = OutputOptions(no_push=True, oci_layout_path=str(layout))
        self.caplog.clear()
        with self.caplog.at_level(logging.INFO, logger=LOG.name):
            result = build_and_output(
                options,
                cache,
                output,
                registry=self.client,
                runner=None,
                log=LOG,
                layer_cache=self.layer_cache(ttl) if enabled else None,
            )
        log = self.caplog.text
        assert OCILayout.open(layout).image().digest() == result.digest
        records = json.loads(report.read_text())["steps"] if enabled else []
        return Outcome(digest=str(result.digest), log=log, records=records)


@pytest.fixture(params=["dir", "registry"])
def build(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    client: RegistryClient,
    caplog: pytest.LogCaptureFixture,
    registry_plain: RegistryServer,
) -> Builder:
    repo = None
    if request.param == "registry":
        repo = f"{registry_plain.host}/cachewire/{tmp_path.name.lower()}/cache"
    return Builder(tmp_path, client, caplog, repo=repo)


@pytest.fixture
def dir_build(tmp_path: Path, client: RegistryClient, caplog: pytest.LogCaptureFixture) -> Builder:
    return Builder(tmp_path, client, caplog)


@pytest.fixture
def ctx(tmp_path: Path, busybox_image: str) -> Path:
    return make_context(tmp_path / "ctx", DOCKERFILE.format(base=busybox_image), FILES)


def test_warm_build_hits_every_step_and_gives_the_same_image(
    build: Builder, ctx: Path, tmp_path: Path
) -> None:
    plain = build(ctx, enabled=False)
    cold = build(ctx)
    assert [cold.status(s) for s in CACHEABLE] == ["miss"] * 5
    assert "MISS: no earlier build of this step is known" in cold.log
    warm = build(ctx)
    assert [warm.status(s) for s in CACHEABLE] == ["hit"] * 5
    assert warm.log.count("HIT: ") == 5
    assert "MISS" not in warm.log
    # nothing was run or extracted: the stage is assembled from cached layers
    assert "extracting" not in warm.log
    assert warm.digest == cold.digest == plain.digest
    assert [warm.status(s) for s in (1, 2, 8)] == ["metadata"] * 3
    for s in CACHEABLE:
        assert warm.record(s)["key"] == cold.record(s)["key"]
    assert warm.record(6)["layer_digest"] == cold.record(6)["layer_digest"]
    # the same context checked out elsewhere, later: still every step hits
    other = make_context(tmp_path / "elsewhere" / "ctx", (ctx / "Dockerfile").read_text(), FILES)
    for p in other.rglob("*"):
        os.utime(p, (1, 1), follow_symlinks=False)
    moved = build(other)
    assert [moved.status(s) for s in CACHEABLE] == ["hit"] * 5
    assert moved.digest == cold.digest


def test_changing_the_file_of_the_last_copy_misses_only_there(build: Builder, ctx: Path) -> None:
    cold = build(ctx)
    (ctx / "app/main.py").write_text("print(2)\n")
    warm = build(ctx)
    assert [warm.status(s) for s in CACHEABLE] == ["hit", "hit", "hit", "hit", "miss"]
    assert warm.record(7)["reason"] == "source file app/main.py changed"
    assert "MISS: source file app/main.py changed" in warm.log
    assert warm.digest != cold.digest
    again = build(ctx)
    assert [again.status(s) for s in CACHEABLE] == ["hit"] * 5
    assert again.digest == warm.digest


def test_a_used_build_arg_misses_with_its_name_an_unused_one_hits(
    build: Builder, ctx: Path
) -> None:
    cold = build(ctx, build_args={"VERSION": "1"})
    unused = build(ctx, build_args={"VERSION": "1", "UNUSED": "x"})
    assert [unused.status(s) for s in CACHEABLE] == ["hit"] * 5
    assert unused.digest == cold.digest
    changed = build(ctx, build_args={"VERSION": "2"})
    assert changed.status(3) == "miss"
    assert changed.record(3)["reason"] == "build arg VERSION changed"
    # the later steps see another filesystem: they miss, saying so
    assert changed.status(4) == "miss"
    assert "an earlier step or the base image changed" in str(changed.record(4)["reason"])


def test_expired_entries_miss(build: Builder, ctx: Path) -> None:
    cold = build(ctx)
    time.sleep(2.2)
    late = build(ctx, ttl=timedelta(seconds=1))
    assert late.status(3) == "miss"
    assert str(late.record(3)["reason"]).startswith("expired")
    assert late.digest == cold.digest


def test_a_corrupted_cache_blob_is_a_warned_miss_and_the_image_is_right(
    dir_build: Builder, ctx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build = dir_build
    cold = build(ctx)
    digest = str(cold.record(6)["layer_digest"])
    blob = build.cache_dir / "layers" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    assert blob.is_file()
    blob.write_bytes(b"garbage" + blob.read_bytes()[7:])
    warm = build(ctx)
    assert warm.status(6) == "miss"
    assert "corrupted" in str(warm.record(6)["reason"])
    assert any(
        r.levelno == logging.WARNING and "corrupted" in r.getMessage() for r in caplog.records
    )
    assert [warm.status(s) for s in (3, 4, 5, 7)] == ["hit"] * 4
    assert warm.digest == cold.digest
    assert build(ctx).status(6) == "hit"


MULTI = """\
FROM {base} AS builder
RUN echo built > /artifact.txt
COPY lib/ /src/
RUN cat /src/a.txt >> /artifact.txt

FROM {base}
COPY --from=builder /artifact.txt /artifact.txt
COPY app/main.py /app/
"""


def test_a_fully_cached_builder_stage_is_never_extracted(
    build: Builder, tmp_path: Path, busybox_image: str
) -> None:
    ctx = make_context(tmp_path / "multi", MULTI.format(base=busybox_image), FILES)
    cold = build(ctx)
    assert "stage builder: extracting" in cold.log
    (ctx / "app/main.py").write_text("print(3)\n")
    warm = build(ctx)
    assert [warm.status(s, "builder") for s in (1, 2, 3)] == ["hit"] * 3
    assert warm.status(1, "1") == "hit"
    assert warm.status(2, "1") == "miss"
    assert "stage builder: extracting" not in warm.log
    assert "copying the rootfs" not in warm.log
    # the last COPY ran: the final stage was extracted, with the cached layer applied
    assert "stage 1: extracting" in warm.log
    # a change in the builder stage reaches COPY --from through the stage's key
    (ctx / "lib/a.txt").write_text("changed\n")
    third = build(ctx)
    assert third.status(1, "builder") == "hit"
    assert third.status(2, "builder") == "miss"
    assert third.status(1, "1") == "miss"
    assert third.record(1, "1")["reason"] == "source file --from=builder changed"
    # the final stage misses before its COPY --from while the builder stage fully hits:
    # the builder's root filesystem is materialised from its cached layers, on demand
    (ctx / "Dockerfile").write_text(
        MULTI.format(base=busybox_image).replace(
            "COPY --from=builder", "RUN echo final > /final.txt\nCOPY --from=builder"
        )
    )
    plain = build(ctx, enabled=False)
    fourth = build(ctx)
    assert [fourth.status(s, "builder") for s in (1, 2, 3)] == ["hit"] * 3
    assert [fourth.status(s, "1") for s in (1, 2, 3)] == ["miss"] * 3
    assert "stage builder: extracting" in fourth.log
    assert fourth.digest == plain.digest


LINK = """\
FROM {base}
RUN echo {marker} > /marker
COPY --link lib/ /opt/lib/
RUN cat /opt/lib/a.txt > /opt/out.txt
"""


def test_link_copy_hits_after_an_earlier_change(
    build: Builder, tmp_path: Path, busybox_image: str
) -> None:
    ctx = make_context(tmp_path / "link", LINK.format(base=busybox_image, marker="one"), FILES)
    build(ctx)
    (ctx / "Dockerfile").write_text(LINK.format(base=busybox_image, marker="two"))
    warm = build(ctx)
    assert [warm.status(s) for s in (1, 2, 3)] == ["miss", "hit", "miss"]


def test_cli_cache_report_and_run_layers_flag(
    tmp_path: Path, ctx: Path, registry_plain: RegistryServer
) -> None:
    report = tmp_path / "report.json"
    args = [
        f"--context={ctx}",
        f"--kaniko-dir={tmp_path / 'k'}",
        f"--destination={registry_plain.host}/cachewire/app:1",
        f"--insecure-registry={registry_plain.host}",
        "--cache=true",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--cache-report={report}",
        "--reproducible",
    ]
    assert cli_run(args, {}, prog="executor") == 0
    cold = json.loads(report.read_text())["steps"]
    assert [r["status"] for r in cold if r["step"] in CACHEABLE] == ["miss"] * 5
    assert cli_run([*args, "--cache-run-layers=false"], {}, prog="executor") == 0
    warm = {r["step"]: r for r in json.loads(report.read_text())["steps"]}
    assert [warm[s]["status"] for s in CACHEABLE] == [
        "uncacheable",
        "hit",
        "hit",
        "uncacheable",
        "hit",
    ]
    assert warm[3]["reason"] == "not cached: --cache-run-layers=false"
    assert warm[6]["key"] == next(r["key"] for r in cold if r["step"] == 6)
    assert set(warm[5]) == {
        "stage",
        "step",
        "instruction",
        "key",
        "status",
        "reason",
        "layer_digest",
        "size",
        "seconds",
    }
    assert warm[5]["instruction"] == "COPY lib/ /srv/lib/"
    assert isinstance(warm[5]["size"], int)


VARIED = """\
FROM {base}
ARG VERSION=1
RUN <<EOF
echo "heredoc $VERSION" > /h.txt
EOF
COPY --chmod=0751 --chown=12:34 lib/ /opt/lib/
COPY <<EOF /etc/motd
hello
EOF
WORKDIR rel/dir
RUN ["sh", "-c", "pwd > here.txt"]
"""


def test_hits_rebuild_the_same_history_as_the_steps(
    build: Builder, tmp_path: Path, busybox_image: str
) -> None:
    ctx = make_context(tmp_path / "varied", VARIED.format(base=busybox_image), FILES)
    cold = build(ctx, build_args={"VERSION": "7"})
    warm = build(ctx, build_args={"VERSION": "7"})
    assert [r["status"] for r in warm.records] == ["metadata"] + ["hit"] * 5
    assert warm.digest == cold.digest


def test_warmed_base_image_layers_are_read_from_the_cache_dir(
    dir_build: Builder, ctx: Path, client: RegistryClient, busybox_image: str
) -> None:
    from lamina.cache import BaseImageCache
    from lamina.oci import Platform, Reference

    image = client.pull(Reference.parse(busybox_image), platform=Platform.parse("linux/amd64"))
    BaseImageCache(dir_build.cache_dir, timedelta(hours=1)).store(image)
    plain = dir_build(ctx, enabled=False)
    cached = dir_build(ctx)
    assert f"using the warmed base image {image.digest()}" in cached.log
    assert "stage 0: extracting" in cached.log
    assert cached.digest == plain.digest


def test_no_push_permission_fails_before_any_step_runs_cold_and_fully_cached(
    tmp_path: Path,
    ctx: Path,
    registry_plain: RegistryServer,
    registry_htpasswd: RegistryServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The push-permission check runs beside the base-image pull and the cache lookups,
    but its failure still stops the build before a rootfs is made or a step runs, and a
    fully cached build does not get as far as its outputs."""
    no_creds = tmp_path / "no-creds"
    no_creds.mkdir()
    env = {"DOCKER_CONFIG": str(no_creds)}
    cache_repo = f"{registry_plain.host}/perm/cache"
    common = [
        f"--context={ctx}",
        f"--insecure-registry={registry_plain.host}",
        f"--insecure-registry={registry_htpasswd.host}",
        "--cache=true",
        f"--cache-repo={cache_repo}",
        "--reproducible",
    ]
    denied = [*common, f"--destination={registry_htpasswd.host}/perm/app:1"]
    capsys.readouterr()
    assert cli_run([*denied, f"--kaniko-dir={tmp_path / 'k1'}"], env, prog="executor") != 0
    err = capsys.readouterr().err
    assert "401" in err
    assert f"{registry_htpasswd.host}/perm/app:1" in err
    assert "extracting" not in err  # no rootfs was made
    assert not (tmp_path / "k1").exists() or not any((tmp_path / "k1").iterdir())
    # fill the cache with a build that may push (to the plain registry), then retry the
    # denied destination: every step hits, and it still fails before writing anything
    allowed = [*common, f"--destination={registry_plain.host}/perm/app:1"]
    assert cli_run([*allowed, f"--kaniko-dir={tmp_path / 'k2'}"], env, prog="executor") == 0
    capsys.readouterr()
    assert cli_run([*denied, f"--kaniko-dir={tmp_path / 'k3'}"], env, prog="executor") != 0
    err = capsys.readouterr().err
    assert "401" in err
    assert "pushed" not in err
    assert "built image" not in err


_WARM_PROBE = """
import json, sys
from lamina.cli.main import run
code = run(sys.argv[1:], {}, prog="executor")
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
#: what only a step that runs (or extracts, or checks out git) needs
_RUN_ONLY_MODULES = {
    "lamina.sandbox._runners",
    "lamina.sandbox._select",
    "lamina.builder._git",
    "lamina.context._git",
    "lamina.builder._mounts",
    "lamina.builder._inplace",
    "lamina.fs._extract",
    "lamina.fs._overlay",
    "lamina.fs._statindex",
    "lamina.fs._tarwriter",
}


def test_a_fully_cached_build_never_loads_the_runners_extraction_or_git(
    tmp_path: Path, ctx: Path, registry_plain: RegistryServer
) -> None:
    """The warm rebuild (a fresh process, as from the command line) runs and extracts
    nothing, so it does not import the code that would (start-up cost)."""
    if Path("/kaniko").is_dir():  # pragma: no cover - --isolation=auto would build in place
        pytest.skip("inside a kaniko-like container the in-place runner is prepared up front")
    report = tmp_path / "report.json"
    args = [
        f"--context={ctx}",
        f"--kaniko-dir={tmp_path / 'k'}",
        f"--destination={registry_plain.host}/cachewire/startup:1",
        f"--insecure-registry={registry_plain.host}",
        "--cache=true",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--cache-report={report}",
    ]
    assert cli_run(args, {}, prog="executor") == 0  # cold: every step runs
    src = Path(__file__).resolve().parents[2] / "src"
    proc = subprocess.run(
        [sys.executable, "-c", _WARM_PROBE, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(src)),
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["code"] == 0, proc.stderr
    warm = {r["step"]: r["status"] for r in json.loads(report.read_text())["steps"]}
    assert [warm[s] for s in CACHEABLE] == ["hit"] * 5
    assert set(out["modules"]) & _RUN_ONLY_MODULES == set()
