// Unquantized weights (quant/float.rs): FLOAT_KIND 0 is f16 and 1 bf16, two to a word, low
// half first, SEG = 8; 2 is f32, SEG = 4. A segment is one quad of code words; rows are
// padded to whole segments with zeros. No scales. Read through unpack2x16float and bitcast,
// so the f32 kernel variants need no shader-f16.

const SEG_XSUM: bool = false;

struct Seg {
    words: vec4<u32>,
}

fn code_words_per_row(k_len: u32) -> u32 {
    return segs_per_row(k_len) * 4u;
}

fn load_seg(row: u32, s: u32, k_len: u32) -> Seg {
    return Seg(code_quad(row, s, k_len));
}

// The two weights of a word of f16 or bf16.
fn float_pair(word: u32) -> vec2<f32> {
    if (FLOAT_KIND == 0u) {
        return unpack2x16float(word);
    }
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}

fn seg_dot(seg: Seg, x: SegInputs, xsum: f32) -> f32 {
    if (FLOAT_KIND == 2u) {
        return dot(bitcast<vec4<f32>>(seg.words), x[0]);
    }
    var acc = 0.0;
    for (var i = 0u; i < SEG4; i++) {
        let w = vec4<f32>(float_pair(seg.words[2u * i]), float_pair(seg.words[2u * i + 1u]));
        acc += dot(w, x[i]);
    }
    return acc;
}

fn seg_weight(seg: Seg, j: u32) -> f32 {
    if (FLOAT_KIND == 2u) {
        return bitcast<f32>(seg.words[j]);
    }
    return float_pair(seg.words[j / 2u])[j % 2u];
}
