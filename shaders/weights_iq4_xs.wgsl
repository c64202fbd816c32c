// GGUF's IQ4_XS (quant/ggml_iq4_xs.rs): super-blocks of 256 weights, segments of 32 with a
// 6-bit scale each, 4-bit codes that index ggml's kvalues_iq4nl grid. The host defines SEG
// (32) and IQ4_GRID0..3 (the grid's signed bytes, four to a word).
//
// A row's code words: the codes numbered flat along K (4 words a segment). Scales: each
// block's first 8 bytes as stored, 2 words: f16 d and the u16 scales_h (2 high bits per
// segment), then scales_l (a nibble per segment). Weight = d * (scale - 32) * kvalues[code].

const SEG_XSUM: bool = false;

struct Seg {
    low: vec4<u32>,
    a: f32,  // d * (scale - 32)
}

fn code_words_per_row(k_len: u32) -> u32 {
    return (k_len + 255u) / 256u * 32u;
}

// kvalues[code], a signed byte of the grid words.
fn grid_value(code: u32) -> f32 {
    let grid = vec4<u32>(IQ4_GRID0, IQ4_GRID1, IQ4_GRID2, IQ4_GRID3);
    return centered(((grid[code / 4u] >> ((code % 4u) * 8u)) & 0xffu) ^ 0x80u, 128.0);
}

fn load_seg(row: u32, s: u32, k_len: u32) -> Seg {
    let blocks = (k_len + 255u) / 256u;
    let base = (row * blocks + s / 8u) * 2u;
    let ib = s % 8u;
    let low = (scales[base + 1u] >> (4u * ib)) & 15u;
    let high = (scales[base] >> (16u + 2u * ib)) & 3u;
    var seg: Seg;
    seg.low = code_quad(row, s, k_len);
    seg.a = unpack2x16float(scales[base]).x * (f32(low | (high << 4u)) - 32.0);
    return seg;
}

fn seg_code(seg: Seg, j: u32) -> f32 {
    return grid_value((seg.low[j / 8u] >> ((j % 8u) * 4u)) & 15u);
}

fn seg_dot(seg: Seg, x: SegInputs, xsum: f32) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < SEG4; i++) {
        let c = vec4<f32>(seg_code(seg, 4u * i), seg_code(seg, 4u * i + 1u),
                          seg_code(seg, 4u * i + 2u), seg_code(seg, 4u * i + 3u));
        acc += dot(c, x[i]);
    }
    return seg.a * acc;
}

fn seg_weight(seg: Seg, j: u32) -> f32 {
    return seg.a * seg_code(seg, j);
}
