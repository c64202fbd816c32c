// Weight access for MLC's group-quantized formats, q4f16_1 (Q4F16) and q3f16_1 (Q3F16).
// The host defines BITS, CODES_PER_WORD, GROUP_SIZE, MAX_INT and WORDS_PER_GROUP, and the
// kernel declares `codes` (u32 words) and `scales` (f16 pairs packed in u32 words).
//
// A row of K weights is GROUP_SIZE-wide groups; group g has one f16 scale and its codes are
// packed CODES_PER_WORD to a word, lowest bits first, numbered flat along K: weight k of a
// row sits in word k / CODES_PER_WORD at bit (k % CODES_PER_WORD) * BITS. The last group is
// zero-padded, so kernels must stop at K. Weight = (code - MAX_INT) * scale.

fn words_per_row(k_len: u32) -> u32 {
    return (k_len + GROUP_SIZE - 1u) / GROUP_SIZE * WORDS_PER_GROUP;
}

// Scale shared by every weight of word `w` of `row` (a word never straddles two groups).
fn word_scale(row: u32, w: u32, k_len: u32) -> f32 {
    let groups = (k_len + GROUP_SIZE - 1u) / GROUP_SIZE;
    let i = row * groups + w / WORDS_PER_GROUP;
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}

// The scale of group g of `row`.
fn group_scale(row: u32, g: u32, k_len: u32) -> f32 {
    return word_scale(row, g * WORDS_PER_GROUP, k_len);
}

// Code j of a word as a number: weight = (code - ZERO) * scale.
const ZERO: f32 = f32(MAX_INT);
fn word_code(word: u32, j: u32) -> f32 {
    return f32(i32((word >> (j * BITS)) & ((1u << BITS) - 1u)));
}

// Weight j (0 <= j < CODES_PER_WORD) of a word whose scale is `scale`.
fn word_weight(word: u32, j: u32, scale: f32) -> f32 {
    let code = (word >> (j * BITS)) & ((1u << BITS) - 1u);
    return f32(i32(code) - i32(MAX_INT)) * scale;
}

// Code j of a word less the zero point, (code - MAX_INT), exactly: the code is set into the
// low mantissa bits of 2^23 (0x4b000000) and 2^23 + MAX_INT taken off. No integer-to-float
// conversion, which NVIDIA GPUs run at a fraction of their float rate.
fn word_centered(word: u32, j: u32) -> f32 {
    let code = (word >> (j * BITS)) & ((1u << BITS) - 1u);
    return bitcast<f32>(code | 0x4b000000u) - (8388608.0 + ZERO);
}
