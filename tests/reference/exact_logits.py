#!/usr/bin/env python3
"""An exact forward pass in float64 numpy: a third opinion beside llama.cpp.

llama.cpp's CPU backend rounds activations to 8 bits inside its quantized matmuls. Where a
model's activations have outliers (Gemma 3's final-norm weights reach ~280) or where
its attention is sensitive (the Qwen3 test model's random Q/K norms), that moves
llama.cpp's logits by several units at some steps. This script decodes a GGUF's weights
with gguf-py and runs the architecture's math in float64 over the same token sequences as
a goldens file: the forced text, and each greedy prompt followed by llama.cpp's answer. It
adds, for every position, the exact logits of llama.cpp's top tokens as `exact_logits`.
glim's tests hold glim to these tightly, and to llama.cpp wherever llama.cpp itself is
close to them.

Architectures: qwen2 (Q/K/V biases), qwen3 (per-head Q/K RMSNorm), gemma3 (embeddings x
sqrt(d), Q/K norms, 512-key windows with RoPE base 10 000 on five layers of six, sandwich
norms, GeGLU), phi3 (Q/K/V and gate/up stacked; LongRoPE: the long divisors, as llama.cpp
picks them when its context (1024 in make_goldens.py) passes the original one, and cos
and sin times the attention factor), all with NeoX RoPE (their GGUFs are not permuted).

Run after make_goldens.py:
  python3 tests/reference/exact_logits.py MODEL.gguf goldens-qwen3.json
"""
import json
import os
import sys

import gguf
import numpy as np
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))


class Model:
    def __init__(self, path):
        reader = gguf.GGUFReader(path)
        self.tensors = {t.name: t for t in reader.tensors}
        meta = {k: f.parts[f.data[0]] for k, f in reader.fields.items() if f.data}
        self.arch = bytes(meta["general.architecture"]).decode()
        key = lambda k, default=None: float(meta[f"{self.arch}.{k}"][0]) if f"{self.arch}.{k}" in meta else default
        self.dim, self.layers = int(key("embedding_length")), int(key("block_count"))
        self.heads, self.kv_heads = int(key("attention.head_count")), int(key("attention.head_count_kv"))
        self.head_dim = int(key("attention.key_length", self.dim // self.heads))
        self.eps, self.base = key("attention.layer_norm_rms_epsilon"), key("rope.freq_base", 10_000.0)
        self.window = int(key("attention.sliding_window", 0))
        self.attn_factor = key("rope.scaling.attn_factor", 1.0)
        self.original_context = int(key("rope.scaling.original_context_length", 1 << 30))
        self.cache = {}

    def w(self, name):
        if name not in self.cache:
            t = self.tensors[name]
            self.cache[name] = dequantize(t.data, t.tensor_type).astype(np.float64).reshape([int(d) for d in reversed(t.shape)])
        return self.cache[name]

    def rms(self, v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + self.eps) * w

    def forward(self, ids):
        """Final-normed hidden states of every position, float64."""
        n, hd = len(ids), self.head_dim
        pos = np.arange(n)
        gemma = self.arch == "gemma3"

        # Phi-3's divisors for make_goldens.py's context of 1024.
        divisors = 1.0
        if "rope_factors_long.weight" in self.tensors:
            divisors = self.w("rope_factors_long.weight" if 1024 > self.original_context else "rope_factors_short.weight")

        def rope(v, theta):
            half = hd // 2
            angle = pos[:, None] * (theta ** (-np.arange(half) * 2.0 / hd) / divisors)[None, :]
            c, s = np.cos(angle)[:, None, :] * self.attn_factor, np.sin(angle)[:, None, :] * self.attn_factor
            a, b = v[..., :half], v[..., half:]
            return np.concatenate([a * c - b * s, a * s + b * c], -1)

        x = self.w("token_embd.weight")[ids]
        if gemma:
            x = x * np.sqrt(np.float32(self.dim))
        for layer in range(self.layers):
            p = f"blk.{layer}."
            local = gemma and layer % 6 < 5
            h = self.rms(x, self.w(p + "attn_norm.weight"))
            if self.arch == "phi3":
                qkv = h @ self.w(p + "attn_qkv.weight").T
                q, k, v = np.split(qkv, [self.heads * hd, (self.heads + self.kv_heads) * hd], -1)
            else:
                q, k, v = (h @ self.w(p + f"attn_{t}.weight").T for t in "qkv")
            if self.arch == "qwen2":
                q, k, v = (m + self.w(p + f"attn_{t}.bias") for m, t in zip((q, k, v), "qkv"))
            q, k, v = q.reshape(n, self.heads, hd), k.reshape(n, self.kv_heads, hd), v.reshape(n, self.kv_heads, hd)
            if self.arch in ("qwen3", "gemma3"):
                q, k = self.rms(q, self.w(p + "attn_q_norm.weight")), self.rms(k, self.w(p + "attn_k_norm.weight"))
            theta = 10_000.0 if local else self.base
            q, k = rope(q, theta), rope(k, theta)
            mask = pos[:, None] >= pos[None, :]
            if local:
                mask &= pos[:, None] - pos[None, :] < self.window
            out = np.zeros((n, self.heads, hd))
            for head in range(self.heads):
                kv = head // (self.heads // self.kv_heads)
                scores = np.where(mask, q[:, head] @ k[:, kv].T / np.sqrt(hd), -np.inf)
                probs = np.exp(scores - scores.max(-1, keepdims=True))
                out[:, head] = (probs / probs.sum(-1, keepdims=True)) @ v[:, kv]
            attn = out.reshape(n, self.heads * hd) @ self.w(p + "attn_output.weight").T
            x = x + (self.rms(attn, self.w(p + "post_attention_norm.weight")) if gemma else attn)
            h = self.rms(x, self.w(p + "ffn_norm.weight"))
            if self.arch == "phi3":
                gate, up = np.split(h @ self.w(p + "ffn_up.weight").T, 2, -1)
            else:
                gate, up = h @ self.w(p + "ffn_gate.weight").T, h @ self.w(p + "ffn_up.weight").T
            if gemma:
                act = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3)))
            else:
                act = gate / (1 + np.exp(-gate))
            down = (act * up) @ self.w(p + "ffn_down.weight").T
            x = x + (self.rms(down, self.w(p + "post_ffw_norm.weight")) if gemma else down)
        return self.rms(x, self.w("output_norm.weight"))

    def logits_of(self, hidden, ids):
        head = self.w("output.weight") if "output.weight" in self.tensors else self.w("token_embd.weight")
        return [round(float(v), 4) for v in hidden @ head[ids].T]


def main():
    model = Model(sys.argv[1])
    path = os.path.join(HERE, sys.argv[2])
    goldens = json.load(open(path))
    worst = []
    forced = goldens["forced"]
    hidden = model.forward(forced["ids"])
    forced["exact_logits"] = [model.logits_of(hidden[i], forced["top_ids"][i]) for i in range(len(forced["ids"]))]
    worst += [max(abs(a - b) for a, b in zip(e, l)) for e, l in zip(forced["exact_logits"], forced["top_logits"])]
    for case in goldens["greedy"]:
        fed = case["prompt_ids"] + case["tokens"][:-1]
        hidden = model.forward(fed)
        start = len(case["prompt_ids"]) - 1
        case["exact_logits"] = [model.logits_of(hidden[start + s], ids) for s, ids in enumerate(case["top_ids"])]
        worst += [max(abs(a - b) for a, b in zip(e, l)) for e, l in zip(case["exact_logits"], case["top_logits"])]
    goldens["exact"] = "float64 numpy forward pass of the same weights (exact_logits.py)"
    with open(path, "w") as f:
        json.dump(goldens, f, indent=1)
        f.write("\n")
    print(f"{sys.argv[2]}: exact logits for {len(worst)} positions; llama.cpp differs by up to {max(worst):.3f} (median {np.median(worst):.3f})")


if __name__ == "__main__":
    main()
