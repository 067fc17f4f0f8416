#!/usr/bin/env bash
# Cutover downtime: the lab's shop example plus a volume of 1 GiB and 50,000 small files,
# staged, 1% of the small files changed, then `mtcd cutover`. Reports the downtime window
# (first write to the source → destination workloads available) and each part of it (quiesce,
# final sync, start, verify), side by side with a final rsync through stunnel by hand of the
# same delta. Rounds reuse one lab: rollback, stage again, change 1%, cut over.
# Usage: tests/bench/cutover.sh [ROUNDS]   Results: docs/benchmarks.md (cutover section).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
BIG_FILES=${BIG_FILES:-4}; BIG_MIB=${BIG_MIB:-256}     # 4 x 256 MiB = 1 GiB
SMALL_FILES=${SMALL_FILES:-50000}                     # 50,000 x 4 KiB
W=${BENCH_DIR:-/tmp/mtcd-bench-cutover}
if [ -z "${BIN:-}" ]; then cargo build --release -q -p mtcd -p mtcd-lab; BIN=target/release; fi
rm -rf "$W"; mkdir -p "$W"
K=(--kubeconfig "$W/lab/kubeconfig")
$BIN/mtcd-lab up --dir "$W/lab" --detach >/dev/null
trap '$BIN/mtcd-lab down --dir "$W/lab" >/dev/null 2>&1 || true; kill $(jobs -p) 2>/dev/null || true' EXIT
# 1 GiB + 50,000 files do not fit the example's 1Gi claim with DVM's 3% headroom.
sed 's/storage: 1Gi/storage: 2Gi/' examples/lab/seed.yaml | $BIN/mtcd-lab seed --dir "$W/lab" - >/dev/null
cat > "$W/desired.toml" <<TOML
version = 1
[clusters.source]
context = "lab-src"
[clusters.destination]
context = "lab-dst"
[[migration]]
name = "shop"
namespaces = ["shop"]
namespace_map = { shop = "shop-prod" }
volumes = "direct"
TOML
pv_dir() { # context namespace claim
  local pv; pv=$(kubectl "${K[@]}" --context "$1" -n "$2" get pvc "$3" -o jsonpath='{.spec.volumeName}')
  kubectl "${K[@]}" --context "$1" get pv "$pv" -o jsonpath='{.spec.hostPath.path}'
}
for _ in $(seq 1 100); do SRC=$(pv_dir lab-src shop uploads 2>/dev/null) && [ -n "$SRC" ] && break; sleep 0.2; done
echo "generating 1 GiB + $SMALL_FILES small files in $SRC" >&2
for i in $(seq 1 "$BIG_FILES"); do head -c "$((BIG_MIB << 20))" /dev/urandom > "$SRC/big$i.bin"; done
python3 - "$SRC" "$SMALL_FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "small", f"d{i % 100:03}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06}"), "wb") as f:
        f.write(os.urandom(4096))
PY

# The by-hand baseline: rsync through stunnel into a directory holding the staged copy.
mkdir -p "$W/raw/tls" "$W/raw/dst"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -keyout "$W/raw/tls/tls.key" -out "$W/raw/tls/tls.crt" 2>/dev/null
printf 'uid = 0\ngid = 0\nuse chroot = yes\nnumeric ids = yes\npid file = %s\n[d]\npath = %s\nread only = false\n' "$W/raw/rsyncd.pid" "$W/raw/dst" > "$W/raw/rsyncd.conf"
printf 'foreground = yes\npid =\n[r]\naccept = 127.0.0.1:19443\nconnect = 127.0.0.1:19873\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\nrequireCert = yes\n' "$W/raw/tls/tls.crt" "$W/raw/tls/tls.key" "$W/raw/tls/tls.crt" > "$W/raw/server.conf"
printf 'foreground = yes\npid =\n[r]\nclient = yes\naccept = 127.0.0.1:19874\nconnect = 127.0.0.1:19443\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\n' "$W/raw/tls/tls.crt" "$W/raw/tls/tls.key" "$W/raw/tls/tls.crt" > "$W/raw/client.conf"
rsync --daemon --no-detach --port=19873 --config="$W/raw/rsyncd.conf" &
stunnel "$W/raw/server.conf" 2>/dev/null &
stunnel "$W/raw/client.conf" 2>/dev/null &
sleep 1
FLAGS="-aHAX --numeric-ids --delete"
rsync $FLAGS "$SRC/" rsync://127.0.0.1:19874/d/ >/dev/null

: > "$W/results"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  $BIN/mtcd "${K[@]}" rollback "$W/desired.toml" >/dev/null 2>&1 || true
  $BIN/mtcd "${K[@]}" apply "$W/desired.toml" >/dev/null
  python3 - "$SRC/small" "$SMALL_FILES" "$r" <<'PY'
import os, sys
root, n, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(r, n, 100):
    with open(os.path.join(root, f"d{i % 100:03}", f"f{i:06}"), "wb") as f:
        f.write(os.urandom(4096))
PY
  sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches
  find "$SRC" -type f -print0 | xargs -0 cat > /dev/null
  # Alternate which goes first, so neither always gets the warmer cache.
  if [ $((r % 2)) -eq 1 ]; then first=mtcd; else first=rsync; fi
  for m in $first $([ $first = mtcd ] && echo rsync || echo mtcd); do
    if [ $m = rsync ]; then
      s=$(date +%s.%N); rsync $FLAGS "$SRC/" rsync://127.0.0.1:19874/d/ >/dev/null; e=$(date +%s.%N)
      echo "rsync $(python3 -c "print(round($e - $s, 3))")" | tee -a "$W/results" >&2
    else
      $BIN/mtcd "${K[@]}" --output json cutover "$W/desired.toml" > "$W/cutover-$r.json"
      python3 - "$W/cutover-$r.json" <<'PY' | tee -a "$W/results" >&2
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print("mtcd", r["downtime_seconds"], r["quiesce_seconds"], r["sync_seconds"], r["start_seconds"], r["verify_seconds"])
PY
    fi
  done
done
python3 - "$W/results" "$ROUNDS" > "$W/table.md" <<'PY'
import statistics, sys
path, rounds = sys.argv[1], int(sys.argv[2])
m, raw = [], []
for line in open(path):
    p = line.split()
    if p[0] == "mtcd": m.append(tuple(map(float, p[1:6])))
    elif p[0] == "rsync": raw.append(float(p[1]))
med = statistics.median
col = lambda i: [x[i] for x in m]
fmt = lambda xs: f"{med(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"
print(f"Median (min–max) of {rounds} rounds, seconds.\n")
print("| downtime | quiesce | final sync | start | verify | final rsync by hand | goal 1.5 × rsync + 2 s |")
print("|---|---|---|---|---|---|---|")
print(f"| {fmt(col(0))} | {fmt(col(1))} | {fmt(col(2))} | {fmt(col(3))} | {fmt(col(4))} | {fmt(raw)} | {1.5 * med(raw) + 2:.2f} |")
PY
cat "$W/table.md"
