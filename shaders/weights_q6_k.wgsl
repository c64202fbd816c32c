// GGUF's Q6_K (quant/ggml_k.rs): super-blocks of 256 weights, segments of 32 with a scale
// per 16. The host defines SEG (32).
//
// A row's code words: the low 4 bits of the 6-bit codes numbered flat along K (4 words a
// segment), then their top 2 bits sixteen to a word (2 words a segment). Scales: each
// block's 16 signed 8-bit scales as stored (4 words), then the blocks' f16 d, two to a
// word. Weight = d * scale * (code - 32).

const SEG_XSUM: bool = false;

struct Seg {
    low: vec4<u32>,
    high: vec2<u32>,
    a0: f32,  // d * scale of weights 0..15
    a1: f32,  // and of 16..31
}

fn blocks_per_row(k_len: u32) -> u32 {
    return (k_len + 255u) / 256u;
}

fn code_words_per_row(k_len: u32) -> u32 {
    return blocks_per_row(k_len) * 48u;
}

// A signed byte widened.
fn signed_byte(b: u32) -> f32 {
    return f32(bitcast<i32>(b << 24u) >> 24u);
}

fn load_seg(row: u32, s: u32, k_len: u32) -> Seg {
    let blocks = blocks_per_row(k_len);
    let row_words = blocks * 4u + (blocks + 1u) / 2u;
    let j = s % 8u;
    let pair = scales[row * row_words + (s / 8u) * 4u + j / 2u] >> ((j % 2u) * 16u);
    let d = scale_half(row * row_words * 2u + blocks * 8u + s / 8u);
    var seg: Seg;
    seg.low = code_quad(row, s, k_len);
    let high = code_quad(row, blocks * 8u + s / 2u, k_len);
    seg.high = select(high.xy, high.zw, (s & 1u) == 1u);
    seg.a0 = d * signed_byte(pair & 0xffu);
    seg.a1 = d * signed_byte((pair >> 8u) & 0xffu);
    return seg;
}

fn seg_code(seg: Seg, j: u32) -> f32 {
    let low = (seg.low[j / 8u] >> ((j % 8u) * 4u)) & 15u;
    let high = (seg.high[j / 16u] >> ((j % 16u) * 2u)) & 3u;
    return centered(low | (high << 4u), 32.0);
}

fn seg_dot(seg: Seg, x: SegInputs, xsum: f32) -> f32 {
    var acc = vec2<f32>(0.0);
    for (var i = 0u; i < SEG4; i++) {
        let c = vec4<f32>(seg_code(seg, 4u * i), seg_code(seg, 4u * i + 1u),
                          seg_code(seg, 4u * i + 2u), seg_code(seg, 4u * i + 3u));
        acc[i / 4u] += dot(c, x[i]);
    }
    return seg.a0 * acc.x + seg.a1 * acc.y;
}

fn seg_weight(seg: Seg, j: u32) -> f32 {
    return select(seg.a0, seg.a1, j >= 16u) * seg_code(seg, j);
}
