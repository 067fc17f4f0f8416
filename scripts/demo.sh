#!/usr/bin/env bash
# The main job: install what is needed, start the two-cluster lab, seed a realistic `shop`
# namespace (objects, a data volume, an image in the source registry), and migrate it with
# mtcd: plan, apply, plan again (nothing to do), status, cutover. The lab stays up with
# KEEP_LAB=1 (kubeconfig in lab-state/kubeconfig); otherwise it is torn down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --quiet -p mtcd -p mtcd-lab
BIN=target/debug
STATE=${LAB_DIR:-lab-state}
$BIN/mtcd-lab down --dir "$STATE" >/dev/null 2>&1 || true
rm -rf "$STATE"
$BIN/mtcd-lab up --dir "$STATE" --detach
[ "${KEEP_LAB:-0}" = 1 ] || trap '$BIN/mtcd-lab down --dir "$STATE" >/dev/null' EXIT
$BIN/mtcd-lab seed --dir "$STATE" examples/lab/seed.yaml
$BIN/mtcd-lab seed --dir "$STATE" examples/lab/volume-data.yaml
export MTCD_KUBECONFIG="$STATE/kubeconfig"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
step mtcd plan examples/lab/desired.toml
$BIN/mtcd plan examples/lab/desired.toml || [ $? -eq 2 ]
step mtcd apply examples/lab/desired.toml
$BIN/mtcd apply examples/lab/desired.toml
step mtcd plan examples/lab/desired.toml
$BIN/mtcd plan examples/lab/desired.toml
step mtcd cutover examples/lab/desired.toml
$BIN/mtcd cutover examples/lab/desired.toml
step mtcd status examples/lab/desired.toml
$BIN/mtcd status examples/lab/desired.toml
step kubectl --context lab-dst -n shop-prod get deployments
kubectl --kubeconfig "$STATE/kubeconfig" --context lab-dst -n shop-prod get deployments,statefulsets,cronjobs,pvc 2>/dev/null || true
