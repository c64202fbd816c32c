// GGUF's blocks of 32 (quant/ggml_legacy.rs): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL. The
// host defines SEG (32), LOW_BITS (4, or 8 for Q8_0), FIFTH_BIT, HAS_MIN, ZERO_CODE, GRID
// (IQ4_NL) and IQ4_GRID0..3 (ggml's kvalues_iq4nl, signed bytes four to a word).
//
// A block is a segment. A row's code words: the low plane, LOW_BITS-bit codes numbered
// flat along K (4 words a block, 8 for Q8_0's signed bytes), then for Q5_* one word of
// fifth bits per block (bit j for weight j), padded to a whole quad. Scales: the block's
// f16 d (scale unit row * blocks + b), or d and m as one word (word row * blocks + b).
// Weight = (code - ZERO_CODE) * d, or code * d + m, or kvalues[code] * d; Q8_0's bytes
// are signed.

const SEG_XSUM: bool = HAS_MIN == 1u;
const LOW_WORDS: u32 = SEG * LOW_BITS / 32u;  // per block

struct Seg {
    low: vec4<u32>,
    low2: vec4<u32>,  // Q8_0's second quad
    fifth: u32,
    d: f32,
    m: f32,
}

fn code_words_per_row(k_len: u32) -> u32 {
    let blocks = segs_per_row(k_len);
    var words = blocks * LOW_WORDS;
    if (FIFTH_BIT == 1u) {
        words += (blocks + 3u) / 4u * 4u;
    }
    return words;
}

fn load_seg(row: u32, s: u32, k_len: u32) -> Seg {
    let blocks = segs_per_row(k_len);
    var seg: Seg;
    seg.low = code_quad(row, s * (LOW_WORDS / 4u), k_len);
    if (LOW_BITS == 8u) {
        seg.low2 = code_quad(row, s * 2u + 1u, k_len);
    }
    if (FIFTH_BIT == 1u) {
        seg.fifth = code_word(row, blocks * LOW_WORDS + s, k_len);
    }
    if (HAS_MIN == 1u) {
        let dm = unpack2x16float(scales[row * blocks + s]);
        seg.d = dm.x;
        seg.m = dm.y;
    } else {
        seg.d = scale_half(row * blocks + s);
    }
    return seg;
}

// IQ4_NL's kvalues[code], a signed byte of the grid words.
fn grid_value(code: u32) -> f32 {
    let grid = vec4<u32>(IQ4_GRID0, IQ4_GRID1, IQ4_GRID2, IQ4_GRID3);
    return centered(((grid[code / 4u] >> ((code % 4u) * 8u)) & 0xffu) ^ 0x80u, 128.0);
}

// Weight j's code less the zero point (or its grid value).
fn seg_code(seg: Seg, j: u32) -> f32 {
    if (LOW_BITS == 8u) {
        let word = select(seg.low[(j / 4u) % 4u], seg.low2[(j / 4u) % 4u], j >= 16u);
        // A signed byte b is the unsigned (b ^ 0x80) less 128.
        return centered(((word >> ((j % 4u) * 8u)) & 0xffu) ^ 0x80u, 128.0);
    }
    var code = (seg.low[j / 8u] >> ((j % 8u) * 4u)) & 15u;
    if (FIFTH_BIT == 1u) {
        code |= ((seg.fifth >> j) & 1u) << 4u;
    }
    if (GRID == 1u) {
        return grid_value(code);
    }
    return centered(code, f32(ZERO_CODE));
}

fn seg_dot(seg: Seg, x: SegInputs, xsum: f32) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < SEG4; i++) {
        let c = vec4<f32>(seg_code(seg, 4u * i), seg_code(seg, 4u * i + 1u),
                          seg_code(seg, 4u * i + 2u), seg_code(seg, 4u * i + 3u));
        acc += dot(c, x[i]);
    }
    if (HAS_MIN == 1u) {
        return seg.d * acc + seg.m * xsum;
    }
    return seg.d * acc;
}

fn seg_weight(seg: Seg, j: u32) -> f32 {
    if (HAS_MIN == 1u) {
        return seg_code(seg, j) * seg.d + seg.m;
    }
    return seg_code(seg, j) * seg.d;
}
