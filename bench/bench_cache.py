"""Layer cache: cold vs warm (registry cache) lamina builds vs ``buildah bud --layers``.

    .venv/bin/python bench/bench_cache.py              # as root; needs buildah, skopeo

Starts a private plain registry on loopback, pushes the Debian bookworm minbase test image
(debootstrap, cached in $LAMINA_TEST_CACHE) and builds a 10-step Dockerfile (apt-get
install python3 from the machine's Debian mirror, COPY of a small app, a few RUNs), all in
the same run:

1. lamina cold, ``--cache`` with the cache repository on the registry (empty);
2. lamina warm: the same context again (new work directory, so only the registry cache
   helps), written to an OCI layout and pushed, each seven times, in turns with buildah's
   warm rebuild (best and median of each);
3. lamina after changing one source file used only by the last COPY (``--cache-report``
   shows which steps hit);
4. buildah ``bud --layers`` cold (fills its local layer cache), warm rebuild (in turns
   with lamina's, see 2.), and the same one-file change.

Both tools write an image: lamina an OCI layout (``--no-push``, so every blob, base
layers included, is fetched and written) and, as CI jobs do, a push to the registry that
holds the cache (blobs are mounted or already there); buildah its local storage.

``LAMINA_BENCH_PYTHON`` names the interpreter that runs lamina (default: this one); use a
runtime-only environment (``pip install .``), since a development one may hold optional
packages that slow down every start (httpx imports its CLI helpers when click is present).
lamina runs with a bytecode cache (``PYTHONPYCACHEPREFIX`` in the work directory, filled
by the cold build), as an installed package does: without one every start compiles ~120
modules (about 0.5 s here).

Prints wall times and the ratios the issue sets: warm/cold <= 0.15 and
lamina warm / buildah warm <= 1.0.
"""

from __future__ import annotations

import json
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

from tests.support.buildah import BuildahStore  # noqa: E402
from tests.support.images import build_debian_layout, push_layout  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

DOCKERFILE = """\
ARG REGISTRY
FROM ${REGISTRY}/library/debian:bookworm-slim
ENV APP_HOME=/srv/app
RUN apt-get update && apt-get install -y --no-install-recommends python3 \\
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 app
WORKDIR /srv/app
COPY requirements.txt ./
RUN python3 -c "print(open('requirements.txt').read().upper())" > deps.txt
COPY lib/ ./lib/
RUN python3 -m compileall -q lib
RUN echo built > BUILD && chown -R app:app /srv/app
COPY app/main.py ./app/
CMD ["python3", "app/main.py"]
"""
#: warm rebuilds per variant (taken in turns)
ROUNDS = 7
FILES = {
    "requirements.txt": "requests==2.31\n",
    "lib/__init__.py": "",
    "lib/util.py": "def greet(n):\n    return f'hello {n}'\n",
    "app/main.py": "from lib.util import greet\nprint(greet('world'))\n",
}


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed:\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return elapsed


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, buildah chroot isolation)")
    work = Path(tempfile.mkdtemp(prefix="lamina-bench-cache-"))
    short = Path(tempfile.mkdtemp(prefix="lbc-"))  # buildah's runroot must be short
    running = start_registry("plain", work / "registry")
    try:
        host = running.server.host
        push_layout(
            build_debian_layout(work / "deb"), running.server, "library/debian:bookworm-slim"
        )
        ctx = work / "ctx"
        for name, text in {"Dockerfile": DOCKERFILE, **FILES}.items():
            p = ctx / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        n = iter(range(100))

        # an installed lamina runs from bytecode: let it cache some (the cold build
        # writes it), even where the environment says PYTHONDONTWRITEBYTECODE
        lamina_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        lamina_env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")

        def lamina(report: Path, *, push: bool = False) -> float:
            i = next(n)
            output = (
                [f"--destination={host}/bench/app:warm"]
                if push
                else ["--no-push", f"--oci-layout-path={work / f'out-{i}'}"]
            )
            return timed(
                [
                    os.environ.get("LAMINA_BENCH_PYTHON", sys.executable),
                    "-m",
                    "lamina",
                    "build",
                    f"--context={ctx}",
                    *output,
                    f"--insecure-registry={host}",
                    f"--build-arg=REGISTRY={host}",
                    f"--kaniko-dir={work / f'kaniko-{i}'}",
                    "--cache=true",
                    f"--cache-repo={host}/bench/cache",
                    f"--cache-report={report}",
                    "--reproducible",
                ],
                env=lamina_env,
            )

        store = BuildahStore(work / "buildah", short / "rr")

        def buildah() -> float:
            return timed(
                store.bud(
                    ctx, tag="localhost/bench-cache", layers=True, build_args={"REGISTRY": host}
                ),
                env=store.env,
            )

        reports = [work / f"report-{i}.json" for i in range(3)]
        cold = lamina(reports[0])
        b_cold = buildah()
        lamina(reports[1], push=True)  # the first push copies the base layers over
        # warm rebuilds are short and the machine is shared: the three variants take
        # turns, ROUNDS times, so a busy moment hits all of them alike
        warm_runs: list[float] = []
        push_runs: list[float] = []
        buildah_runs: list[float] = []
        for _ in range(ROUNDS):
            warm_runs.append(lamina(reports[1]))
            push_runs.append(lamina(reports[1], push=True))
            buildah_runs.append(buildah())
        warm, warm_push, b_warm = min(warm_runs), min(push_runs), min(buildah_runs)
        med = statistics.median
        (ctx / "app/main.py").write_text("from lib.util import greet\nprint(greet('moon'))\n")
        changed = lamina(reports[2])
        b_changed = buildah()
        steps = json.loads(reports[2].read_text())["steps"]
        cached = [s for s in steps if s["status"] in ("hit", "miss")]
        earlier_hit = all(s["status"] == "hit" for s in cached[:-1])
        last = cached[-1]
        warm_hits = sum(
            1 for s in json.loads(reports[1].read_text())["steps"] if s["status"] == "hit"
        )
        print(f"{ROUNDS} rounds of warm rebuilds, best and median:")
        print(f"lamina cold            {cold:7.2f}s")
        print(
            f"lamina warm            {warm:7.2f}s  median {med(warm_runs):5.2f}s"
            f"   ({warm_hits} of {len(cached)} steps hit; OCI layout output)"
        )
        print(
            f"lamina warm, pushed    {warm_push:7.2f}s  median {med(push_runs):5.2f}s"
            "   (--destination on the cache's registry)"
        )
        print(f"lamina one file changed {changed:6.2f}s")
        print(f"buildah --layers cold  {b_cold:7.2f}s")
        print(f"buildah --layers warm  {b_warm:7.2f}s  median {med(buildah_runs):5.2f}s")
        print(f"buildah one file changed {b_changed:5.2f}s")
        print(f"warm / cold            {warm / cold:7.3f}   (target <= 0.15)")
        print(
            f"lamina warm / buildah warm {warm / b_warm:5.2f}  "
            f"(medians {med(warm_runs) / med(buildah_runs):4.2f}; target <= 1.0)"
        )
        print(
            f"lamina warm pushed / buildah warm {warm_push / b_warm:5.2f}  "
            f"(medians {med(push_runs) / med(buildah_runs):4.2f})"
        )
        print(
            f"one file changed: every earlier cacheable step hit: {earlier_hit}; "
            f"last step {last['status']}: {last['reason']}"
        )
    finally:
        BuildahStore(work / "buildah", short / "rr").remove()
        running.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(short, ignore_errors=True)


if __name__ == "__main__":
    main()
