#!/usr/bin/env bash
# The browser proof, from a fresh checkout: builds the npm package and checks it as a user
# gets it (npm pack, Node import, tsc), writes the default model as a q4f16 folder, asks
# `glim run` for the greedy answer to a prompt, then drives the www/ chat page in headless
# Chromium (WebGPU on SwiftShader: f32 kernels, slow, so few tokens) through the worker
# engine and checks the page streams the same answer, and that a reload loads the weights
# from Cache Storage without one shard request reaching the server. Then another
# architecture in the same page: the default model's weights in Phi-3's layout (`glim synth
# --arch phi3`: fused Q/K/V, LongRoPE, MLC's Phi-3 names), the same answer as `glim run`.
# Artifacts (screenshot, server log, expected answer): target/browser-test/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/browser-test
models=$out/models
model_id=SmolLM2-135M-Instruct-q4f16_1
phi3_id=SmolLM2-135M-as-Phi3-q4f16_1
prompt="What is the capital of France?"
mkdir -p "$out"

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
if ! [ -x /usr/bin/chromium ]; then
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium
fi

scripts/build-web.sh
tests/package/check.sh
node --test www/markdown.test.mjs
(cd tests/browser && npm ci --silent --no-audit --no-fund)

cargo build -q -p glim-cli
gguf=$(scripts/fetch-model.sh)
rm -rf "$models" && mkdir -p "$models"
target/debug/glim quantize "$gguf" "$models/$model_id" --quant q4f16
target/debug/glim run "$models/$model_id" -p "$prompt" --temperature 0 -n 8 > "$out/expected.txt"
echo "test-browser: glim run answers: $(cat "$out/expected.txt")" >&2
target/debug/glim synth "$out/phi3.gguf" --from "$gguf" --arch phi3
target/debug/glim quantize "$out/phi3.gguf" "$models/$phi3_id" --quant q4f16
rm "$out/phi3.gguf"
target/debug/glim run "$models/$phi3_id" -p "$prompt" --temperature 0 -n 8 > "$out/expected-phi3.txt"
echo "test-browser: glim run answers as Phi-3: $(cat "$out/expected-phi3.txt")" >&2
# The page's model list, for this models folder (scripts/serve.mjs serves it as models.json).
cat > "$models/models.json" <<JSON
[
  { "id": "$model_id", "name": "SmolLM2 135M Instruct (q4f16_1)", "url": "models/$model_id/" },
  { "id": "$phi3_id", "name": "SmolLM2 135M in Phi-3's layout (q4f16_1)", "url": "models/$phi3_id/" }
]
JSON

: > "$out/requests.log"
node scripts/serve.mjs --port 0 --www www --pkg web/pkg --models "$models" --log "$out/requests.log" \
    > "$out/serve.out" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    if grep -q '^serving ' "$out/serve.out"; then break; fi
    sleep 0.1
done
url=$(sed -n 's/^serving //p' "$out/serve.out" | head -1)
if [ -z "$url" ]; then
    cat "$out/serve.out" >&2
    exit 1
fi

node tests/browser/chat-e2e.mjs \
    --url "${url}?model=$model_id&temperature=0&max_tokens=8&autoload=1" \
    --log "$out/requests.log" --prompt "$prompt" --expected "$out/expected.txt" \
    --screenshot "$out/chat.png" --also "$phi3_id=$out/expected-phi3.txt"
