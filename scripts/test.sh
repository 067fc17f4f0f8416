#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), checks formatting and lints,
# then runs every unit, integration and end-to-end test (the lab included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all --check
(cd plugins && cargo fmt --all --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
