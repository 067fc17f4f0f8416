#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), then runs every unit,
# integration and end-to-end test (the lab included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --locked "$@"
