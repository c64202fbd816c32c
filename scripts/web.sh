#!/usr/bin/env bash
# The in-browser chat page from a fresh checkout: builds the npm package (web/pkg), fetches
# the default GGUF (the page's first model, run as stored) and writes it as a q4f16 model
# folder too (once, under $GLIM_HOME/models), serves www/, the package and the models
# folder on 127.0.0.1 (with Range requests, as the GGUF loader uses them), and prints the
# URL to open in a browser with WebGPU (Chrome or Edge; Chromium on Linux may need
# --enable-unsafe-webgpu).
#   scripts/web.sh [--port 8765]
set -euo pipefail
cd "$(dirname "$0")/.."
port=8765
if [ "${1:-}" = --port ] && [ -n "${2:-}" ]; then port=$2; fi

scripts/build-web.sh
gguf=$(scripts/fetch-model.sh)
models=$(dirname "$gguf")
folder=$models/SmolLM2-135M-Instruct-q4f16_1
if ! [ -f "$folder/mlc-chat-config.json" ]; then
    cargo build -q --release -p glim-cli
    rm -rf "$folder"
    target/release/glim quantize "$gguf" "$folder" --quant q4f16
fi
echo "web: open the URL below; Ctrl-C stops the server" >&2
exec node scripts/serve.mjs --port "$port" --www www --pkg web/pkg --models "$models"
