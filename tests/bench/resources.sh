#!/usr/bin/env bash
# Resource benchmark: 10,000 ConfigMaps and Secrets plus 500 Deployments in one namespace,
# planned and applied against the lab, then 1% of the destination's ConfigMaps edited by
# another field manager (drift) and planned / repaired again. Reports objects/s and peak memory.
# Usage: tests/bench/resources.sh [RUNS]   Results: docs/benchmarks.md (resources section).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
CMS=${CMS:-5000}; SECRETS=${SECRETS:-5000}; DEPLOYS=${DEPLOYS:-500}
DRIFT_EVERY=${DRIFT_EVERY:-50}   # every 50th ConfigMap drifts: 100 objects, 1% of the set
W=${BENCH_DIR:-/tmp/mtcd-bench-resources}
# BIN: a folder with release builds of mtcd and mtcd-lab (default: build them here).
if [ -z "${BIN:-}" ]; then cargo build --release -q -p mtcd -p mtcd-lab; BIN=target/release; fi
TIME=(/usr/bin/time -f "%e %M")
python3 - "$CMS" "$SECRETS" "$DEPLOYS" > /tmp/mtcd-bench-objects.yaml <<'PY'
import sys, base64
cms, secrets, deploys = map(int, sys.argv[1:4])
print("apiVersion: v1\nkind: Namespace\nmetadata: {name: bulk}")
for i in range(cms):
    print(f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i:05}, namespace: bulk, labels: {{app: bulk}}}}\ndata: {{key: value-{i}, other: '{'x' * 64}'}}")
for i in range(secrets):
    v = base64.b64encode(f"secret-{i}".encode()).decode()
    print(f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s-{i:05}, namespace: bulk}}\ntype: Opaque\ndata: {{password: {v}}}")
for i in range(deploys):
    print(f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: d-{i:04}, namespace: bulk}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: d-{i:04}}}}}
  template:
    metadata: {{labels: {{app: d-{i:04}}}}}
    spec:
      containers: [{{name: app, image: registry.example.com/simulated/app:{i}, env: [{{name: N, value: '{i}'}}]}}]""")
PY
cat > /tmp/mtcd-bench-resources.toml <<'TOML'
version = 1
[clusters.source]
context = "lab-src"
[clusters.destination]
context = "lab-dst"
[[migration]]
name = "bulk"
namespaces = ["bulk"]
namespace_map = { bulk = "bulk-copy" }
volumes = "skip"
TOML
N=$((CMS + SECRETS + DEPLOYS + 1))
: > "$W.results"
for r in $(seq 1 "$RUNS"); do
  rm -rf "$W"; $BIN/mtcd-lab up --dir "$W" --detach >/dev/null
  $BIN/mtcd-lab seed --dir "$W" /tmp/mtcd-bench-objects.yaml >/dev/null
  K=(--kubeconfig "$W/kubeconfig")
  plan=$( { "${TIME[@]}" $BIN/mtcd "${K[@]}" plan /tmp/mtcd-bench-resources.toml >/dev/null; } 2>&1 | tail -1) || true
  apply=$( { "${TIME[@]}" $BIN/mtcd "${K[@]}" apply /tmp/mtcd-bench-resources.toml >/dev/null; } 2>&1 | tail -1)
  replan=$( { "${TIME[@]}" $BIN/mtcd "${K[@]}" plan /tmp/mtcd-bench-resources.toml >/dev/null; } 2>&1 | tail -1)
  # Drift: someone edits DRIFT ConfigMaps on the destination with kubectl (its own field manager).
  seq 0 $((CMS / DRIFT_EVERY - 1)) | xargs -P 4 -I{} sh -c 'printf "cm-%05d\n" $(({} * '"$DRIFT_EVERY"'))' |
    xargs -P 4 -I{} kubectl "${K[@]}" --context lab-dst -n bulk-copy patch configmap {} --type merge \
      -p '{"data":{"key":"edited by hand"}}' >/dev/null
  drifted=$( { "${TIME[@]}" $BIN/mtcd "${K[@]}" plan /tmp/mtcd-bench-resources.toml > "$W.drift-plan"; } 2>&1 | tail -1) || true
  found=$(grep -c '"edited by hand" →' "$W.drift-plan" || true)
  repair=$( { "${TIME[@]}" $BIN/mtcd "${K[@]}" apply /tmp/mtcd-bench-resources.toml >/dev/null; } 2>&1 | tail -1)
  echo "$plan $apply $replan $drifted $repair $found" | tee -a "$W.results" >&2
  $BIN/mtcd-lab down --dir "$W" >/dev/null
done
python3 - "$W.results" "$N" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 11]
n = int(sys.argv[2]); med = lambda i: statistics.median(r[i] for r in rows)
print(f"{n} objects (ConfigMaps, Secrets, Deployments, the Namespace), median of {len(rows)} runs on a fresh lab each.\n")
print("| step | wall s | objects/s | peak RSS MiB |\n|---|---|---|---|")
for name, i in [("plan (all to create)", 0), ("apply", 2), ("plan again (nothing to do)", 4),
                ("plan after 1% drift", 6), ("apply repairing the drift", 8)]:
    print(f"| {name} | {med(i):.2f} | {n / med(i):.0f} | {med(i + 1) / 1024:.1f} |")
print(f"\nDrifted objects the plan named (median): {med(10):.0f}")
PY
