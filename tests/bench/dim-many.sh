#!/usr/bin/env bash
# DIM many-image benchmark (issue 19): N repositories sharing a BASE_MB base layer plus an
# OWN_MB layer each, in the lab's source registry and referenced by N Deployments, copied to
# the destination registry by `mtcd apply` (the whole command: observe, plan, images, objects)
# and by `skopeo sync --all --preserve-digests --src yaml`. Every run gets a fresh lab (empty
# destination registry, empty skopeo blob-info cache); tools interleaved, the order alternating
# per round. After each cold run the same command runs again (warm: everything present).
# Every run is checked: the destination's digest of each tag equals the source's.
#
# Usage: tests/bench/dim-many.sh [ROUNDS]        (default 3)
#   N=20 BASE_MB=20 OWN_MB=2  the data set
#   BIN=target/release        folder with release builds of mtcd and mtcd-lab (else built here)
#   MTCD_BIN=…                another mtcd binary to measure (e.g. an older build), same lab
#   DIM='concurrency = 8'     lines added under [migration.dim] of mtcd's desired file
#   BENCH_DIR=/tmp/mtcd-bench-dim-many
# Output: one line per run on stderr and $W/runs.tsv; a markdown summary on stdout.
# Needs skopeo, util-linux unshare (skopeo runs in its own mount namespace with a fresh
# directory bound over /var/lib/containers/cache), curl, python3. Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
N=${N:-20}; BASE_MB=${BASE_MB:-20}; OWN_MB=${OWN_MB:-2}
W=${BENCH_DIR:-/tmp/mtcd-bench-dim-many}
if [ -z "${BIN:-}" ]; then cargo build --release -q -p mtcd -p mtcd-lab; BIN=target/release; fi
MTCD=${MTCD_BIN:-$BIN/mtcd}
LAB=$BIN/mtcd-lab
rm -rf "$W"; mkdir -p "$W"
mkdir -p /var/lib/containers/cache
printf 'tool\tround\tcase\tseconds\tcpu_s\tmax_rss_kib\n' > "$W/runs.tsv"

lab_dir=""
cleanup() { if [ -n "$lab_dir" ]; then $LAB down --dir "$lab_dir" >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

repos() { for i in $(seq -w 1 "$N"); do echo "bench/app-$i"; done; }

# A fresh lab with the N images and their Deployments; sets SRC, DST, lab_dir.
fresh_lab() {
  cleanup
  lab_dir="$W/lab-$1"
  rm -rf "$lab_dir"
  $LAB up --dir "$lab_dir" --detach >/dev/null
  SRC=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["clusters"]["src"]["registry"])' "$lab_dir/lab.json")
  DST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["clusters"]["dst"]["registry"])' "$lab_dir/lab.json")
  {
    printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n'
    i=0
    for r in $(repos); do
      i=$((i + 1))
      printf -- '---\napiVersion: lab.mtcd.io/v1\nkind: Image\nrepository: %s\ntag: v1\nlayers: [{size: %d, seed: 1}, {size: %d, seed: %d}]\n' \
        "$r" "$((BASE_MB * 1000000))" "$((OWN_MB * 1000000))" "$((100 + i))"
      printf -- '---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: %s, namespace: bench}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: %s}}\n  template:\n    metadata: {labels: {app: %s}}\n    spec: {containers: [{name: app, image: "%s/%s:v1"}]}\n' \
        "${r#bench/}" "${r#bench/}" "${r#bench/}" "$SRC" "$r"
    done
  } > "$lab_dir/seed.yaml"
  $LAB seed --dir "$lab_dir" "$lab_dir/seed.yaml" >/dev/null
  cat > "$lab_dir/desired.toml" <<TOML
version = 1
[clusters.source]
context = "lab-src"
registry = { address = "$SRC", tls = "insecure" }
[clusters.destination]
context = "lab-dst"
registry = { address = "$DST", tls = "insecure" }
[[migration]]
name = "bench"
namespaces = ["bench"]
images = "direct"
volumes = "skip"
[migration.dim]
${DIM:-}
TOML
  { printf '%s:\n  tls-verify: false\n  images:\n' "$SRC"; for r in $(repos); do printf '    %s: ["v1"]\n' "$r"; done; } > "$lab_dir/sync.yaml"
}

digest() { # registry repo tag
  curl -fsS -I -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json' \
    "http://$1/v2/$2/manifests/$3" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'
}

verify() {
  for r in $(repos); do
    local s d; s=$(digest "$SRC" "$r" v1); d=$(digest "$DST" "$r" v1 || true)
    if [ -z "$d" ] || [ "$s" != "$d" ]; then echo "VERIFY FAILED: $r src=$s dst=$d" >&2; exit 1; fi
  done
}

# run TOOL ROUND CASE: one timed run, appended to runs.tsv.
run() {
  local tool=$1 round=$2 case=$3 out="$W/$1-$2-$3"
  local t0 t1
  if [ "$tool" = mtcd ]; then
    t0=$(date +%s.%N)
    /usr/bin/time -o "$out.time" -f '%U %S %M' "$MTCD" --kubeconfig "$lab_dir/kubeconfig" --output json apply "$lab_dir/desired.toml" > "$out.log" 2>"$out.err" \
      || { echo "mtcd apply failed, see $out.log / $out.err" >&2; tail -3 "$out.err" >&2; exit 1; }
    t1=$(date +%s.%N)
  else
    # Its blob-info cache: empty for the cold run, what the cold run left for the warm one.
    if [ "$case" = cold ]; then rm -rf "$W/skopeo-cache-$round"; fi
    mkdir -p "$W/skopeo-cache-$round"
    t0=$(date +%s.%N)
    /usr/bin/time -o "$out.time" -f '%U %S %M' unshare -m sh -c \
      "mount --bind '$W/skopeo-cache-$round' /var/lib/containers/cache && exec skopeo --insecure-policy sync --all --preserve-digests --src yaml --dest docker --dest-tls-verify=false '$lab_dir/sync.yaml' '$DST/bench'" \
      > "$out.log" 2>&1 || { echo "skopeo sync failed, see $out.log" >&2; tail -3 "$out.log" >&2; exit 1; }
    t1=$(date +%s.%N)
  fi
  verify
  local secs cpu rss
  secs=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  read -r u s rss < "$out.time"
  cpu=$(python3 -c "print(f'{$u + $s:.2f}')")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$round" "$case" "$secs" "$cpu" "$rss" | tee -a "$W/runs.tsv" >&2
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="mtcd skopeo"; else order="skopeo mtcd"; fi
  for tool in $order; do
    fresh_lab "$tool-$round"
    run "$tool" "$round" cold
    run "$tool" "$round" warm
  done
done
cleanup; lab_dir=""

python3 - "$W/runs.tsv" "$N" "$BASE_MB" "$OWN_MB" "$ROUNDS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
n, base, own, rounds = sys.argv[2:6]
print(f"{n} repositories × ({base} MB shared base + {own} MB own layer), {rounds} rounds, fresh lab per run, tools interleaved.\n")
print("| Case | Tool | Median s | Min–max s | mtcd/skopeo (median) | Client CPU-s (median) | Peak RSS MiB (max) |")
print("|---|---|---|---|---|---|---|")
for case in ("cold", "warm"):
    med = {}
    for tool in ("mtcd", "skopeo"):
        r = [x for x in rows if x["tool"] == tool and x["case"] == case]
        if not r:
            continue
        secs = [float(x["seconds"]) for x in r]
        med[tool] = statistics.median(secs)
        cpu = statistics.median(float(x["cpu_s"]) for x in r)
        rss = max(int(x["max_rss_kib"]) for x in r) / 1024
        ratio = f"**{med['mtcd'] / med['skopeo']:.2f}×**" if tool == "skopeo" and "mtcd" in med else ""
        print(f"| {case} | {tool} | {med[tool]:.3f} | {min(secs):.3f}–{max(secs):.3f} | {ratio} | {cpu:.2f} | {rss:.1f} |")
PY
