#!/usr/bin/env bash
# The set-up both README commands need, on a fresh clone of a machine that has only cargo
# (rustup), kubectl, curl and openssl (the e2e tests make keys and requests with it, as the
# Kubernetes docs do): the wasm targets of wasm-examples/ and the rustfmt/clippy
# components. scripts/up.sh and scripts/test.sh both run it, so CI exercises the same set-up as
# the main command. Also Debian's protobuf-compiler (etcd's client library compiles etcd's
# protocol files at build time), etcd-server (the etcd backend's tests run a real etcd) and
# docker-registry (the OCI registry tests push to and pull from a real registry), when missing,
# and python3's `oras` (the interop test pushes with ORAS). Idempotent; fails loudly when
# something cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo rustup kubectl curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required and is missing" >&2; exit 1; }
done
missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v docker-registry >/dev/null || missing+=(docker-registry)
if ((${#missing[@]})); then
  SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
  echo "==> installing ${missing[*]} (Debian packages)" >&2
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; }
  # Debian starts the packaged etcd as a service on the default ports; the tests run their own.
  for service in etcd docker-registry; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
      $SUDO systemctl stop "$service" || true
    fi
  done
fi
# The OCI interop test pushes with ORAS' Python SDK (PyPI `oras`).
python3 -c 'import oras.client' 2>/dev/null \
  || python3 -m pip install -q --disable-pip-version-check oras==0.2.43 >/dev/null 2>&1 \
  || { echo "error: could not install the oras Python package (pip install oras)" >&2; exit 1; }
# rustup installs a rust-toolchain.toml's targets only when it installs the toolchain itself;
# an already installed toolchain needs them added (run inside wasm-examples/ so the toolchain
# its rust-toolchain.toml names is the one that gets them).
(cd wasm-examples && rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null)
rustup component add rustfmt clippy >/dev/null
