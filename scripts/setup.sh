#!/usr/bin/env bash
# Installs the system packages and the Rust target mtcd's lab and tests need. Idempotent.
set -euo pipefail
need=()
for pkg in rsync stunnel4 docker-registry skopeo iproute2 openssh-client openssh-server util-linux time apache2-utils; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
# The demo shows the clusters with kubectl: Debian's client where the machine has none (the
# tests that check kubectl's own newer features skip with it: tests/support has_kubectl).
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The Debian docker-registry package starts a system service on port 5000; the lab runs its
# own registries, so the packaged one is stopped where a service manager exists.
command -v systemctl >/dev/null 2>&1 && systemctl disable --now docker-registry >/dev/null 2>&1 || true
rustup target add wasm32-wasip2 >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true
