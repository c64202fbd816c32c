// GGUF's Q2_K and Q3_K (quant/ggml_k16.rs): super-blocks of 256 weights, segments of 32
// with a scale per 16. The host defines SEG (32) and THIRD_BIT (Q3_K).
//
// A row's code words: the low 2 bits of the codes numbered flat along K (2 words a
// segment), then for Q3_K their third bits (hmask) 32 to a word (a word a segment).
// Scales, Q2_K: each block's 16 scale bytes (scale in the low nibble, min in the high) and
// its f16 d and dmin, 5 words; weight = d * scale * code - dmin * min. Q3_K: each block's
// 12 bytes packing sixteen 6-bit scales (3 words), then the blocks' f16 d, two to a word;
// weight = d * (scale - 32) * (code - 4).

const SEG_XSUM: bool = false;

struct Seg {
    low: vec2<u32>,
    third: u32,
    a0: f32,  // d * scale of weights 0..15
    a1: f32,  // and of 16..31
    b0: f32,  // dmin * min of weights 0..15 (Q2_K)
    b1: f32,  // and of 16..31
}

fn blocks_per_row(k_len: u32) -> u32 {
    return (k_len + 255u) / 256u;
}

fn code_words_per_row(k_len: u32) -> u32 {
    return blocks_per_row(k_len) * (16u + 8u * THIRD_BIT);
}

// Byte i of the scale words from word `base` on.
fn scale_byte(base: u32, i: u32) -> u32 {
    return (scales[base + i / 4u] >> ((i % 4u) * 8u)) & 0xffu;
}

// Q3_K's 6-bit scale t (0..16) of the block whose 12 scale bytes start at word `base`
// (llama.cpp's kmask unpacking): low 4 bits in nibble t / 8 of byte t % 8, high 2 bits at
// bit 2 * (t / 4) of byte 8 + t % 4.
fn scale_k3(base: u32, t: u32) -> f32 {
    let low = (scale_byte(base, t % 8u) >> (4u * (t / 8u))) & 15u;
    let high = (scale_byte(base, 8u + t % 4u) >> (2u * (t / 4u))) & 3u;
    return f32(low | (high << 4u)) - 32.0;
}

fn load_seg(row: u32, s: u32, k_len: u32) -> Seg {
    let blocks = blocks_per_row(k_len);
    let t = (s % 8u) * 2u;  // the segment's first scale in its block
    var seg: Seg;
    let low = code_quad(row, s / 2u, k_len);
    seg.low = select(low.xy, low.zw, (s & 1u) == 1u);
    if (THIRD_BIT == 1u) {
        seg.third = code_word(row, blocks * 16u + s, k_len);
        let row_words = blocks * 3u + (blocks + 1u) / 2u;
        let base = row * row_words + (s / 8u) * 3u;
        let d = scale_half(row * row_words * 2u + blocks * 6u + s / 8u);
        seg.a0 = d * scale_k3(base, t);
        seg.a1 = d * scale_k3(base, t + 1u);
    } else {
        let base = (row * blocks + s / 8u) * 5u;
        let dm = unpack2x16float(scales[base + 4u]);
        let sc0 = scale_byte(base, t);
        let sc1 = scale_byte(base, t + 1u);
        seg.a0 = dm.x * f32(sc0 & 15u);
        seg.a1 = dm.x * f32(sc1 & 15u);
        seg.b0 = dm.y * f32(sc0 >> 4u);
        seg.b1 = dm.y * f32(sc1 >> 4u);
    }
    return seg;
}

fn seg_code(seg: Seg, j: u32) -> f32 {
    let low = (seg.low[j / 16u] >> ((j % 16u) * 2u)) & 3u;
    if (THIRD_BIT == 1u) {
        return centered(low | (((seg.third >> j) & 1u) << 2u), 4.0);
    }
    return centered(low, 0.0);
}

fn seg_dot(seg: Seg, x: SegInputs, xsum: f32) -> f32 {
    var acc = vec2<f32>(0.0);
    var xs = vec2<f32>(0.0);
    for (var i = 0u; i < SEG4; i++) {
        let c = vec4<f32>(seg_code(seg, 4u * i), seg_code(seg, 4u * i + 1u),
                          seg_code(seg, 4u * i + 2u), seg_code(seg, 4u * i + 3u));
        acc[i / 4u] += dot(c, x[i]);
        if (THIRD_BIT == 0u) {
            xs[i / 4u] += dot(vec4<f32>(1.0), x[i]);
        }
    }
    if (THIRD_BIT == 1u) {
        return seg.a0 * acc.x + seg.a1 * acc.y;
    }
    return (seg.a0 * acc.x - seg.b0 * xs.x) + (seg.a1 * acc.y - seg.b1 * xs.y);
}

fn seg_weight(seg: Seg, j: u32) -> f32 {
    let hi = j >= 16u;
    if (THIRD_BIT == 1u) {
        return select(seg.a0, seg.a1, hi) * seg_code(seg, j);
    }
    return select(seg.a0, seg.a1, hi) * seg_code(seg, j) - select(seg.b0, seg.b1, hi);
}
