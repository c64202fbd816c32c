#!/usr/bin/env bash
# The browser proof, from a fresh checkout: builds the npm package and checks it as a user
# gets it (npm pack, Node import, tsc), asks `glim run` for the greedy answer to a prompt
# from the default GGUF, then drives the www/ chat page in headless Chromium (WebGPU on
# SwiftShader: no shader-f16, so f32 activations, and `glim run` is asked at f32 too; slow,
# so few tokens) through the worker engine: the page loads the GGUF by URL and streams the
# same answer, and a reload loads the weights from Cache Storage without one weight request
# reaching the server. Then a model folder of another architecture in the same page: the
# default model's weights in Phi-3's layout (`glim synth --arch phi3`: fused Q/K/V,
# LongRoPE, MLC's Phi-3 names) written by `glim quantize`, the same answer as `glim run`.
# Last, tests/browser/gguf-e2e.mjs checks GGUF URLs through the package's API: a download
# cut off and resumed, a reload, the cache API, a split model, bad files, a server without
# Range, and an answer held to a JSON Schema (`response_format`) as `glim run --json-schema`
# gives it.
# Artifacts (screenshot, server logs, expected answers): target/browser-test/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/browser-test
models=$out/models
model_id=SmolLM2-135M-Instruct-Q4_1
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
gguf_name=$(basename "$gguf")
rm -rf "$models" && mkdir -p "$models"
ln -s "$(realpath "$gguf")" "$models/$gguf_name"
export GLIM_PRECISION=f32
target/debug/glim run "$gguf" -p "$prompt" --temperature 0 -n 8 > "$out/expected.txt"
echo "test-browser: glim run answers: $(cat "$out/expected.txt")" >&2
raw_prompt="The first printing press in Europe was built by"
target/debug/glim run "$gguf" --raw -p "$raw_prompt" --temperature 0 -n 6 > "$out/expected-raw.txt"
echo "test-browser: glim run continues: $(cat "$out/expected-raw.txt")" >&2
schema=tests/browser/capital.schema.json
schema_prompt="France's capital city as JSON:"
target/debug/glim run "$gguf" --raw -p "$schema_prompt" --temperature 0 -n 24 --json-schema "$schema" \
    > "$out/expected-json.txt"
echo "test-browser: glim run answers in JSON: $(cat "$out/expected-json.txt")" >&2
target/debug/glim synth "$out/phi3.gguf" --from "$gguf" --arch phi3
target/debug/glim quantize "$out/phi3.gguf" "$models/$phi3_id" --quant q4f16
rm "$out/phi3.gguf"
target/debug/glim run "$models/$phi3_id" -p "$prompt" --temperature 0 -n 8 > "$out/expected-phi3.txt"
echo "test-browser: glim run answers as Phi-3: $(cat "$out/expected-phi3.txt")" >&2
# The page's model list, for this models folder (scripts/serve.mjs serves it as models.json).
cat > "$models/models.json" <<JSON
[
  { "id": "$model_id", "name": "SmolLM2 135M Instruct (GGUF Q4_1)", "url": "models/$gguf_name", "size": "98 MB" },
  { "id": "$phi3_id", "name": "SmolLM2 135M in Phi-3's layout (q4f16_1)", "url": "models/$phi3_id/", "size": "76 MB" }
]
JSON
# For gguf-e2e.mjs: the default GGUF split in three parts, and files that are no model glim
# runs: an HTML page, and the default GGUF with another architecture's name.
mkdir -p "$models/split"
target/debug/glim split "$gguf" "$models/split/SmolLM2" --parts 3
printf '<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n' > "$models/not-a-model.gguf"
python3 - "$gguf" "$models/unknown-arch.gguf" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
key = b"general.architecture"
at = data.index(struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, 5) + b"llama")
end = at + 8 + len(key) + 12
open(sys.argv[2], "wb").write(data[:end] + b"mamba" + data[end + 5:])
PY

servers=()
trap 'kill "${servers[@]}" 2>/dev/null || true' EXIT
# Starts scripts/serve.mjs with a log NAME.log and the given options; sets $url.
serve() {
    local name=$1
    shift
    : > "$out/$name.log"
    node scripts/serve.mjs --port 0 --pkg web/pkg --models "$models" --log "$out/$name.log" "$@" \
        > "$out/$name.out" 2>&1 &
    servers+=($!)
    for _ in $(seq 50); do
        if grep -q '^serving ' "$out/$name.out"; then break; fi
        sleep 0.1
    done
    url=$(sed -n 's/^serving //p' "$out/$name.out" | head -1)
    if [ -z "$url" ]; then
        cat "$out/$name.out" >&2
        exit 1
    fi
}

serve requests --www www
node tests/browser/chat-e2e.mjs \
    --url "${url}?model=$model_id&temperature=0&max_tokens=8&autoload=1" \
    --log "$out/requests.log" --prompt "$prompt" --expected "$out/expected.txt" \
    --screenshot "$out/chat.png" --also "$phi3_id=$out/expected-phi3.txt"

# The cut falls in the middle of the file, in the middle of a chunk.
size=$(stat -L -c %s "$gguf")
cut_at=$((size / 2 + 12345))
serve ranged --www tests/browser/page --cut-at "$cut_at"
ranged=$url
serve plain --www tests/browser/page --ranges no
node tests/browser/gguf-e2e.mjs --ranged "$ranged" --ranged-log "$out/ranged.log" --cut-at "$cut_at" \
    --plain "$url" --plain-log "$out/plain.log" --model "models/$gguf_name" --size "$size" \
    --prompt "$raw_prompt" --tokens 6 --expected "$out/expected-raw.txt" \
    --schema "$schema" --schema-prompt "$schema_prompt" --schema-expected "$out/expected-json.txt" \
    --split models/split/SmolLM2-00001-of-00003.gguf \
    --bad "missing.gguf=HTTP 404" --bad "not-a-model.gguf=not a GGUF file" \
    --bad "unknown-arch.gguf=model architecture \`mamba\`"
