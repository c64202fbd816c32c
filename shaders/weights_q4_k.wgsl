// GGUF's Q4_K and Q5_K (quant/ggml_k.rs): super-blocks of 256 weights, segments of 32 (a
// sub-block). The host defines SEG (32) and FIFTH_BIT (Q5_K).
//
// A row's code words: 4-bit codes numbered flat along K (4 words a segment), then for Q5_K
// one word of fifth bits per segment (bit j for weight j). Scales: each block's first 16
// bytes as stored, 4 words: f16 d and dmin, then 12 bytes packing eight 6-bit scales and
// eight 6-bit mins (llama.cpp's get_scale_min_k4). Weight = d * scale * code - dmin * min.

const SEG_XSUM: bool = true;

struct Seg {
    low: vec4<u32>,
    fifth: u32,
    a: f32,  // d * scale
    b: f32,  // dmin * min
}

fn blocks_per_row(k_len: u32) -> u32 {
    return (k_len + 255u) / 256u;
}

fn code_words_per_row(k_len: u32) -> u32 {
    return blocks_per_row(k_len) * 8u * (4u + FIFTH_BIT);
}

// Byte i of the 12 scale bytes of the block whose scale words start at `base`.
fn scale_byte(base: u32, i: u32) -> u32 {
    return (scales[base + 1u + i / 4u] >> ((i % 4u) * 8u)) & 0xffu;
}

fn load_seg(row: u32, s: u32, k_len: u32) -> Seg {
    let blocks = blocks_per_row(k_len);
    let base = (row * blocks + s / 8u) * 4u;
    let j = s % 8u;
    var scale: u32;
    var min: u32;
    if (j < 4u) {
        scale = scale_byte(base, j) & 63u;
        min = scale_byte(base, j + 4u) & 63u;
    } else {
        scale = (scale_byte(base, j + 4u) & 15u) | ((scale_byte(base, j - 4u) >> 6u) << 4u);
        min = (scale_byte(base, j + 4u) >> 4u) | ((scale_byte(base, j) >> 6u) << 4u);
    }
    let d = unpack2x16float(scales[base]);
    var seg: Seg;
    seg.low = code_quad(row, s, k_len);
    if (FIFTH_BIT == 1u) {
        seg.fifth = code_word(row, blocks * 32u + s, k_len);
    }
    seg.a = d.x * f32(scale);
    seg.b = d.y * f32(min);
    return seg;
}

fn seg_code(seg: Seg, j: u32) -> f32 {
    var code = (seg.low[j / 8u] >> ((j % 8u) * 4u)) & 15u;
    if (FIFTH_BIT == 1u) {
        code |= ((seg.fifth >> j) & 1u) << 4u;
    }
    return centered(code, 0.0);
}

fn seg_dot(seg: Seg, x: SegInputs, xsum: f32) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < SEG4; i++) {
        let c = vec4<f32>(seg_code(seg, 4u * i), seg_code(seg, 4u * i + 1u),
                          seg_code(seg, 4u * i + 2u), seg_code(seg, 4u * i + 3u));
        acc += dot(c, x[i]);
    }
    return seg.a * acc - seg.b * xsum;
}

fn seg_weight(seg: Seg, j: u32) -> f32 {
    return seg.a * seg_code(seg, j) - seg.b;
}
