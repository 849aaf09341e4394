"""Parse a generated 5,000-line Dockerfile N times; print the median (fail if > 100 ms).

Usage: python bench/bench_parse.py [N]
"""

from __future__ import annotations

import statistics
import sys
import time

from lamina.dockerfile import parse_dockerfile

LIMIT_MS = 100.0

BLOCK = """\
# stage {i}
FROM --platform=$BUILDPLATFORM golang:1.22-alpine AS build{i}
ARG VERSION=1.{i}.0
ENV CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly" PATH=/go/bin:$PATH
WORKDIR /src
COPY --link go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \\
    --mount=type=cache,target=/root/.cache/go-build \\
    go mod download && \\
    go mod verify
COPY --chown=1000:1000 --chmod=0644 . .
RUN <<EOF
set -eux
go build -ldflags "-X main.version=${{VERSION}}" -o /out/app{i} ./cmd/app
EOF
LABEL org.opencontainers.image.version="$VERSION" stage="{i}"
EXPOSE 8080/tcp 9090/udp
HEALTHCHECK --interval=30s --timeout=3s CMD ["wget", "-q", "-O-", "http://localhost:8080/"]
USER 1000:1000
CMD ["/out/app{i}"]
"""


def make(lines: int = 5000) -> str:
    out: list[str] = ["# syntax=docker/dockerfile:1", "ARG BASE=alpine:3.20"]
    i = 0
    while len(out) < lines:
        out.extend(BLOCK.format(i=i).splitlines())
        i += 1
    out = out[:lines]
    while out[-1].startswith(("RUN", "set", "go ", "    ")):  # don't cut a heredoc/continuation
        out[-1] = "USER 1000"
    return "\n".join(out) + "\n"


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    text = make()
    assert text.count("\n") == 5000
    parse_dockerfile(text)  # warm-up (regex caches, imports)
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        df = parse_dockerfile(text)
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    med_wall, med_cpu = statistics.median(wall), statistics.median(cpu)
    print(
        f"parse_dockerfile: 5000 lines, {len(df.stages)} stages, "
        f"median {med_wall:.1f} ms wall, {med_cpu:.1f} ms CPU over {n} runs (limit {LIMIT_MS} ms)"
    )
    # the machine may be shared: judge on CPU time, which other processes don't inflate
    return 0 if med_cpu <= LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
