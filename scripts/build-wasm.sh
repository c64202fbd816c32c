#!/usr/bin/env bash
# Builds a crate of the workspace for wasm32-unknown-unknown (default: glim-web, which
# builds the engine with it): `scripts/build-wasm.sh [--release|--dev] [crate]`. Uses
# rustup's target where it can be had; otherwise Debian's Rust for the web (rustc-web with
# its library source), building std itself. Output: target/wasm32-unknown-unknown/<profile>/.
set -euo pipefail
cd "$(dirname "$0")/.."
profile_flag=${1:---release}
if [ "$profile_flag" = --dev ]; then profile_flag=""; fi
crate=${2:-glim-web}

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
    || rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
    exec cargo build -p "$crate" --target wasm32-unknown-unknown $profile_flag
fi

echo "build-wasm: rustup has no wasm32 target here; using Debian's rustc-web" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
if ! [ -x /usr/bin/rustc ] || ! dpkg-query -W rust-web-src >/dev/null 2>&1; then
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q rustc-web cargo-web rust-web-src rust-web-llvm lld-22
fi
RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build -p "$crate" \
    --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort $profile_flag
