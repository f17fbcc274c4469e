#!/usr/bin/env bash
# Run every test: unit tests of all crates and the end-to-end tests in tests/ (which build
# wasm-examples once and drive real skiff processes with kubectl).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubectl >/dev/null || { echo "error: kubectl is required by the end-to-end tests and is missing" >&2; exit 1; }
command -v curl >/dev/null || { echo "error: curl is required by the end-to-end tests and is missing" >&2; exit 1; }
# The wasm targets come from wasm-examples/rust-toolchain.toml; install them up front so a
# fresh machine fails here, loudly, if they cannot be had.
(cd wasm-examples && rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null)
cargo test --workspace --all-targets "$@"
