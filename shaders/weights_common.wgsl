// The weight bindings every format reads, and what the format files build on. A weight
// format (quant/ in the engine) is one of the weights_*.wgsl files appended after this
// one; the host defines SEG, the weights per segment, with the format's own constants.
// Each format file defines:
//   const SEG_XSUM: bool                 whether seg_dot reads the inputs' sum
//   struct Seg                           one segment's codes and scales, in registers
//   fn code_words_per_row(k_len) -> u32  u32 code words per row (a multiple of 4)
//   fn load_seg(row, s, k_len) -> Seg    segment s of a row (rows count from the chunk's first)
//   fn seg_dot(seg, x, xsum) -> f32      sum of weight j * x[j / 4][j % 4] over the segment
//   fn seg_weight(seg, j) -> f32         weight j of the segment, exactly the CPU reference's
// Rows are read a segment at a time; a row of K weights has segs_per_row(K) segments, the
// last one zero-padded where K is not whole segments, so kernels stop at K.

@group(0) @binding(2) var<storage, read> codes: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;

const SEG4: u32 = SEG / 4u;
// A segment's inputs.
alias SegInputs = array<vec4<f32>, SEG4>;

fn segs_per_row(k_len: u32) -> u32 {
    return (k_len + SEG - 1u) / SEG;
}

// Quad q (16 bytes) of a row's code words.
fn code_quad(row: u32, q: u32, k_len: u32) -> vec4<u32> {
    return codes[row * (code_words_per_row(k_len) / 4u) + q];
}

// Word i of a row's code words.
fn code_word(row: u32, i: u32, k_len: u32) -> u32 {
    return code_quad(row, i / 4u, k_len)[i % 4u];
}

// Scale unit i (16 bits, counted over the whole chunk) as an f16.
fn scale_half(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// A code (below 2^23) less `zero`, exactly: the code is set into the low mantissa bits of
// 2^23 (0x4b000000) and 2^23 + zero taken off. No integer-to-float conversion, which NVIDIA
// GPUs run at a fraction of their float rate.
fn centered(code: u32, zero: f32) -> f32 {
    return bitcast<f32>(code | 0x4b000000u) - (8388608.0 + zero);
}

// Weight (row, k), for kernels that read one weight at a time.
fn weight_at(row: u32, k: u32, k_len: u32) -> f32 {
    return seg_weight(load_seg(row, k / SEG, k_len), k % SEG);
}
