#!/bin/bash
# build-image.sh - assemble the lamina executor image (kaniko's layout) and build it with lamina.
#
#   build-image.sh [--tar PATH [--tag NAME]] [--destination REF]... [--work DIR] [-- LAMINA FLAGS]
#
# --tar writes a docker-archive (for `podman load`/`docker load`), named --tag (default
# lamina-executor:latest); --destination pushes. --work keeps the assembled tree there.
#
# The image is FROM scratch; everything lamina needs lives under /kaniko, because with
# --isolation=none the build deletes the rest of / and unpacks the base image there:
#   /kaniko/executor, /kaniko/warmer   Python scripts with a kernel-handled shebang (no /bin/sh)
#   /kaniko/python/bin/python3.11      this machine's CPython, patched (patchelf) to load its
#                                      shared libraries and dynamic loader from /kaniko/python/lib
#   /kaniko/python/lib/python3.11      its standard library; lamina and its pinned dependencies
#                                      in site-packages
#   /kaniko/.docker/                   DOCKER_CONFIG (mount config.json here)
#   /kaniko/ssl/certs/                 SSL_CERT_DIR (this machine's CA bundle)
#   /workspace                         the working directory (mount the build context here)
#
# PYTHON (default: python3) is the Python 3.11 that runs lamina for the build and whose base
# interpreter is copied; it needs lamina's dependencies (the dev venv has them). Needs patchelf,
# ldd and pip (the dependencies are installed with pip from the pins in pyproject.toml).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python3}
tar_path=""
tag=lamina-executor:latest
destinations=()
work=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tar) tar_path=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --destination) destinations+=("$2"); shift 2 ;;
    --work) work=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$tar_path" ] && [ ${#destinations[@]} -eq 0 ]; then
  echo "build-image.sh: give --tar PATH and/or --destination REF" >&2
  exit 2
fi
command -v patchelf >/dev/null || { echo "build-image.sh: patchelf is missing (apt-get install patchelf)" >&2; exit 1; }

cleanup_work=""
if [ -z "$work" ]; then
  work=$(mktemp -d)
  cleanup_work=$work
fi
trap '[ -n "$cleanup_work" ] && rm -rf "$cleanup_work"' EXIT
ctx=$work/context
rm -rf "$ctx"
mkdir -p "$ctx/kaniko/python/bin" "$ctx/kaniko/python/lib" "$ctx/kaniko/.docker" "$ctx/kaniko/ssl/certs"
K=$ctx/kaniko

# ------------------------------------------------------------- the interpreter
read -r base_exe stdlib version < <("$PYTHON" -c '
import sys, sysconfig
print(sys._base_executable, sysconfig.get_path("stdlib"), "%d.%d" % sys.version_info[:2])')
[ "$version" = "3.11" ] || { echo "build-image.sh: $PYTHON is Python $version, need 3.11" >&2; exit 1; }
PY=$K/python/bin/python3.11
LIB=$K/python/lib
cp -L "$base_exe" "$PY"
# the standard library, without tests, GUI toolkits and third-party packages
tar -C "$stdlib" -cf - \
  --exclude=./site-packages --exclude=./dist-packages --exclude=./test --exclude=./idlelib \
  --exclude=./tkinter --exclude=./turtledemo --exclude=./ensurepip --exclude=./lib2to3 \
  --exclude='./config-*' --exclude='./lib-dynload/_tkinter*' . \
  | tar -C "$LIB" --one-top-level=python3.11 -xf -
mkdir -p "$LIB/python3.11/site-packages"

# ------------------------------------------------------------- lamina and its pins
mapfile -t pins < <("$PYTHON" -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))' "$repo/pyproject.toml")
"$PYTHON" -m pip install --quiet --no-color --disable-pip-version-check --no-warn-script-location \
  --target "$LIB/python3.11/site-packages" "${pins[@]}"
rm -rf "$LIB/python3.11/site-packages/bin"
cp -a "$repo/src/lamina" "$LIB/python3.11/site-packages/lamina"
find "$LIB/python3.11/site-packages/lamina" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m compileall -q "$LIB/python3.11/site-packages/lamina" >/dev/null
# package metadata, so that `executor version` reports the version
"$PYTHON" - "$repo/pyproject.toml" "$LIB/python3.11/site-packages" <<'EOF'
import pathlib, sys, tomllib
project = tomllib.loads(pathlib.Path(sys.argv[1]).read_text())["project"]
info = pathlib.Path(sys.argv[2]) / f"lamina-{project['version']}.dist-info"
info.mkdir()
(info / "METADATA").write_text(
    f"Metadata-Version: 2.1\nName: lamina\nVersion: {project['version']}\n"
)
(info / "INSTALLER").write_text("deploy/executor/build-image.sh\n")
EOF

# every shared library the interpreter and all extension modules load, and the loader
mapfile -t elves < <(find "$PY" "$LIB/python3.11" -name '*.so' -o -name '*.so.*' -o -path "$PY")
loader=""
for elf in "${elves[@]}"; do
  while read -r line; do
    case "$line" in
      *"=> not found"*) echo "build-image.sh: $elf: $line" >&2; exit 1 ;;
      *"=>"*/*) lib=$(awk '{print $3}' <<<"$line") ;;
      /*) lib=$(awk '{print $1}' <<<"$line"); loader=$lib ;;
      *) continue ;;
    esac
    case "$lib" in "$ctx"/*) continue ;; esac  # shipped with a wheel (found by its rpath)
    [ -e "$LIB/$(basename "$lib")" ] || cp -L "$lib" "$LIB/$(basename "$lib")"
  done < <(ldd "$elf")
done
[ -n "$loader" ] || { echo "build-image.sh: no dynamic loader found for $PY" >&2; exit 1; }
chmod 0755 "$LIB"/*.so* 2>/dev/null || true
# DT_RPATH (not RUNPATH) on the executable also serves the extension modules pip installed
patchelf --set-interpreter "/kaniko/python/lib/$(basename "$loader")" \
  --force-rpath --set-rpath /kaniko/python/lib "$PY"
for elf in "$LIB"/*.so* "$LIB"/python3.11/lib-dynload/*.so; do
  [ "$(basename "$elf")" = "$(basename "$loader")" ] && continue
  patchelf --force-rpath --set-rpath /kaniko/python/lib "$elf"
done

for tool in executor warmer; do
  cat >"$K/$tool" <<EOF
#!/kaniko/python/bin/python3.11 -I
"""kaniko's /kaniko/$tool: lamina in the executor image."""
from lamina.cli.main import ${tool}_main

${tool}_main()
EOF
  chmod 0755 "$K/$tool"
done
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [ -f "$bundle" ]; then cp -L "$bundle" "$K/ssl/certs/ca-certificates.crt"; break; fi
done
# the interpreter must work from the tree (its loader path only exists in the image)
"$LIB/$(basename "$loader")" --library-path "$LIB" "$PY" -I -c '
import sys, lamina.cli.main, ssl, zlib, bz2, lzma, ctypes, zstandard, isal, httpx
assert sys.prefix.endswith("/kaniko/python"), sys.prefix' \
  || { echo "build-image.sh: the relocated interpreter does not start" >&2; exit 1; }

cp "$here/Dockerfile" "$ctx/Dockerfile"

# ------------------------------------------------------------- the image, built by lamina
args=(--context "$ctx" --dockerfile "$ctx/Dockerfile" --kaniko-dir "$work/build")
if [ ${#destinations[@]} -eq 0 ]; then
  args+=(--no-push --destination "$tag")
fi
for d in "${destinations[@]}"; do args+=(--destination "$d"); done
[ -n "$tar_path" ] && args+=(--tar-path "$tar_path")
PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m lamina build "${args[@]}" "${extra[@]}"
