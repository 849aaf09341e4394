#!/usr/bin/env bash
# README quick-start command (1): install lamina and build the bundled example.
# Writes example/out/oci (OCI layout) and example/out/image.tar (docker load-able) and
# prints the image digest. Run as root on Debian 12 from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in python3-venv busybox-static; do
  [ "$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  . scripts/apt-wait.sh
  apt_wait update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt_wait install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
# a venv of its own, so that the development venv (.venv, editable) is left alone
[ -x .venv-lamina/bin/python ] || python3 -m venv .venv-lamina
.venv-lamina/bin/python -m pip install -q .
install -m 0755 /bin/busybox example/busybox
rm -rf example/out && mkdir -p example/out
.venv-lamina/bin/lamina build --context example --dockerfile example/Dockerfile --no-push \
  --oci-layout-path example/out/oci --tar-path example/out/image.tar \
  --digest-file example/out/digest --destination lamina-example:latest
echo "image digest: $(cat example/out/digest)"
