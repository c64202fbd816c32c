#!/usr/bin/env bash
# glim serve's proofs outside cargo: the official `openai` Python client against the server
# (native/tests/openai_client.py, in a throwaway venv with openai from PyPI), then a short
# run of the load test (benches/load_test.py: concurrent streams, some leaving early, every
# answer checked against its one-at-a-time reference). Uses GLIM (default target/debug/glim,
# which `cargo test` builds) and the default model.
set -euo pipefail
cd "$(dirname "$0")/.."

glim=${GLIM:-target/debug/glim}
[ -x "$glim" ] || cargo build -p glim-cli
model=$(scripts/fetch-model.sh)

venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 leaves venv (ensurepip) to a package of its own.
    sudo_=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo_ apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check openai==3.57.0 jsonschema==4.25.1
"$venv/bin/python" native/tests/openai_client.py "$glim" "$model"

python3 benches/load_test.py "$model" --glim "$glim" --clients 8 --requests 12 \
    --max-tokens 12 --prompts 4 --parallel 4 --time-limit 600
