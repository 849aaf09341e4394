"""Whole builds: lamina vs ``buildah bud --isolation=chroot`` (overlay storage), same run.

    .venv/bin/python bench/bench_build.py              # as root; needs buildah, skopeo

Starts a private plain registry on loopback, pushes the Debian bookworm minbase test
image (debootstrap, cached in $LAMINA_TEST_CACHE), then builds, each ``--repeat`` times:

* ``apt``: ``FROM debian`` + ``RUN apt-get update && apt-get install -y python3``
  (the RUN fetches packages from the machine's Debian mirror over the host network);
* ``small``: ``FROM busybox`` + 10 RUN steps that each write one file;
* ``big-zero``: ``FROM busybox`` + a RUN writing a 1 GiB file of zeros (compresses well);
* ``big-random``: the same with 256 MiB from ``/dev/urandom`` (does not compress).

lamina writes an OCI layout (``--no-push``); buildah builds into a private storage root
(overlay driver) with ``--layers=false``. Prints wall time per run, the lamina/buildah
time ratio (target <= 1.0) and lamina's peak RSS (target < 200 MiB): the lamina
process's own peak (``VmHWM``, reported by a wrapper at exit), so the
RUN's processes and other children are not counted; ``wait4``'s figure, which includes
the largest reaped descendant, is printed beside it. ``--no-buildah`` times lamina only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.buildah import BuildahStore  # noqa: E402
from tests.support.images import (  # noqa: E402
    build_busybox_layout,
    build_debian_layout,
    push_layout,
)
from tests.support.registry import start_registry  # noqa: E402

CASES = {
    "apt": (
        "debian",
        "ARG REGISTRY\nFROM ${REGISTRY}/library/debian:bookworm-slim\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends python3 "
        "&& rm -rf /var/lib/apt/lists/*\n",
    ),
    "small": (
        "busybox",
        "ARG REGISTRY\nFROM ${REGISTRY}/library/busybox:latest\n"
        + "".join(f"RUN echo step {i} > /step-{i}.txt\n" for i in range(10)),
    ),
    "big-zero": (
        "busybox",
        "ARG REGISTRY\nFROM ${REGISTRY}/library/busybox:latest\n"
        "RUN dd if=/dev/zero of=/big bs=1M count=1024\n",
    ),
    "big-random": (
        "busybox",
        "ARG REGISTRY\nFROM ${REGISTRY}/library/busybox:latest\n"
        "RUN dd if=/dev/urandom of=/big bs=1M count=256\n",
    ),
}

#: runs the lamina CLI and reports its own peak RSS (KiB) on stderr as it exits: the
#: ``VmHWM`` of its address space, not ``ru_maxrss``, which also keeps the peak of the
#: parent's address space the child was forked (or vforked) from before its exec
LAMINA = (
    "import sys\n"
    "from lamina.cli.main import run\n"
    "code = run(sys.argv[1:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
    "kib = int(hwm[0].split()[1])\n"
    "sys.stderr.write(f'LAMINA_SELF_MAXRSS_KIB={kib}\\n')\n"
    "sys.exit(code)\n"
)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Wall seconds, ``wait4`` peak RSS (MiB, largest of the process and its reaped
    descendants) and the process's self-reported peak RSS (MiB; 0 if not reported)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:3]} failed:\n{err.decode(errors='replace')[-3000:]}")
    own = 0.0
    for line in err.decode(errors="replace").splitlines():
        if line.startswith("LAMINA_SELF_MAXRSS_KIB="):
            own = int(line.split("=", 1)[1]) / 1024
    return elapsed, usage.ru_maxrss / 1024, own


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--no-buildah", action="store_true", help="time lamina only")
    args = parser.parse_args()
    cases = args.case or sorted(CASES)
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, buildah chroot isolation)")
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-build-"))
    short = Path(tempfile.mkdtemp(prefix="lbb-"))  # buildah's runroot must be short
    running = start_registry("plain", work / "registry")
    try:
        host = running.server.host
        if any(CASES[c][0] == "busybox" for c in cases):
            push_layout(build_busybox_layout(work / "bb"), running.server, "library/busybox:latest")
        if "apt" in cases:
            push_layout(
                build_debian_layout(work / "deb"), running.server, "library/debian:bookworm-slim"
            )
        for name in cases:
            _, dockerfile = CASES[name]
            ctx = work / f"ctx-{name}"
            ctx.mkdir()
            (ctx / "Dockerfile").write_text(dockerfile)
            ratios: list[float] = []
            peak = own_peak = 0.0
            for run in range(args.repeat):
                out = work / f"out-{name}-{run}"
                lam_t, lam_rss, lam_own = timed(
                    [
                        sys.executable,
                        "-c",
                        LAMINA,
                        "build",
                        f"--context={ctx}",
                        f"--dockerfile={ctx / 'Dockerfile'}",
                        "--no-push",
                        f"--oci-layout-path={out}",
                        f"--insecure-registry={host}",
                        f"--build-arg=REGISTRY={host}",
                        "--destination=bench/x:1",
                        f"--kaniko-dir={work / 'kaniko'}",
                    ]
                )
                peak = max(peak, lam_rss)
                own_peak = max(own_peak, lam_own)
                shutil.rmtree(out, ignore_errors=True)
                if args.no_buildah:
                    print(
                        f"{name:10} run {run}: lamina {lam_t:6.2f}s, own peak RSS "
                        f"{lam_own:5.1f} MiB (with children: {lam_rss:5.1f} MiB)",
                        flush=True,
                    )
                    continue
                store = BuildahStore(work / f"buildah-{name}-{run}", short / f"{name}{run}")
                bah_t, _, _ = timed(
                    store.bud(
                        ctx,
                        tag=f"localhost/bench-{name}",
                        layers=False,
                        build_args={"REGISTRY": host},
                        dockerfile=ctx / "Dockerfile",
                    ),
                    env=store.env,
                )
                store.remove()
                ratios.append(lam_t / bah_t)
                print(
                    f"{name:10} run {run}: lamina {lam_t:6.2f}s (own peak RSS {lam_own:5.1f} "
                    f"MiB, with children {lam_rss:5.1f} MiB)  buildah {bah_t:6.2f}s  "
                    f"ratio {lam_t / bah_t:4.2f}",
                    flush=True,
                )
            ratio = ""
            if ratios:
                ratio = (
                    f"lamina/buildah wall time = {min(ratios):.2f} (best of {len(ratios)}; "
                    "target <= 1.0), "
                )
            print(
                f"{name}: {ratio}lamina own peak RSS {own_peak:.0f} MiB "
                f"(target < 200; with children {peak:.0f} MiB)",
                flush=True,
            )
    finally:
        running.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(short, ignore_errors=True)


if __name__ == "__main__":
    main()
