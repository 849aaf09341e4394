"""Push/pull speed and peak RSS of lamina's registry client vs ``skopeo copy``.

    .venv/bin/python bench/bench_registry.py                # ~200 MB image, 4 layers
    .venv/bin/python bench/bench_registry.py --layers 1 --layer-mb 1024   # memory check

Starts a private plain registry on loopback (tests/support/registry.py), writes
an OCI layout with incompressible layers (streamed: the generator itself uses
little memory), then times, in separate processes (peak RSS via wait4):

* push: ``skopeo copy oci:LAYOUT docker://REG/bench/skopeo`` vs lamina pushing
  the same layout to ``REG/bench/lamina``;
* pull: ``skopeo copy docker://... oci:DIR`` vs lamina ``pull`` +
  ``download_layers`` into a directory.

Prints one line per run and the lamina/skopeo speed ratio (>= 0.8 is the target).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

_MiB = 1024 * 1024


class _RandomReader:
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


class _HashingFile:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


class _LayerWriter:
    def __init__(self, compressed: _HashingFile) -> None:
        from isal import igzip

        self.diff = hashlib.sha256()
        self.gz: Any = igzip.IGzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0)  # type: ignore[no-untyped-call]

    def write(self, data: Any) -> int:
        self.diff.update(data)
        return int(self.gz.write(data))


def write_layout(layout: Path, layers: int, layer_mb: int) -> None:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descs, diff_ids = [], []
    for i in range(layers):
        tmp = blobs / f"tmp-{i}"
        with tmp.open("wb") as out:
            hashed = _HashingFile(out)
            writer = _LayerWriter(hashed)
            with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]
                info = tarfile.TarInfo(f"data-{i}.bin")
                info.size = layer_mb * _MiB
                tar.addfile(info, _RandomReader(info.size))
            writer.gz.close()
        digest = hashed.hash.hexdigest()
        tmp.rename(blobs / digest)
        descs.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": f"sha256:{digest}",
                "size": hashed.size,
            }
        )
        diff_ids.append(f"sha256:{writer.diff.hexdigest()}")

    def put(obj: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(obj).encode()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    config = put(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    )
    manifest = put(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": descs,
        }
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest,
                "annotations": {"org.opencontainers.image.ref.name": "bench"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))


# ---------------------------------------------------------------------- child modes


def _lamina_push(layout: str, dest: str) -> None:
    from lamina.oci import Reference
    from lamina.oci.oci_layout import OCILayout
    from lamina.registry import RegistryClient, RegistryOptions

    image = OCILayout.open(Path(layout)).image("bench")
    opts = RegistryOptions(insecure=True)
    with RegistryClient(opts, docker_config_dir=None) as client:
        client.push(image, [Reference.parse(dest)])


def _lamina_pull(ref: str, out: str) -> None:
    from lamina.oci import Platform, Reference
    from lamina.registry import RegistryClient, RegistryOptions

    opts = RegistryOptions(insecure_pull=True)
    with RegistryClient(opts, docker_config_dir=None) as client:
        image = client.pull(Reference.parse(ref), platform=Platform.parse("linux/amd64"))
        client.download_layers(image, Path(out))


def _measure(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a child process."""
    start = time.monotonic()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed with status {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        {"push": _lamina_push, "pull": _lamina_pull}[mode](*rest)
        return

    from tests.support.registry import start_registry

    me = [sys.executable, str(Path(__file__).resolve())]
    with tempfile.TemporaryDirectory(prefix="lamina-bench-") as tmpdir:
        tmp = Path(tmpdir)
        layout = tmp / "layout"
        t0 = time.monotonic()
        write_layout(layout, args.layers, args.layer_mb)
        size = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
        print(
            f"image: {args.layers} layers, {size / _MiB:.0f} MiB compressed "
            f"(generated in {time.monotonic() - t0:.1f}s)"
        )
        results: dict[str, list[tuple[float, float]]] = {}
        for i in range(args.repeat):
            # a fresh registry each round: skopeo's blob-info cache would otherwise
            # mount blobs it saw in an earlier round instead of uploading them
            registry = start_registry("plain", tmp / f"registry{i}")
            host = registry.server.host
            try:
                runs = {
                    "push skopeo": [
                        "skopeo",
                        "copy",
                        "--quiet",
                        "--dest-tls-verify=false",
                        f"oci:{layout}:bench",
                        f"docker://{host}/bench/skopeo{i}:1",
                    ],
                    "push lamina": [
                        *me,
                        "--child",
                        "push",
                        str(layout),
                        f"{host}/bench/lamina{i}:1",
                    ],
                    "pull skopeo": [
                        "skopeo",
                        "copy",
                        "--quiet",
                        "--src-tls-verify=false",
                        f"docker://{host}/bench/skopeo{i}:1",
                        f"oci:{tmp / f'pulled-s{i}'}:x",
                    ],
                    "pull lamina": [
                        *me,
                        "--child",
                        "pull",
                        f"{host}/bench/lamina{i}:1",
                        str(tmp / f"pulled-l{i}"),
                    ],
                }
                for name, argv in runs.items():
                    seconds, rss = _measure(argv)
                    results.setdefault(name, []).append((seconds, rss))
                    print(
                        f"{name:12s} run {i}: {seconds:6.2f}s  {size / _MiB / seconds:7.1f} MiB/s"
                        f"  peak RSS {rss:6.1f} MiB"
                    )
            finally:
                registry.stop()
        for op in ("push", "pull"):
            best_s = min(s for s, _ in results[f"{op} skopeo"])
            best_l = min(s for s, _ in results[f"{op} lamina"])
            rss = max(r for _, r in results[f"{op} lamina"])
            print(
                f"{op}: lamina speed = {best_s / best_l:.2f}x skopeo "
                f"(target >= 0.8), lamina peak RSS {rss:.0f} MiB (target < 150)"
            )


if __name__ == "__main__":
    main()
