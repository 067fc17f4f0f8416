#!/usr/bin/env bash
# The main job, every built-in action once: install what is needed, start the two-cluster
# lab, seed a realistic `shop` namespace (objects, a data volume, an image in the source's
# internal registry and a workload running it), and migrate it with mtcd: plan (-v: what is
# skipped and why), apply (objects through the add-label transform plugin, the volume, the
# image copied and the workload rewritten to the destination registry), a change in the
# source re-synced by `apply --watch`, cutover and status. Each step prints its time.
# The lab stays up with KEEP_LAB=1 (kubeconfig in lab-state/kubeconfig); otherwise it is
# torn down at the end. LAB_DIR sets the lab's directory (default lab-state).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh
cargo build --quiet -p mtcd -p mtcd-lab
# The transform plugin, built as tests/support/plugins.rs builds it (its own target dir).
CARGO_TARGET_DIR="$ROOT/plugins/target" cargo build --quiet --release --target wasm32-wasip2 \
  --manifest-path plugins/Cargo.toml -p add-label
PLUGIN="$ROOT/plugins/target/wasm32-wasip2/release/add_label.wasm"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug   # where the cargo build above put them
STATE=${LAB_DIR:-lab-state}
KUBECONFIG_FILE="$STATE/kubeconfig"

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
START=$(now_ms)
seconds() { local ms=$(($(now_ms) - $1)); printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100)); }
# step TITLE -- COMMAND...: prints the command, runs it, prints how long it took. Exit code
# 2 is accepted from `mtcd plan` (changes pending).
step() {
  local title=$1; shift
  printf '\n\033[1m== %s\033[0m\n$ %s\n' "$title" "$*"
  local t0 rc=0; t0=$(now_ms)
  "$@" || rc=$?
  if [ "$rc" -ne 0 ] && ! { [ "$1" = "$BIN/mtcd" ] && [ "$rc" -eq 2 ]; }; then
    echo "step failed (exit $rc): $title" >&2
    exit "$rc"
  fi
  printf '\033[2m[%s took %s]\033[0m\n' "$title" "$(seconds "$t0")"
}
kubectl_() { kubectl --kubeconfig "$KUBECONFIG_FILE" --cache-dir "$STATE/kubectl-cache" "$@"; }

$BIN/mtcd-lab down --dir "$STATE" >/dev/null 2>&1 || true
rm -rf "$STATE"
step "start the lab (two clusters, their registries)" $BIN/mtcd-lab up --dir "$STATE" --detach
[ "${KEEP_LAB:-0}" = 1 ] || trap '$BIN/mtcd-lab down --dir "$STATE" >/dev/null' EXIT

# The registries listen on free ports: read them from lab.json (one flat object per cluster).
registry() { tr -d ' \n' < "$STATE/lab.json" | grep -o "\"$1\":{[^}]*}" | grep -o '"registry":"[^"]*"' | cut -d'"' -f4; }
SRC_REGISTRY=$(registry src)
DST_REGISTRY=$(registry dst)
sed "s|SRC_REGISTRY|$SRC_REGISTRY|" examples/lab/image.yaml > "$STATE/image.yaml"
seed() { for f in examples/lab/seed.yaml examples/lab/volume-data.yaml "$STATE/image.yaml"; do
  $BIN/mtcd-lab seed --dir "$STATE" "$f" | tail -n 1; done; }
step "seed the source: shop namespace, a data volume, an image in the internal registry" seed

# The desired state of examples/lab/desired.toml, with the images moved (the registries'
# addresses filled in), the add-label transform, and a short re-sync interval.
DESIRED="$STATE/desired.toml"
sed -e "s|^images = \"skip\"|images = \"direct\"|" \
    -e "s|^interval = .*|interval = \"2s\"|" \
    -e "/^\[clusters.source\]/a registry = { address = \"$SRC_REGISTRY\", tls = \"insecure\" }" \
    -e "/^\[clusters.destination\]/a registry = { address = \"$DST_REGISTRY\", tls = \"insecure\" }" \
    examples/lab/desired.toml > "$DESIRED"
cat >> "$DESIRED" <<TOML

[[migration.transform]]
plugin = "$PLUGIN"
config = { labels = { migrated-by = "mtcd" } }
TOML
export MTCD_KUBECONFIG="$KUBECONFIG_FILE"
M=$BIN/mtcd

step "plan (-v lists what is skipped and why)" $M plan -v "$DESIRED"
step "apply: objects (through add-label), the volume, the image" $M apply "$DESIRED"
step "the workload runs the copied image; the plugin's label is there" \
  kubectl_ --context lab-dst -n shop-prod get deployment catalog \
  -o 'jsonpath={.spec.template.spec.containers[0].image}{"  migrated-by="}{.metadata.labels.migrated-by}{"\n"}'
step "a change in the source" kubectl_ --context lab-src -n shop patch configmap shop-config \
  --type merge -p '{"data":{"SHOP_CURRENCY":"CHF"}}'
# Two cycles of `apply --watch` (interval 2s), then Ctrl-C: the change arrives in the first.
watch_briefly() { timeout -s INT 5 "$M" apply --watch "$DESIRED" || [ $? -eq 124 ]; }
step "apply --watch re-syncs it (stopped after ~5s)" watch_briefly
step "the destination has the change" kubectl_ --context lab-dst -n shop-prod get configmap shop-config \
  -o 'jsonpath={"SHOP_CURRENCY="}{.data.SHOP_CURRENCY}{"\n"}'
step "cutover: quiesce the source, final sync, start the destination" $M cutover "$DESIRED"
step "status" $M status "$DESIRED"
step "the destination" kubectl_ --context lab-dst -n shop-prod get deployments,statefulsets,cronjobs,pvc
printf '\n\033[1mdemo done: %s after the build\033[0m\n' "$(seconds "$START")"
