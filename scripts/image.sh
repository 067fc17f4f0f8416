#!/usr/bin/env bash
# Builds a minimal OCI image of mtcd without a container engine, reproducibly, and pushes it.
#
#   scripts/image.sh [--binary PATH] [--out DIR] [--tag TAG] [--push REF] [--insecure]
#
# - the binary: --binary, or `cargo build --release -p mtcd` (target/release/mtcd);
# - one layer: /usr/local/bin/mtcd, the shared libraries `ldd` lists for it (glibc, libgcc_s,
#   libm, the loader: the release binary is dynamically linked), the CA bundle at
#   /etc/ssl/certs/ca-certificates.crt, /etc/passwd and /etc/group with `mtcd` (65532), /tmp;
# - reproducible: every entry's mtime is SOURCE_DATE_EPOCH (default: the last commit's time),
#   owner 0:0, entries sorted by name, no PAX atime/ctime, gzip without name or timestamp; the
#   config's `created` is the same time. Same binary and host libraries → same digests;
# - the result is an OCI image layout in --out (default target/oci/mtcd) with the tag in
#   index.json (org.opencontainers.image.ref.name), then, with --push, copied to REF by
#   skopeo (`--insecure`: plain HTTP / unverified TLS, e.g. a lab registry).
# Prints the manifest digest, the compressed size and the time it took.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
out="target/oci/mtcd"
tag="latest"
push=""
tls_verify=true
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --push) push="$2"; shift 2 ;;
        --insecure) tls_verify=false; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

start=$(date +%s.%N)
if [ -z "$binary" ]; then
    cargo build --release --locked -p mtcd --bin mtcd
    binary=target/release/mtcd
fi
[ -x "$binary" ] || { echo "image.sh: $binary is not an executable" >&2; exit 1; }
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
install -m 0755 "$binary" "$root/usr/local/bin/mtcd"
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nmtcd:x:65532:65532:mtcd:/tmp:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nmtcd:x:65532:\n' > "$root/etc/group"
# The libraries the dynamic loader needs, at the paths the binary asks for (a static musl
# build would need none: then ldd says "not a dynamic executable" and nothing is copied).
for lib in $(ldd "$binary" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
    chmod 0755 "$root$lib"
done
find "$root" -exec touch -h -d "@$epoch" {} +

layer="$work/layer.tar"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$root" -cf "$layer" .
diff_id=$(sha256sum "$layer" | cut -d' ' -f1)
gzip -n -9 "$layer"
layer_digest=$(sha256sum "$layer.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$layer.gz")

rm -rf "$out"
mkdir -p "$out/blobs/sha256"
mv "$layer.gz" "$out/blobs/sha256/$layer_digest"

blob() { # stdin → blobs/sha256/<digest>; prints "<digest> <size>"
    local tmp="$work/blob" d
    cat > "$tmp"
    d=$(sha256sum "$tmp" | cut -d' ' -f1)
    mv "$tmp" "$out/blobs/sha256/$d"
    echo "$d $(stat -c %s "$out/blobs/sha256/$d")"
}

read -r config_digest config_size < <(printf '%s' \
"{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"$created\",\
\"config\":{\"User\":\"65532:65532\",\"Entrypoint\":[\"/usr/local/bin/mtcd\"],\
\"Env\":[\"PATH=/usr/local/bin:/usr/bin:/bin\",\"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\"],\
\"WorkingDir\":\"/tmp\",\"Labels\":{\"org.opencontainers.image.title\":\"mtcd\",\"org.opencontainers.image.version\":\"$version\"}},\
\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]},\
\"history\":[{\"created\":\"$created\",\"created_by\":\"scripts/image.sh\"}]}" | blob)

read -r manifest_digest manifest_size < <(printf '%s' \
"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config_digest\",\"size\":$config_size},\
\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer_digest\",\"size\":$layer_size}]}" | blob)

printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\
\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest_digest\",\"size\":$manifest_size,\
\"annotations\":{\"org.opencontainers.image.ref.name\":\"$tag\"}}]}" > "$out/index.json"

end=$(date +%s.%N)
echo "image: $out ($tag) manifest sha256:$manifest_digest"
echo "layer: $layer_size bytes compressed; built in $(printf '%.1f' "$(echo "$end - $start" | bc)") s"
if [ -n "$push" ]; then
    skopeo copy --dest-tls-verify="$tls_verify" "oci:$out:$tag" "docker://$push"
    echo "pushed: $push"
fi
