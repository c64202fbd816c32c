#!/usr/bin/env python3
"""An exact forward pass of Gemma 3 in float64 numpy, a third opinion beside llama.cpp.

llama.cpp's CPU backend rounds activations to 8 bits inside its quantized matmuls; on
Gemma 3 270M (final-norm weights up to ~280, so outlying activations) that moves its
logits by up to ~1.8 where a model's logits are exact to the weights. This script decodes
the same GGUF's weights with gguf-py, runs the model's math in float64 (embeddings x
sqrt(d), per-head Q/K RMSNorm, NeoX RoPE with base 10 000 on the sliding-window layers and
the file's base on every sixth, 512-key windows, sandwich norms, GeGLU) over the forced
text of goldens-gemma3.json, and adds each position's logits of llama.cpp's top tokens as
`exact_logits`. glim's test holds glim to these tightly and to llama.cpp loosely.

Run after make_goldens.py:
  python3 tests/reference/exact_gemma3.py gemma-3-270m-q4_k_m.gguf
"""
import json
import os
import sys

import gguf
import numpy as np
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDENS = os.path.join(HERE, "goldens-gemma3.json")


def main():
    reader = gguf.GGUFReader(sys.argv[1])
    tensors = {t.name: t for t in reader.tensors}
    meta = {k: f.parts[f.data[0]] for k, f in reader.fields.items() if f.data}

    def weight(name):
        t = tensors[name]
        return dequantize(t.data, t.tensor_type).astype(np.float64).reshape([int(d) for d in reversed(t.shape)])

    def key(k):
        return float(meta["gemma3." + k][0])

    dim, n_layers = int(key("embedding_length")), int(key("block_count"))
    n_heads, n_kv, hd = int(key("attention.head_count")), int(key("attention.head_count_kv")), int(key("attention.key_length"))
    eps, window, base = key("attention.layer_norm_rms_epsilon"), int(key("attention.sliding_window")), key("rope.freq_base")
    goldens = json.load(open(GOLDENS))
    forced = goldens["forced"]
    ids = forced["ids"]
    n = len(ids)
    pos = np.arange(n)

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    def rope(v, theta):
        half = hd // 2
        angle = pos[:, None] * theta ** (-np.arange(half) * 2.0 / hd)[None, :]
        c, s = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        a, b = v[..., :half], v[..., half:]
        return np.concatenate([a * c - b * s, a * s + b * c], -1)

    embed = weight("token_embd.weight")
    x = embed[ids] * np.sqrt(np.float32(dim))
    for layer in range(n_layers):
        p = f"blk.{layer}."
        local = layer % 6 < 5
        h = rms(x, weight(p + "attn_norm.weight"))
        q = rms((h @ weight(p + "attn_q.weight").T).reshape(n, n_heads, hd), weight(p + "attn_q_norm.weight"))
        k = rms((h @ weight(p + "attn_k.weight").T).reshape(n, n_kv, hd), weight(p + "attn_k_norm.weight"))
        v = (h @ weight(p + "attn_v.weight").T).reshape(n, n_kv, hd)
        theta = 10_000.0 if local else base
        q, k = rope(q, theta), rope(k, theta)
        mask = pos[:, None] >= pos[None, :]
        if local:
            mask &= pos[:, None] - pos[None, :] < window
        out = np.zeros((n, n_heads, hd))
        for head in range(n_heads):
            kv = head // (n_heads // n_kv)
            scores = np.where(mask, q[:, head] @ k[:, kv].T / np.sqrt(hd), -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            out[:, head] = (probs / probs.sum(-1, keepdims=True)) @ v[:, kv]
        attn = out.reshape(n, n_heads * hd) @ weight(p + "attn_output.weight").T
        x = x + rms(attn, weight(p + "post_attention_norm.weight"))
        h = rms(x, weight(p + "ffn_norm.weight"))
        gate, up = h @ weight(p + "ffn_gate.weight").T, h @ weight(p + "ffn_up.weight").T
        gelu = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3)))
        x = x + rms((gelu * up) @ weight(p + "ffn_down.weight").T, weight(p + "post_ffw_norm.weight"))
    h = rms(x, weight("output_norm.weight"))
    exact = []
    for i in range(n):
        row = h[i] @ embed[forced["top_ids"][i]].T
        exact.append([round(float(v), 4) for v in row])
    forced["exact_logits"] = exact
    delta = [max(abs(a - b) for a, b in zip(e, l)) for e, l in zip(exact, forced["top_logits"])]
    goldens["exact"] = "float64 numpy forward pass of the same weights (exact_gemma3.py)"
    with open(GOLDENS, "w") as f:
        json.dump(goldens, f, indent=1)
        f.write("\n")
    print(f"exact logits for {n} positions; llama.cpp differs by up to {max(delta):.3f} (median {np.median(delta):.3f})")


if __name__ == "__main__":
    main()
