#!/usr/bin/env bash
# glim's npm package beside wllama in the same headless Chromium, on the same GGUF: builds
# the package, installs wllama (benches/browser/package-lock.json), serves the page, the
# package and the model on 127.0.0.1 and runs benches/browser/run.mjs, which prints load
# time, prefill and decode tokens/s per round, medians and glim/wllama ratios.
#   benches/browser.sh [MODEL.gguf] [run.mjs options: --rounds 3 --gen 16 --context 1024 ...]
# MODEL defaults to the default model (scripts/fetch-model.sh). Chromium: /usr/bin/chromium,
# or $CHROMIUM (a desktop Chromium or Chrome with a GPU gives the comparison on that GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
model=""
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then model=$1; shift; fi
model=${model:-$(scripts/fetch-model.sh)}
[ -f "$model" ] || { echo "browser bench: no model at $model" >&2; exit 1; }

scripts/build-web.sh
(cd benches/browser && npm ci --silent --no-audit --no-fund)
out=target/browser-bench
rm -rf "$out" && mkdir -p "$out/models"
ln -s "$(realpath "$model")" "$out/models/$(basename "$model")"
node scripts/serve.mjs --port 0 --www benches/browser --pkg web/pkg --models "$out/models" > "$out/serve.out" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    if grep -q '^serving ' "$out/serve.out"; then break; fi
    sleep 0.1
done
url=$(sed -n 's/^serving //p' "$out/serve.out" | head -1)
[ -n "$url" ] || { cat "$out/serve.out" >&2; exit 1; }
node benches/browser/run.mjs --url "$url" --model "models/$(basename "$model")" "$@" | tee "$out/result.txt"
