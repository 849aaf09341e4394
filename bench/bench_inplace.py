"""The executor image in an unprivileged podman container vs lamina on the host, same run.

    .venv/bin/python bench/bench_inplace.py          # as root; needs podman, patchelf, skopeo

Starts a private plain registry on loopback, pushes the Debian bookworm minbase test
image (debootstrap, cached in $LAMINA_TEST_CACHE), builds the executor image with
``deploy/executor/build-image.sh`` (or takes ``--image-tar``) into a private podman
storage (overlay driver), then builds each case ``--repeat`` times:

* ``apt``: ``FROM debian`` + ``RUN apt-get update && apt-get install -y python3`` + a
  ``COPY`` (the RUN fetches packages from the machine's Debian mirror);
* ``many``: ``FROM debian`` + a RUN writing ``--files`` small files (100,000) + ten
  RUNs that each append to one of them.

Each build runs (1) in the container: ``podman run --rm --network=host`` with podman's
default capabilities (no ``--privileged``), the executor's own flags only (``auto``
picks the isolation: in-place there), and (2) on the host: lamina in namespace mode.
Reported: wall time, the lamina process's peak RSS (``VmHWM``, reported by a wrapper
at exit) and, in the container, the per-step snapshot time of the RUN steps (the
builder's debug line ``snapshot: ...``). ``--src DIR`` mounts another lamina package
over the image's copy (``--src /work/main/src/lamina`` measures the code before
inotify snapshots; it prints no snapshot lines).
"""

from __future__ import annotations

import argparse
import os
import re
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

TAG = "localhost/lamina-executor:bench"
SITE = "/kaniko/python/lib/python3.11/site-packages/lamina"

#: the lamina CLI, in process, reporting its own peak RSS (KiB) on stderr at exit: the
#: ``VmHWM`` of its address space (the RUN's processes are not counted)
WRAPPER = (
    "import sys\n"
    "from lamina.cli.main import run\n"
    "code = run(sys.argv[2:], prog=sys.argv[1])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
    "sys.stderr.write(f'LAMINA_SELF_MAXRSS_KIB={int(hwm[0].split()[1])}\\n')\n"
    "sys.exit(code)\n"
)

_SNAPSHOT = re.compile(r"snapshot: (\d+) changed paths, ([\d.]+) s before the step \+ ([\d.]+) s")


def many_files_script(files: int) -> str:
    """A RUN writing ``files`` small files, 100 a directory, in /data (perl: in the base)."""
    perl = (
        'for my $i (0..LAST) { my $d = sprintf("/data/d%03d/s%02d", $i / 100, $i % 100); '
        'system("mkdir", "-p", $d) == 0 or die; '
        'for my $j (0..99) { open(my $f, ">", "$d/f$j") or die; print $f "small $i $j\\n"; '
        "close($f) } }"
    )
    return "RUN perl -e '" + perl.replace("LAST", str(files // 100 - 1)) + "'\n"


def cases(files: int) -> dict[str, str]:
    return {
        "apt": (
            "ARG REGISTRY\nFROM ${REGISTRY}/library/debian:bookworm-slim\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends python3 "
            "&& rm -rf /var/lib/apt/lists/*\n"
            "COPY app.py /app/app.py\n"
        ),
        "many": (
            "ARG REGISTRY\nFROM ${REGISTRY}/library/debian:bookworm-slim\n"
            + many_files_script(files)
            + "".join(f"RUN echo step {i} >> /data/d000/s{i:02d}/f0\n" for i in range(10))
        ),
    }


def run_timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, the lamina process's peak RSS (MiB) and its stderr."""
    start = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.monotonic() - start
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed:\n{err[-4000:]}")
    kib = [int(m) for m in re.findall(r"LAMINA_SELF_MAXRSS_KIB=(\d+)", err)]
    return elapsed, (kib[-1] / 1024 if kib else 0.0), err


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--case", choices=("apt", "many"), action="append")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--image-tar", type=Path, help="an executor image tar (default: build)")
    parser.add_argument("--src", type=Path, help="a lamina package mounted over the image's")
    parser.add_argument("--no-host", action="store_true", help="the container builds only")
    parser.add_argument("--logs", type=Path, help="keep each container build's log here")
    parser.add_argument(
        "--podman-arg",
        action="append",
        default=[],
        help="an extra podman run flag, e.g. --podman-arg=--cap-drop=ALL (repeatable)",
    )
    parser.add_argument(
        "--isolation", help="pass --isolation to the container's build (default: auto's pick)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (podman storage, namespace mode on the host)")
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-inplace-"))
    runroot = Path(tempfile.mkdtemp(prefix="lbi-"))  # podman wants a short runroot
    podman = ["podman", "--root", str(work / "storage"), "--runroot", str(runroot)]
    podman += ["--storage-driver", "overlay"]
    if shutil.which("runc"):
        podman += ["--runtime", "runc"]
    running = start_registry("plain", work / "registry")
    try:
        host = running.server.host
        push_layout(
            build_debian_layout(work / "deb"), running.server, "library/debian:bookworm-slim"
        )
        tar = args.image_tar
        if tar is None:
            tar = work / "executor.tar"
            subprocess.run(
                [
                    str(ROOT / "deploy/executor/build-image.sh"),
                    "--variant",
                    "executor",
                    "--tar",
                    str(tar),
                    "--tag",
                    TAG,
                ],
                env={**os.environ, "PYTHON": sys.executable},
                check=True,
                stdout=subprocess.DEVNULL,
            )
        subprocess.run(
            [*podman, "load", "-q", "-i", str(tar)], check=True, stdout=subprocess.DEVNULL
        )
        image = subprocess.run(
            [*podman, "images", "-q"], check=True, capture_output=True, text=True
        ).stdout.split()[0]
        mount = ["-v", f"{args.src.resolve()}:{SITE}:ro"] if args.src else []
        all_cases = cases(args.files)
        for name in args.case or ["apt", "many"]:
            ctx = work / f"ctx-{name}"
            ctx.mkdir()
            (ctx / "Dockerfile").write_text(all_cases[name])
            (ctx / "app.py").write_text("print('hello')\n")
            flags = [
                "--dockerfile=Dockerfile",
                "--no-push",
                f"--insecure-registry={host}",
                f"--build-arg=REGISTRY={host}",
                "--destination=bench/x:1",
                "--verbosity=debug",
                "--log-timestamp",
            ]
            for rep in range(args.repeat):
                c_t, c_rss, err = run_timed(
                    [
                        *podman,
                        "run",
                        "--rm",
                        "--network=host",
                        # lowering limits is always allowed; podman's defaults would raise them
                        "--ulimit=nofile=4096:4096",
                        "--ulimit=nproc=4096:4096",
                        "-v",
                        f"{ctx}:/workspace",
                        *mount,
                        *args.podman_arg,
                        "--entrypoint",
                        "/kaniko/python/bin/python3.11",
                        image,
                        "-I",
                        "-c",
                        WRAPPER,
                        "executor",
                        "--context=/workspace",
                        *flags,
                        *([f"--isolation={args.isolation}"] if args.isolation else []),
                    ]
                )
                if args.logs:
                    args.logs.mkdir(parents=True, exist_ok=True)
                    (args.logs / f"{name}-{rep}.log").write_text(err)
                picked = re.search(r"isolation: (\w+)", err)
                mode = args.isolation or (picked.group(1) if picked else "?")
                snaps = [(int(n), float(b), float(a)) for n, b, a in _SNAPSHOT.findall(err)]
                line = (
                    f"{name:5} run {rep}: container ({mode}) "
                    f"{c_t:7.2f} s, peak RSS {c_rss:5.0f} MiB"
                )
                if not args.no_host:
                    kaniko = work / "kaniko"
                    h_t, h_rss, _ = run_timed(
                        [
                            sys.executable,
                            "-c",
                            WRAPPER,
                            "lamina",
                            "build",
                            f"--context={ctx}",
                            *(
                                f
                                for f in flags
                                if not f.startswith(("--verbosity", "--log-timestamp"))
                            ),
                            f"--dockerfile={ctx / 'Dockerfile'}",
                            "--isolation=namespace",
                            f"--kaniko-dir={kaniko}",
                        ]
                    )
                    shutil.rmtree(kaniko, ignore_errors=True)
                    line += (
                        f" | host (namespace) {h_t:7.2f} s, peak RSS {h_rss:5.0f} MiB"
                        f" | container/host time {c_t / h_t:.2f}"
                    )
                print(line, flush=True)
                if snaps:
                    per_step = [b + a for _, b, a in snaps]
                    print(
                        "      snapshot s per RUN (before+after): "
                        + " ".join(f"{t:.4f}" for t in per_step)
                    )
                    small = per_step[-10:] if name == "many" else per_step
                    print(
                        f"      {'the ten one-file RUNs' if name == 'many' else 'RUN'}: "
                        f"max {max(small):.4f} s, median {statistics.median(small):.4f} s; "
                        f"{'inotify' if '(inotify)' in err else 'full scans'}",
                        flush=True,
                    )
    finally:
        running.stop()
        subprocess.run([*podman, "rmi", "-a", "-f"], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)


if __name__ == "__main__":
    main()
