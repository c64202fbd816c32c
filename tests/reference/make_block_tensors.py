#!/usr/bin/env python3
"""Writes block_tensors.gguf: one small matrix in each GGML type glim runs, and beside it
(as `<type>.f32`) the values the PyPI `gguf` package (llama.cpp's own gguf-py) decodes it
to. glim's tests check its CPU decoders and its GPU weight formats against these values
bit for bit: an implementation of ggml's block layouts that is not glim's.

The legacy types, BF16 and F16 are quantized by gguf-py from random normal weights; for
the k-quants and the IQ4 types (gguf-py decodes but does not encode them) the blocks are
random bytes with their f16 scales set to sane magnitudes, so every code and scale bit
pattern is exercised.

Run once and commit the output (CI does not run it):
    python3 -m venv /tmp/gg && /tmp/gg/bin/pip install gguf==0.19.0 numpy
    /tmp/gg/bin/python tests/reference/make_block_tensors.py
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS, COLS = 3, 512
ENCODED = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16, T.F16]
# Byte offsets of each random-block type's f16 fields (d, dmin).
HALF_FIELDS = {
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
}


def random_blocks(rng, qtype):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = ROWS * COLS // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    # Scales of 2^-14..2^-12 for k-quants (their sub-block scales multiply by up to 63),
    # 2^-8..2^-6 for blocks of 32: weights of about 1 at most.
    k_quant = block == 256
    for at in HALF_FIELDS[qtype]:
        d = rng.uniform(1.0, 4.0, size=n_blocks) * rng.choice([-1.0, 1.0], size=n_blocks)
        d /= 16384.0 if k_quant else 256.0
        raw[:, at:at + 2] = d.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(ROWS, -1)


def main():
    rng = np.random.default_rng(20261205)
    out = os.path.join(HERE, "block_tensors.gguf")
    writer = gguf.GGUFWriter(out, "glim-block-tensors")
    writer.add_description("One matrix per GGML type and gguf-py's decoding of it")
    for qtype in ENCODED + list(HALF_FIELDS):
        if qtype in HALF_FIELDS:
            raw = random_blocks(rng, qtype)
        else:
            weights = rng.standard_normal((ROWS, COLS)).astype(np.float32)
            raw = quants.quantize(weights, qtype)
        values = quants.dequantize(raw, qtype).astype(np.float32)
        assert values.shape == (ROWS, COLS), (qtype.name, values.shape)
        writer.add_tensor(qtype.name, raw, raw_dtype=qtype)
        writer.add_tensor(qtype.name + ".f32", values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
