#!/usr/bin/env python3
"""Records llama.cpp's behaviour on glim's default model, for glim's golden tests.

Uses llama.cpp through llama-cpp-python (`pip install llama-cpp-python`) on the same GGUF
glim loads. Writes goldens.json next to this script:
  - greedy: for each raw prompt, its token ids, llama.cpp's 32 greedy tokens, and at each
    step the margin between the top two logits (so a test can tell a near-tie from a bug)
    and the top TOP_K logits with their ids (a test feeds glim llama.cpp's tokens and
    compares every step, through the decode kernels, one sequence and several at once);
  - forced: the ids of text.txt and llama.cpp's top-1 prediction (with margin and the top
    TOP_K logits) after every position, for teacher-forced agreement;
  - perplexity: llama-perplexity's chunked perplexity of text.txt at a small context,
    computed from the same logits (chunks of `ctx`, BOS first when the model adds one,
    second half of each chunk scored).

Run: python3 tests/reference/make_goldens.py [MODEL.gguf]
The default model's weights in the Qwen2, Qwen3 and Phi-3 layouts (see `glim synth --from`;
exact_logits.py then adds the float64 logits):
  glim synth /tmp/qwen2.gguf --from SmolLM2-135M-Instruct.Q4_1.gguf --arch qwen2
  python3 tests/reference/make_goldens.py /tmp/qwen2.gguf --out goldens-qwen2.json
For another family's model, without the greedy prompts, over a longer text (one pass, its
perplexity from those logits):
  python3 tests/reference/make_goldens.py MODEL.gguf --out goldens-gemma3.json \
      --text text-long.txt --no-prompts
"""
import argparse
import json
import math
import os
import sys

import numpy as np
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(
    os.environ.get("GLIM_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "glim"),
    "models",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)
PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little",
    "def fibonacci(n):\n",
    "The three primary colors are",
    "Water boils at a temperature of",
    "In 1969, the first humans to walk on the Moon were",
]
STEPS = 32
PPL_CTX = 128
TOP_K = 8


def top2(logits):
    order = np.argsort(-logits, kind="stable")[:2]
    return int(order[0]), float(logits[order[0]] - logits[order[1]])


def top_k(logits):
    order = np.argsort(-logits, kind="stable")[:TOP_K]
    return [int(i) for i in order], [round(float(logits[i]), 4) for i in order]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    ap.add_argument("--out", default="goldens.json")
    ap.add_argument("--text", default="text.txt")
    ap.add_argument("--no-prompts", action="store_true")
    args = ap.parse_args()
    model_path = args.model
    llm = Llama(model_path=model_path, n_ctx=1024, n_batch=512, logits_all=True, n_threads=os.cpu_count(), seed=0, verbose=False)
    import llama_cpp
    import hashlib
    with open(model_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    out = {"model": os.path.basename(model_path), "model_sha256": sha,
           "peer": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
           "greedy": [], "forced": {}, "perplexity": {}}

    for prompt in [] if args.no_prompts else PROMPTS:
        ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        tokens, margins, top_ids, top_logits = [], [], [], []
        for _ in range(STEPS):
            row = np.array(llm.scores[llm.n_tokens - 1])
            token, margin = top2(row)
            tokens.append(token)
            margins.append(margin)
            k_ids, k_logits = top_k(row)
            top_ids.append(k_ids)
            top_logits.append(k_logits)
            llm.eval([token])
        out["greedy"].append({"prompt": prompt, "prompt_ids": ids, "tokens": tokens, "margins": margins,
                              "top_ids": top_ids, "top_logits": top_logits,
                              "text": llm.detokenize(tokens).decode("utf-8", errors="replace")})

    text = open(os.path.join(HERE, args.text), encoding="utf-8").read()
    ids = llm.tokenize(text.encode(), add_bos=True, special=False)
    llm.reset()
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)])
    preds = [top2(row) for row in scores]
    tops = [top_k(row) for row in scores]
    out["forced"] = {"ids": ids, "top1": [p[0] for p in preds], "margins": [p[1] for p in preds],
                     "top_ids": [t[0] for t in tops], "top_logits": [t[1] for t in tops]}
    # Perplexity of the whole text in this one pass (past a sliding window, where chunks of
    # PPL_CTX never reach).
    rows = scores.astype(np.float64)
    nll = [float(r.max() + math.log(np.exp(r - r.max()).sum()) - r[ids[j + 1]]) for j, r in enumerate(rows[:-1])]
    out["forced"]["ppl"] = math.exp(sum(nll) / len(nll))

    add_bos = llm.tokenize(b"a", add_bos=True, special=False)[0] == llm.token_bos()
    total, count = 0.0, 0
    for c in range(len(ids) // PPL_CTX):
        chunk = list(ids[c * PPL_CTX:(c + 1) * PPL_CTX])
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[:PPL_CTX], dtype=np.float64)
        for j in range(PPL_CTX // 2, PPL_CTX - 1):
            row = logits[j]
            m = row.max()
            total += m + math.log(np.exp(row - m).sum()) - row[ids[c * PPL_CTX + j + 1]]
            count += 1
    out["perplexity"] = {"ctx": PPL_CTX, "bos": add_bos, "scored": count, "ppl": math.exp(total / count)}

    with open(os.path.join(HERE, args.out), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {len(out['greedy'])} prompts, {len(ids)} forced tokens, ppl {out['perplexity']['ppl']:.3f}")


if __name__ == "__main__":
    main()
