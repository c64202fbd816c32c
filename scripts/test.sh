#!/usr/bin/env bash
# glim's whole test suite, from a fresh Debian machine: installs lavapipe when there is no
# GPU driver, checks formatting and lints, builds the engine for wasm32, then runs every
# test on the first Vulkan/Metal/DX12 adapter (GLIM_ADAPTER / GLIM_BACKEND pick another).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" = Linux ]; then
    scripts/install-lavapipe.sh
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/build-wasm.sh
cargo test --workspace
