#!/usr/bin/env bash
# Regenerates lab/schema/openapi.json and lab/schema/proto.json (see src/main.rs). Needs
# crates.io (k8s-openapi with schemars, and k8s-pb's source); builds in a throw-away target
# directory so the project's target/ is untouched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$(mktemp -d)}"
CARGO_TARGET_DIR="$target" cargo run --quiet --manifest-path "$here/Cargo.toml" -- "$root"
