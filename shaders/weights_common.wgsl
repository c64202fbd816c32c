// Random access to one weight, on top of a format file's word functions.
fn weight_at(row: u32, k: u32, k_len: u32) -> f32 {
    let w = k / CODES_PER_WORD;
    let word = codes[row * words_per_row(k_len) + w];
    return word_weight(word, k % CODES_PER_WORD, word_scale(row, w, k_len));
}
