"""Layer extraction: one uncompressed layer tar applied to an empty root, per worker count.

    .venv/bin/python bench/bench_extract.py [--tar LAYER.tar] [--repeat 3] [--workers 1 4]

Without ``--tar`` the Debian bookworm minbase test layer is built first (debootstrap,
cached in $LAMINA_TEST_CACHE; needs root). Each run extracts into a fresh directory next
to the tar (same filesystem as a build would use when it lives there; ``--dir`` to choose)
after an ``os.sync()``; prints every run's seconds and the best per worker count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lamina.fs import extract_layer  # noqa: E402


def one_run(tar: Path, base: Path, workers: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="extract-", dir=base))
    try:
        os.sync()
        with open(tar, "rb") as stream:
            start = time.perf_counter()
            stats = extract_layer(root, stream, on_warning=lambda _w: None, workers=workers)
            took = time.perf_counter() - start
        print(f"  workers={workers}: {took:.3f} s ({stats.entries} entries, {stats.files} files)")
        return took
    finally:
        shutil.rmtree(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tar", type=Path)
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    tmp = None
    tar: Path | None = args.tar
    if tar is None:
        from tests.support.images import build_debian_layout

        tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
        build_debian_layout(tmp)
        tar = tmp / "debian-layer.tar"
    base = args.dir or tar.parent
    try:
        best: dict[int, float] = {}
        for _ in range(args.repeat):
            for workers in args.workers:  # in turns, so drift hits every count alike
                took = one_run(tar, base, workers)
                best[workers] = min(best.get(workers, took), took)
        for workers, took in best.items():
            print(f"best of {args.repeat}, workers={workers}: {took:.3f} s")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
