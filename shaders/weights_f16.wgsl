// Weight access for unquantized f16 weights: two f16 per u32 word (low half first), rows of
// ceil(K / 2) words. The host defines CODES_PER_WORD = 2, and GROUP_SIZE = 2 with
// WORDS_PER_GROUP = 1 for kernels that walk groups: a word is a group of scale 1 and zero 0; the kernel declares `codes` and a
// `scales` binding that is never read. Reading f16 through unpack2x16float needs no
// shader-f16, so the f32 kernel variants can use these weights too.

fn words_per_row(k_len: u32) -> u32 {
    return (k_len + 1u) / 2u;
}

fn word_scale(row: u32, w: u32, k_len: u32) -> f32 {
    return 1.0;
}

fn word_weight(word: u32, j: u32, scale: f32) -> f32 {
    return unpack2x16float(word)[j];
}

fn group_scale(row: u32, g: u32, k_len: u32) -> f32 {
    return 1.0;
}

const ZERO: f32 = 0.0;
fn word_code(word: u32, j: u32) -> f32 {
    return unpack2x16float(word)[j];
}

// Weight j of a word (scale 1, zero 0).
fn word_centered(word: u32, j: u32) -> f32 {
    return unpack2x16float(word)[j];
}
