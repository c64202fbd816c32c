// MLC's group-quantized formats, q4f16_1 and q3f16_1, and GGUF's Q4_0 (the same layout with
// zero point 8; see quant/mlc_group.rs). The host defines SEG (the group size), BITS,
// CODES_PER_WORD and ZERO_CODE.
//
// A group is a segment: its codes are 4 words, CODES_PER_WORD to a word, lowest bits first
// (weight j in word j / CODES_PER_WORD), and one f16 scale, scale unit row * groups + g.
// Weight = (code - ZERO_CODE) * scale.

const SEG_XSUM: bool = false;

struct Seg {
    words: vec4<u32>,
    scale: f32,
}

fn code_words_per_row(k_len: u32) -> u32 {
    return segs_per_row(k_len) * 4u;
}

fn load_seg(row: u32, s: u32, k_len: u32) -> Seg {
    return Seg(code_quad(row, s, k_len), scale_half(row * segs_per_row(k_len) + s));
}

fn seg_code(seg: Seg, j: u32) -> f32 {
    let word = seg.words[j / CODES_PER_WORD];
    return centered((word >> ((j % CODES_PER_WORD) * BITS)) & ((1u << BITS) - 1u), f32(ZERO_CODE));
}

fn seg_dot(seg: Seg, x: SegInputs, xsum: f32) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < SEG4; i++) {
        let c = vec4<f32>(seg_code(seg, 4u * i), seg_code(seg, 4u * i + 1u),
                          seg_code(seg, 4u * i + 2u), seg_code(seg, 4u * i + 3u));
        acc += dot(c, x[i]);
    }
    return seg.scale * acc;
}

fn seg_weight(seg: Seg, j: u32) -> f32 {
    return seg_code(seg, j) * seg.scale;
}
