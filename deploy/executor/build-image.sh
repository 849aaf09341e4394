#!/bin/bash
# build-image.sh - build a lamina executor image (kaniko's layout) with lamina itself.
#
#   build-image.sh --variant executor|debug|warmer [--tar FILE] [--tag NAME]
#                  [--destination REF]... [--work DIR] [-- LAMINA FLAGS]
#
#   executor  entrypoint /kaniko/executor          (default tag lamina-executor:<version>)
#   debug     the same plus busybox at /busybox, /busybox/sh, /bin/sh, /busybox on PATH
#                                                   (default tag lamina-executor:debug)
#   warmer    entrypoint /kaniko/warmer            (default tag lamina-executor:warmer)
#
# --tar writes a docker-archive (for `podman load`/`docker load`) named --tag; --destination
# pushes (repeatable). --work keeps the assembled context there and reuses it while the
# inputs (deploy/executor, src/lamina, pyproject.toml, the Python) are unchanged, so the
# three variants assemble once.
#
# Reproducible: the same commit gives the same digest. Every file gets the mtime
# SOURCE_DATE_EPOCH (default: the time of the last commit), bytecode has no timestamps, and
# lamina builds with --reproducible.
#
# The images are FROM scratch; everything lamina needs lives under /kaniko (see
# assemble.py for the layout), because with --isolation=none the build deletes the rest of
# / and unpacks the base image there. PYTHON (default: python3) is the Python 3.11 that runs
# lamina for the build; its base interpreter, standard library and the installed versions
# of lamina's pinned dependencies go into the image. Needs patchelf, strip, ldd, git (its
# client programs are copied) and busybox (Debian's busybox-static).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python3}
variant=""
tar_path=""
tag=""
destinations=()
work=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) variant=$2; shift 2 ;;
    --tar) tar_path=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --destination) destinations+=("$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$variant" in
  executor|debug|warmer) ;;
  "") echo "build-image.sh: give --variant executor|debug|warmer" >&2; exit 2 ;;
  *) echo "build-image.sh: unknown variant '$variant' (executor, debug or warmer)" >&2; exit 2 ;;
esac
if [ -z "$tar_path" ] && [ ${#destinations[@]} -eq 0 ]; then
  echo "build-image.sh: give --tar FILE and/or --destination REF" >&2
  exit 2
fi
for tool in patchelf strip ldd git busybox; do
  command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is missing" >&2; exit 1; }
done
version=$("$PYTHON" -c '
import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
if [ -z "$tag" ]; then
  case "$variant" in
    executor) tag=lamina-executor:$version ;;
    *) tag=lamina-executor:$variant ;;
  esac
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH

cleanup_work=""
if [ -z "$work" ]; then
  work=$(mktemp -d)
  cleanup_work=$work
fi
trap '[ -n "$cleanup_work" ] && rm -rf "$cleanup_work"' EXIT
mkdir -p "$work"
ctx=$work/context

# ------------------------------------------------------------- the context (once per inputs)
stamp=$(
  {
    "$PYTHON" -c 'import sys; print(sys.version, sys._base_executable)'
    echo "$SOURCE_DATE_EPOCH"
    cd "$repo" && find deploy/executor src/lamina pyproject.toml -type f -not -path '*/__pycache__/*' \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
)
if [ "$(cat "$work/context.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -f "$work/context.stamp"
  "$PYTHON" "$here/assemble.py" "$repo" "$ctx" "$SOURCE_DATE_EPOCH"
  echo "$stamp" >"$work/context.stamp"
fi

# ------------------------------------------------------------- the image, built by lamina
args=(--context "$ctx" --dockerfile "$ctx/Dockerfile" --target "$variant" --reproducible
  --kaniko-dir "$work/build-$variant"
  --label "org.opencontainers.image.title=lamina-executor"
  --label "org.opencontainers.image.version=$version")
if [ ${#destinations[@]} -eq 0 ]; then
  args+=(--no-push --destination "$tag")
fi
for d in "${destinations[@]}"; do args+=(--destination "$d"); done
[ -n "$tar_path" ] && args+=(--tar-path "$tar_path")
rm -rf "$work/build-$variant"
PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m lamina build "${args[@]}" "${extra[@]}"
