#!/usr/bin/env bash
# DVM benchmark: mtcd through the lab vs rsync through stunnel started by hand vs rsync over
# ssh (pv-migrate's transport) vs rsync through stunnel in hand-written lab pods (the same
# network path as mtcd's), on the same data sets, interleaved (A B C A B C ...), medians
# of RUNS runs. Usage: tests/bench/dvm.sh [RUNS]   Results: docs/benchmarks.md (DVM section).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
LARGE_FILES=${LARGE_FILES:-4}; LARGE_MIB=${LARGE_MIB:-512}     # 4 x 512 MiB = 2 GiB
SMALL_FILES=${SMALL_FILES:-100000}                               # 100,000 x 4 KiB
STREAMS=${STREAMS:-4}                                            # streams_per_pvc of the mtcd-streams rows
W=${BENCH_DIR:-/tmp/mtcd-bench-dvm}
# BIN: a folder with release builds of mtcd and mtcd-lab (default: build them here).
if [ -z "${BIN:-}" ]; then cargo build --release -q -p mtcd -p mtcd-lab; BIN=target/release; fi
rm -rf "$W"; mkdir -p "$W"/data/large "$W"/data/small "$W"/out
echo "generating data sets in $W/data" >&2
for i in $(seq 1 "$LARGE_FILES"); do head -c "$((LARGE_MIB << 20))" /dev/urandom > "$W/data/large/f$i.bin"; done
python3 - "$W/data/small" "$SMALL_FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:03}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06}"), "wb") as f:
        f.write(os.urandom(4096))
PY
FLAGS="--info=progress2 --recursive --links --perms --times --specials --sparse --delete --partial --numeric-ids --stats"
TIME=(/usr/bin/time -f "%e %U %S %M")

# --- lab for mtcd ---------------------------------------------------------------------
$BIN/mtcd-lab up --dir "$W/lab" --detach >/dev/null
trap '$BIN/mtcd-lab down --dir "$W/lab" >/dev/null 2>&1 || true; kill $(jobs -p) 2>/dev/null || true' EXIT
for set in large small; do
  cat > "$W/seed-$set.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: bench-$set}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: bench-$set}
spec: {accessModes: [ReadWriteOnce], storageClassName: standard, resources: {requests: {storage: 10Gi}}}
YAML
  $BIN/mtcd-lab seed --dir "$W/lab" "$W/seed-$set.yaml" >/dev/null
  cat > "$W/desired-$set.toml" <<TOML
version = 1
[clusters.source]
context = "lab-src"
[clusters.destination]
context = "lab-dst"
[[migration]]
name = "bench-$set"
namespaces = ["bench-$set"]
volumes = "direct"
include_kinds = ["PersistentVolumeClaim"]
TOML
  { cat "$W/desired-$set.toml"; printf '[migration.dvm]\nstreams_per_pvc = %s\n' "$STREAMS"; } > "$W/desired-$set-streams.toml"
done
pv_dir() { # context namespace
  local pv; pv=$(kubectl --kubeconfig "$W/lab/kubeconfig" --context "$1" -n "$2" get pvc data -o jsonpath='{.spec.volumeName}')
  kubectl --kubeconfig "$W/lab/kubeconfig" --context "$1" get pv "$pv" -o jsonpath='{.spec.hostPath.path}'
}
for set in large small; do
  for _ in $(seq 1 50); do p=$(pv_dir lab-src bench-$set 2>/dev/null) && [ -n "$p" ] && break; sleep 0.2; done
  cp -a "$W/data/$set/." "$p/"
  echo "$p" > "$W/src-$set"
done
# First apply creates the destination PVCs; their directories are then emptied before each run.
for set in large small; do $BIN/mtcd --kubeconfig "$W/lab/kubeconfig" apply "$W/desired-$set.toml" >/dev/null 2>&1 || true; pv_dir lab-dst bench-$set > "$W/dst-$set"; done

# --- rsync through stunnel, by hand -------------------------------------------------------
mkdir -p "$W/raw/tls" "$W/raw/dst-large" "$W/raw/dst-small"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -keyout "$W/raw/tls/tls.key" -out "$W/raw/tls/tls.crt" 2>/dev/null
cp "$W/raw/tls/tls.crt" "$W/raw/tls/ca.crt"
cat > "$W/raw/rsyncd.conf" <<CONF
uid = 0
gid = 0
use chroot = no
munge symlinks = no
numeric ids = yes
pid file = $W/raw/rsyncd.pid
[large]
path = $W/raw/dst-large
read only = false
[small]
path = $W/raw/dst-small
read only = false
CONF
printf 'foreground = yes\npid =\n[r]\naccept = 127.0.0.1:18443\nconnect = 127.0.0.1:18873\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\nrequireCert = yes\n' "$W/raw/tls/tls.crt" "$W/raw/tls/tls.key" "$W/raw/tls/ca.crt" > "$W/raw/server.conf"
printf 'foreground = yes\npid =\n[r]\nclient = yes\naccept = 127.0.0.1:18874\nconnect = 127.0.0.1:18443\ncert = %s\nkey = %s\nCAfile = %s\nverifyChain = yes\n' "$W/raw/tls/tls.crt" "$W/raw/tls/tls.key" "$W/raw/tls/ca.crt" > "$W/raw/client.conf"
rsync --daemon --no-detach --port=18873 --config="$W/raw/rsyncd.conf" & 
stunnel "$W/raw/server.conf" 2>/dev/null &
stunnel "$W/raw/client.conf" 2>/dev/null &

# --- rsync through stunnel by hand, in pods, through the lab's router -----------------------
# The data path mtcd's transfers take in the lab (client pod -> Route -> server pod, each in
# its own network namespace, through the lab's router) with pods written by hand and no
# mtcd: what the lab's network costs, apart from the engine. Same flags as the loopback run.
K=(kubectl --kubeconfig "$W/lab/kubeconfig")
SEC='{"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false}'
CAPS='{"capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD", "SETFCAP", "SETGID", "SETUID"]}}'
for set in large small; do
  for c in lab-src lab-dst; do
    "${K[@]}" --context $c -n bench-$set create secret generic hand-tls --from-file=tls.crt="$W/raw/tls/tls.crt" \
      --from-file=tls.key="$W/raw/tls/tls.key" --from-file=ca.crt="$W/raw/tls/tls.crt" >/dev/null
  done
  printf 'uid = 0\ngid = 0\nuse chroot = no\nmunge symlinks = no\nnumeric ids = yes\npid file = /tmp/hand-rsyncd.pid\n[data]\npath = /mnt/data\nread only = false\n' > "$W/hand-rsyncd.conf"
  printf 'foreground = yes\npid =\n[r]\naccept = 8443\nconnect = 127.0.0.1:8873\ncert = /etc/hand-tls/tls.crt\nkey = /etc/hand-tls/tls.key\nCAfile = /etc/hand-tls/ca.crt\nverifyChain = yes\nrequireCert = yes\n' > "$W/hand-server.conf"
  "${K[@]}" --context lab-dst -n bench-$set create configmap hand --from-file=rsyncd.conf="$W/hand-rsyncd.conf" --from-file=server.conf="$W/hand-server.conf" >/dev/null
  "${K[@]}" --context lab-dst -n bench-$set apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: hand}
spec: {selector: {app: hand}, ports: [{name: tunnel, port: 443, targetPort: 8443}]}
---
apiVersion: route.openshift.io/v1
kind: Route
metadata: {name: hand}
spec: {to: {kind: Service, name: hand}, port: {targetPort: tunnel}, tls: {termination: passthrough}}
YAML
  for _ in $(seq 1 50); do host=$("${K[@]}" --context lab-dst -n bench-$set get route hand -o jsonpath='{.status.ingress[0].host}') && [ -n "$host" ] && break; sleep 0.2; done
  printf 'foreground = yes\npid =\n[r]\nclient = yes\naccept = 127.0.0.1:8873\nconnect = %s:443\nsni = %s\ncert = /etc/hand-tls/tls.crt\nkey = /etc/hand-tls/tls.key\nCAfile = /etc/hand-tls/ca.crt\nverifyChain = yes\n' "$host" "$host" > "$W/hand-client.conf"
  "${K[@]}" --context lab-src -n bench-$set create configmap hand --from-file=client.conf="$W/hand-client.conf" >/dev/null
done
pod_phase() { "${K[@]}" --context "$1" -n "$2" get pod "$3" -o jsonpath='{.status.phase}' 2>/dev/null; }
inlab() { # set -> "wall 0 0 0": rsync's own time inside the client pod, tunnel and daemon already up
  local set=$1 p
  # The server pod mounts the destination PVC only while it runs (mtcd refuses a PVC in use).
  "${K[@]}" --context lab-dst -n bench-$set apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: hand-server, labels: {app: hand}}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  securityContext: $SEC
  volumes:
  - {name: conf, configMap: {name: hand}}
  - {name: tls, secret: {secretName: hand-tls}}
  - {name: data, persistentVolumeClaim: {claimName: data}}
  containers:
  - {name: rsync, image: quay.io/konveyor/rsync-transfer:latest, command: [rsync, --daemon, --no-detach, --port=8873, --config=/etc/hand/rsyncd.conf],
     securityContext: $CAPS, volumeMounts: [{name: conf, mountPath: /etc/hand}, {name: data, mountPath: /mnt/data}]}
  - {name: stunnel, image: quay.io/konveyor/rsync-transfer:latest, command: [stunnel, /etc/hand/server.conf],
     volumeMounts: [{name: conf, mountPath: /etc/hand}, {name: tls, mountPath: /etc/hand-tls}]}
YAML
  for _ in $(seq 1 100); do [ "$(pod_phase lab-dst bench-$set hand-server)" = Running ] && break; sleep 0.1; done
  "${K[@]}" --context lab-src -n bench-$set apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: hand-client}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext: $SEC
  volumes:
  - {name: conf, configMap: {name: hand}}
  - {name: tls, secret: {secretName: hand-tls}}
  - {name: source, persistentVolumeClaim: {claimName: data, readOnly: true}}
  containers:
  - name: rsync
    image: quay.io/konveyor/rsync-transfer:latest
    securityContext: {capabilities: {drop: [ALL], add: [DAC_OVERRIDE]}}
    volumeMounts: [{name: conf, mountPath: /etc/hand}, {name: tls, mountPath: /etc/hand-tls}, {name: source, mountPath: /mnt/source, readOnly: true}]
    command:
    - bash
    - -c
    - |
      stunnel /etc/hand/client.conf & until rsync rsync://127.0.0.1:8873/ >/dev/null 2>&1; do sleep 0.1; done
      t0=\$(date +%s.%N); rsync $FLAGS /mnt/source/ rsync://127.0.0.1:8873/data/ >/dev/null; rc=\$?; t1=\$(date +%s.%N)
      echo "hand-time \$t0 \$t1 \$rc"; kill %1; exit \$rc
YAML
  for _ in $(seq 1 3000); do p=$(pod_phase lab-src bench-$set hand-client); [ "$p" = Succeeded ] || [ "$p" = Failed ] && break; sleep 0.1; done
  "${K[@]}" --context lab-src -n bench-$set logs hand-client | awk '$1 == "hand-time" && $4 == 0 { printf "%.2f 0 0 0\n", $3 - $2; ok = 1 } END { if (!ok) print "failed" }'
  "${K[@]}" --context lab-src -n bench-$set delete pod hand-client --wait=true >/dev/null
  "${K[@]}" --context lab-dst -n bench-$set delete pod hand-server --wait=true >/dev/null
}

# --- rsync over ssh ------------------------------------------------------------------------
mkdir -p "$W/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/host" <<<y >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/user" <<<y >/dev/null
cp "$W/ssh/user.pub" "$W/ssh/authorized_keys"
printf 'Port 18022\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\nStrictModes no\nPidFile %s\n' "$W/ssh/host" "$W/ssh/authorized_keys" "$W/ssh/sshd.pid" > "$W/ssh/sshd_config"
mkdir -p /run/sshd
/usr/sbin/sshd -D -f "$W/ssh/sshd_config" &
sleep 1
SSH="ssh -p 18022 -i $W/ssh/user -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
mkdir -p "$W/ssh/dst-large" "$W/ssh/dst-small"

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; } # the whole machine's busy jiffies
run() { # method set kind(full|resync) -> appends "method set kind seconds user sys maxrss_kib machine_cpu_s" to results
  local m=$1 set=$2 kind=$3 out b0
  # Each run starts with no dirty pages left by the one before (writeback of 2 GiB would
  # otherwise land on whichever method runs next); not timed.
  case $m in
    mtcd|mtcd-streams|inlab) [ "$kind" = full ] && find "$(cat "$W/dst-$set")" -mindepth 1 -delete ;;
    stunnel) [ "$kind" = full ] && find "$W/raw/dst-$set" -mindepth 1 -delete ;;
    ssh) [ "$kind" = full ] && find "$W/ssh/dst-$set" -mindepth 1 -delete ;;
  esac
  sync
  # ... with the same memory to work with: a page cache filled by earlier runs made the
  # kernel reclaim while 100,000 files were created, at random (runs of 10 s or 25 s, more
  # CPU in the slow ones, for every method); as root the caches are dropped ...
  [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches
  # ... and the source read back into the page cache, as a running application has it, with
  # every program the methods start (a binary paged in from disk would bill its method).
  find "$(cat "$W/src-$set")" -type f -print0 | xargs -0 cat > /dev/null
  cat "$BIN/mtcd" "$BIN/mtcd-lab" "$(command -v rsync)" "$(command -v stunnel)" "$(command -v ssh)" /usr/sbin/sshd \
    /usr/lib/x86_64-linux-gnu/lib{ssl,crypto}.so* > /dev/null 2>&1 || true
  b0=$(busy)
  case $m in
    mtcd) out=$("${TIME[@]}" $BIN/mtcd --kubeconfig "$W/lab/kubeconfig" apply "$W/desired-$set.toml" 2>&1 >/dev/null | tail -1) || out="failed" ;;
    mtcd-streams) out=$("${TIME[@]}" $BIN/mtcd --kubeconfig "$W/lab/kubeconfig" apply "$W/desired-$set-streams.toml" 2>&1 >/dev/null | tail -1) || out="failed" ;;
    inlab) out=$(inlab "$set") || out="failed" ;;
    stunnel) out=$("${TIME[@]}" rsync $FLAGS "$(cat "$W/src-$set")/" "rsync://127.0.0.1:18874/$set/" 2>&1 >/dev/null | tail -1) || out="failed" ;;
    ssh) out=$("${TIME[@]}" rsync $FLAGS -e "$SSH" "$(cat "$W/src-$set")/" "root@127.0.0.1:$W/ssh/dst-$set/" 2>&1 >/dev/null | tail -1) || out="failed" ;;
  esac
  out="$out $(awk -v a="$b0" -v b="$(busy)" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/hz}')"
  echo "$m $set $kind $out" | tee -a "$W/results" >&2
}
: > "$W/results"
for r in $(seq 1 "$RUNS"); do
  echo "round $r/$RUNS" >&2
  # The order rotates every round, so no method always runs first (or after the same one).
  order=(mtcd mtcd-streams inlab stunnel ssh); k=$(( (r - 1) % 5 )); order=("${order[@]:k}" "${order[@]:0:k}")
  for set in large small; do for m in "${order[@]}"; do run $m $set full; done; done
  # 1% of the small files change; every method re-syncs them.
  python3 - "$(cat "$W/src-small")" "$SMALL_FILES" "$r" <<'PY'
import os, sys
root, n, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(r, n, 100):
    with open(os.path.join(root, f"d{i % 100:03}", f"f{i:06}"), "wb") as f:
        f.write(os.urandom(4096))
PY
  for m in "${order[@]}"; do run $m small resync; done
done
python3 - "$W/results" "$LARGE_FILES" "$LARGE_MIB" "$SMALL_FILES" "$RUNS" > "$W/table.md" <<'PY'
import statistics, sys, collections
path, lf, lm, sf, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rows = collections.defaultdict(list)
for line in open(path):
    p = line.split()
    if len(p) < 8: continue
    rows[(p[0], p[1], p[2])].append(tuple(map(float, p[3:8])))
size = {"large": lf * lm * 2**20, "small": sf * 4096}
files = {"large": lf, "small": sf}
med = lambda xs: statistics.median(xs)
methods = ["mtcd", "mtcd-streams", "inlab", "stunnel", "ssh"]
print(f"Data sets: large = {lf} x {lm} MiB, small = {sf} x 4 KiB. Median of {runs} interleaved runs.\n")
print("| set | method | wall s, median (min–max) | MB/s | files/s | client CPU s | machine CPU s | client peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for s in ["large", "small"]:
    for m in methods:
        v = rows.get((m, s, "full"))
        if not v: continue
        walls = [x[0] for x in v]
        wall = med(walls); cpu = med([x[1] + x[2] for x in v]); rss = med([x[3] for x in v]) / 1024; mcpu = med([x[4] for x in v])
        print(f"| {s} | {m} | {wall:.2f} ({min(walls):.2f}–{max(walls):.2f}) | {size[s] / wall / 1e6:.1f} | {files[s] / wall:.0f} | {cpu:.2f} | {mcpu:.2f} | {rss:.1f} |")
print("\n| ratio (throughput) | large | small |\n|---|---|---|")
for a, b in [("mtcd", "stunnel"), ("mtcd", "inlab"), ("mtcd", "ssh"), ("mtcd-streams", "stunnel"), ("mtcd-streams", "inlab"), ("mtcd-streams", "ssh"), ("inlab", "stunnel"), ("stunnel", "ssh")]:
    cells = []
    for s in ["large", "small"]:
        x, y = rows.get((a, s, "full")), rows.get((b, s, "full"))
        cells.append(f"{med([t[0] for t in y]) / med([t[0] for t in x]):.2f}x" if x and y else "-")
    print(f"| {a} / {b} | {cells[0]} | {cells[1]} |")
print("\n| 1% re-sync (small set) | wall s | share of the full copy |\n|---|---|---|")
for m in methods:
    v, f = rows.get((m, "small", "resync")), rows.get((m, "small", "full"))
    if v and f:
        print(f"| {m} | {med([x[0] for x in v]):.2f} | {100 * med([x[0] for x in v]) / med([x[0] for x in f]):.0f}% |")
PY
cat "$W/table.md"
