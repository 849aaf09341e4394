"""RUN --mount=type=cache: a cold build, then a warm one reusing the apt cache mounts.

    .venv/bin/python bench/bench_mounts.py             # as root; needs skopeo

Starts a private plain registry on loopback, pushes the Debian bookworm minbase test
image (debootstrap, cached in $LAMINA_TEST_CACHE), then builds the same Dockerfile
twice with lamina, sharing one ``--cache-mount-dir``:

    RUN rm -f /etc/apt/apt.conf.d/docker-clean   (as BuildKit's documentation shows)
    RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
        --mount=type=cache,target=/var/lib/apt,sharing=locked \\
        apt-get update && apt-get install -y --no-install-recommends python3

An earlier step writes the build argument ``STAMP``, which differs between the two
builds, so the RUN really runs again (lamina has no layer cache yet, but the script
does not count on that). The packages come from the machine's Debian mirror over the
host network. Prints the cold and warm wall times and the cold/warm ratio (> 1 means
the cache mounts made the second build faster); ``--repeat`` repeats the pair with a
fresh cache directory each time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import build_debian_layout, push_layout  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

DOCKERFILE = """\
ARG REGISTRY
FROM ${REGISTRY}/library/debian:bookworm-slim
ARG STAMP
RUN echo "$STAMP" > /stamp
RUN rm -f /etc/apt/apt.conf.d/docker-clean
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
    --mount=type=cache,target=/var/lib/apt,sharing=locked \\
    apt-get update && apt-get install -y --no-install-recommends python3
"""


def build(ctx: Path, work: Path, host: str, cache_dir: Path, stamp: str) -> float:
    """Wall seconds of one lamina build (OCI layout output, no push)."""
    out = work / f"out-{stamp}"
    argv = [
        sys.executable,
        "-m",
        "lamina",
        "build",
        f"--context={ctx}",
        f"--dockerfile={ctx / 'Dockerfile'}",
        "--no-push",
        f"--oci-layout-path={out}",
        f"--insecure-registry={host}",
        f"--build-arg=REGISTRY={host}",
        f"--build-arg=STAMP={stamp}",
        "--destination=bench/mounts:1",
        f"--kaniko-dir={work / 'kaniko'}",
        f"--cache-mount-dir={cache_dir}",
    ]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"lamina build failed:\n{proc.stderr.decode(errors='replace')[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return elapsed


def du_mib(path: Path) -> float:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces)")
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-mounts-"))
    running = start_registry("plain", work / "registry")
    try:
        host = running.server.host
        push_layout(
            build_debian_layout(work / "deb"), running.server, "library/debian:bookworm-slim"
        )
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        ratios: list[float] = []
        for run in range(args.repeat):
            cache_dir = work / f"cache-mounts-{run}"
            cold = build(ctx, work, host, cache_dir, f"cold-{run}")
            size = du_mib(cache_dir)
            warm = build(ctx, work, host, cache_dir, f"warm-{run}")
            ratios.append(cold / warm)
            print(
                f"run {run}: cold {cold:6.2f}s  warm {warm:6.2f}s  cold/warm {cold / warm:4.2f}"
                f"  (cache mounts hold {size:.0f} MiB after the cold build)",
                flush=True,
            )
        print(
            f"cache mounts: cold/warm wall time = {statistics.median(ratios):.2f} "
            f"(median of {len(ratios)}; > 1: the warm build is faster)"
        )
    finally:
        running.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
