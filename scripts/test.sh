#!/usr/bin/env bash
# Install every test dependency (Debian packages + the Python dev extras) and run the
# whole test suite with the linters. Needs root for apt-get (or the packages present).
#   bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-venv docker-registry skopeo umoci buildah busybox-static debootstrap
  apache2-utils openssl curl jq zstd uidmap fuse-overlayfs git tar gzip podman openssh-client
  openssh-server patchelf runc)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[test.sh] installing Debian packages: ${missing[*]}"
  . scripts/apt-wait.sh
  apt_wait update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt_wait install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# Azurite (the Azure Blob emulator of tests/support/azurite.py) from npm, pinned
AZURITE_VERSION=3.37.0
AZURITE_DIR=${LAMINA_TEST_CACHE:-$HOME/.cache/lamina-tests}/azurite
if ! command -v npm >/dev/null; then
  echo "[test.sh] installing Debian packages: nodejs npm"
  . scripts/apt-wait.sh
  apt_wait update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt_wait install -y -q --no-install-recommends nodejs npm >/dev/null
fi
if [ "$(cat "$AZURITE_DIR/node_modules/azurite/package.json" 2>/dev/null | jq -r .version)" != "$AZURITE_VERSION" ]; then
  echo "[test.sh] npm install azurite@$AZURITE_VERSION into $AZURITE_DIR"
  mkdir -p "$AZURITE_DIR"
  (cd "$AZURITE_DIR" && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION")
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'

echo "[test.sh] ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "[test.sh] mypy --strict"
.venv/bin/mypy
echo "[test.sh] import layering"
.venv/bin/lint-imports

echo "[test.sh] pytest"
set +e
.venv/bin/pytest -q -p no:cacheprovider "$@" tests
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "[test.sh] pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
