"""Snapshot cost: a 100,000-small-file rootfs, then 10 steps that each touch one file.

Run as root (the overlay mode mounts an overlay)::

    .venv/bin/python bench/bench_snapshot.py [--files 100000] [--steps 10] [--big-file-mb 0]

Prints per-snapshot seconds for the overlay (namespace) mode — read the upper
dir, write the layer tar, merge the upper dir — and for the ``none`` mode —
re-scan the stat index with kaniko's ignore list, diff, write the layer tar —
then the same with the inotify watch the builder keeps between steps
(``TreeWatch``), and the peak RSS. The ``none`` figures need no container: the
builder's in-place path differs from them only in the root (``/``) it scans.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lamina.fs import (
    StatIndex,
    TreeWatch,
    apply_upper,
    changes_from_upper,
    default_ignore_list,
    diff,
    read_mountinfo,
    write_layer,
)


def make_rootfs(root: Path, files: int) -> None:
    per_dir = 100
    for i in range(files // per_dir):
        d = root / "usr" / f"d{i // 100:03d}" / f"s{i % 100:02d}"
        d.mkdir(parents=True)
        for j in range(per_dir):
            with open(d / f"f{j:03d}", "wb") as f:
                f.write(b"small file %d %d\n" % (i, j))


def write_big(path: Path, mb: int) -> None:
    block = b"\xab" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(block)


def step_target(root_or_merged: Path, step: int) -> Path:
    return root_or_merged / "usr" / "d000" / f"s{step % 100:02d}" / "f000"


def overlay_mode(base: Path, root: Path, steps: int, big_mb: int) -> list[float]:
    upper, work, merged = base / "upper", base / "work", base / "merged"
    for p in (upper, work, merged):
        p.mkdir()
    times = []
    for step in range(steps):
        opts = f"lowerdir={root},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
        try:
            with open(step_target(merged, step), "ab") as f:
                f.write(b"touched\n")
            if big_mb and step == 0:
                write_big(merged / "big.bin", big_mb)
        finally:
            subprocess.run(["umount", str(merged)], check=True)
        t0 = time.perf_counter()
        changes = changes_from_upper(upper)
        with open(base / f"overlay-layer-{step}.tar", "wb") as out:
            write_layer(changes, upper, out)
        apply_upper(upper, root)
        times.append(time.perf_counter() - t0)
        shutil.rmtree(work)
        work.mkdir()
    return times


def none_mode(base: Path, root: Path, steps: int) -> tuple[float, list[float]]:
    """The builder's in-place path: scans with kaniko's ignore list (this machine's mounts,
    ``/kaniko``, ``/var/run``), which here skips a 10,000-file ``kaniko`` directory."""
    ignore = default_ignore_list(mountinfo=read_mountinfo(), kaniko_dir="/kaniko")
    kaniko = root / "kaniko" / "python"
    kaniko.mkdir(parents=True)
    for i in range(10_000):
        (kaniko / f"m{i:05d}.py").write_bytes(b"pass\n")
    t0 = time.perf_counter()
    index = StatIndex.scan(root, ignore)
    first = time.perf_counter() - t0
    assert not any(p.startswith("kaniko") for p in index.paths())
    times = []
    for step in range(steps):
        with open(step_target(root, steps + step), "ab") as f:
            f.write(b"touched\n")
        t0 = time.perf_counter()
        new = StatIndex.scan(root, ignore)
        changes = diff(index, new, mode="full")
        with open(base / f"none-layer-{step}.tar", "wb") as out:
            write_layer(changes, root, out)
        times.append(time.perf_counter() - t0)
        index = new
    return first, times


def watched_mode(base: Path, root: Path, steps: int) -> tuple[float, list[float]]:
    """The builder's in-place path with inotify: one indexing scan, then each step's
    snapshot (``mark`` before it, ``changes`` after it, the layer tar) costs what it
    changed. Run after :func:`none_mode` (the same root and ignore list)."""
    ignore = default_ignore_list(mountinfo=read_mountinfo(), kaniko_dir="/kaniko")
    with TreeWatch(root, ignore) as watch:
        t0 = time.perf_counter()
        watch.mark()
        first = time.perf_counter() - t0
        assert watch.watching, "inotify is not available here"
        times = []
        for step in range(steps):
            t0 = time.perf_counter()
            watch.mark()
            mark = time.perf_counter() - t0
            with open(step_target(root, 2 * steps + step), "ab") as f:
                f.write(b"touched\n")
            t0 = time.perf_counter()
            changes = watch.changes(mode="full")
            with open(base / f"watched-layer-{step}.tar", "wb") as out:
                write_layer(changes, root, out)
            times.append(mark + time.perf_counter() - t0)
    return first, times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--big-file-mb", type=int, default=0, help="also write a file this big")
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp dir)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lamina-bench-", dir=args.dir))
    try:
        root = base / "rootfs"
        root.mkdir()
        t0 = time.perf_counter()
        make_rootfs(root, args.files)
        print(f"rootfs: {args.files} files in {time.perf_counter() - t0:.1f} s")
        if os.geteuid() == 0:
            ov = overlay_mode(base, root, args.steps, args.big_file_mb)
            print("overlay mode, s per snapshot: " + " ".join(f"{t:.3f}" for t in ov))
            print(f"overlay mode: max {max(ov):.3f} s, mean {sum(ov) / len(ov):.3f} s")
        else:
            print("overlay mode skipped: needs root to mount an overlay")
        first, nm = none_mode(base, root, args.steps)
        print(f"none mode: initial scan {first:.3f} s")
        print("none mode, s per snapshot: " + " ".join(f"{t:.3f}" for t in nm))
        print(f"none mode: max {max(nm):.3f} s, mean {sum(nm) / len(nm):.3f} s")
        first, wm = watched_mode(base, root, args.steps)
        print(f"none mode with inotify: initial scan and watches {first:.3f} s")
        print("none mode with inotify, s per snapshot: " + " ".join(f"{t:.4f}" for t in wm))
        print(f"none mode with inotify: max {max(wm):.4f} s, mean {sum(wm) / len(wm):.4f} s")
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS: {rss_mb:.0f} MB")
    finally:
        shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
