#!/usr/bin/env bash
# Run every check and test: formatting, clippy, rustdoc's lints, unit tests of all crates and
# the end-to-end tests in tests/ (which build wasm-examples once and drive real skiff processes
# with kubectl).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The habits of the developers' guide are checked, not hoped for.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Doc links that resolve (rustdoc's own lints; no dependency's docs are built).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo test --workspace --all-targets "$@"
