#!/usr/bin/env bash
# The test command: every unit, integration and end-to-end test (the lab included).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
