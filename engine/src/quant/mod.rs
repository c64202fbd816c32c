//! Weight formats: how a `[rows, cols]` matrix (rows = output features, cols = K, the input
//! dimension) is stored on the GPU, and CPU quantize / dequantize for each.
//!
//! # Q4F16 and Q3F16: MLC-LLM's `q4f16_1` and `q3f16_1`, bit for bit
//!
//! Checked against MLC-LLM's `python/mlc_llm/quantization/group_quantization.py`
//! (`GroupQuantize._quantize`, `_dequantize`), `utils.py` (`pack_weight`,
//! `convert_uint_to_float`) and the registry in `quantization.py`
//! (<https://github.com/mlc-ai/mlc-llm/tree/main/python/mlc_llm/quantization>):
//!
//! - groups of `group_size` consecutive weights along K (32 for q4, 40 for q3), one scale
//!   per group: `scale = max_abs / max_int`, `max_int = 2^(bits-1) - 1` (7 for q4, 3 for q3),
//!   computed in the model dtype (f16) and stored as f16;
//! - symmetric codes biased by `max_int`: `code = clamp(round(w / scale + max_int), 0,
//!   2 * max_int)`, again in f16 arithmetic; dequantized `(code - max_int) * scale`;
//! - codes packed into u32 words, `32 / bits` per word (8 for q4, 10 for q3: the top two bits
//!   of a q3 word are zero), element `k` of a row in word `k / per_word` at bit
//!   `(k % per_word) * bits`: numbered flat along K, lowest bits first;
//! - layout `NK` (`linear_weight_layout="NK"`): `q_weight` is `[rows, ceil(K / group) *
//!   group / per_word]` u32, `q_scale` is `[rows, ceil(K / group)]` f16;
//! - when K is not a multiple of the group size the last group is zero-padded: the padding
//!   is excluded from `max_abs` and packed as code 0, which does *not* dequantize to zero,
//!   so every consumer must stop at K.
//!
//! MLC rounds with TVM's `round`, which lowers to round-half-to-even (`nearbyint`); glim
//! does the same. A group of all zeros has scale 0, where MLC's `0 / 0` is undefined: glim
//! stores code `max_int` there, which dequantizes to exactly 0.
//!
//! # F16
//!
//! Plain f16 weights, two per u32 word (low half first), rows padded to an even length.

use half::f16;

use crate::error::{Error, Result};

/// How a weight matrix is stored on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// MLC `q4f16_1`: 4-bit codes, groups of 32, f16 scales.
    Q4F16,
    /// MLC `q3f16_1`: 3-bit codes, groups of 40, f16 scales.
    Q3F16,
    /// Unquantized f16.
    F16,
}

/// Parameters of a group-quantized format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    pub bits: u32,
    pub group_size: usize,
    pub codes_per_word: usize,
    pub max_int: u32,
}

impl GroupSpec {
    pub fn words_per_group(&self) -> usize {
        self.group_size / self.codes_per_word
    }
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 3] =
        [WeightFormat::Q4F16, WeightFormat::Q3F16, WeightFormat::F16];

    /// Group parameters, or `None` for an unquantized format.
    pub fn group_spec(self) -> Option<GroupSpec> {
        match self {
            WeightFormat::Q4F16 => Some(GroupSpec {
                bits: 4,
                group_size: 32,
                codes_per_word: 8,
                max_int: 7,
            }),
            WeightFormat::Q3F16 => Some(GroupSpec {
                bits: 3,
                group_size: 40,
                codes_per_word: 10,
                max_int: 3,
            }),
            WeightFormat::F16 => None,
        }
    }

    /// Weights stored per u32 word.
    pub fn weights_per_word(self) -> usize {
        self.group_spec().map_or(2, |g| g.codes_per_word)
    }

    /// u32 words one row of `cols` weights occupies.
    pub fn words_per_row(self, cols: usize) -> usize {
        match self.group_spec() {
            Some(g) => cols.div_ceil(g.group_size) * g.words_per_group(),
            None => cols.div_ceil(2),
        }
    }

    /// f16 scales one row has (0 for F16).
    pub fn scales_per_row(self, cols: usize) -> usize {
        self.group_spec().map_or(0, |g| cols.div_ceil(g.group_size))
    }

    /// Short lowercase name as used on the command line and in file metadata.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Q4F16 => "q4f16",
            WeightFormat::Q3F16 => "q3f16",
            WeightFormat::F16 => "f16",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "q4f16" | "q4f16_1" => Ok(WeightFormat::Q4F16),
            "q3f16" | "q3f16_1" => Ok(WeightFormat::Q3F16),
            "f16" => Ok(WeightFormat::F16),
            other => Err(Error::Invalid(format!(
                "unknown weight format `{other}` (expected q4f16, q3f16 or f16)"
            ))),
        }
    }
}

/// A weight matrix in a [`WeightFormat`], on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWeight {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    /// `[rows, words_per_row]` words.
    pub codes: Vec<u32>,
    /// `[rows, scales_per_row]` scales (empty for F16).
    pub scales: Vec<f16>,
}

fn f16_round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

impl PackedWeight {
    /// Quantizes a row-major `[rows, cols]` f32 matrix (values are first rounded to f16, the
    /// model dtype MLC quantizes from).
    pub fn quantize(
        format: WeightFormat,
        weights: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        if weights.len() != rows * cols {
            return Err(Error::Shape(format!(
                "{} weights do not fill a {rows}x{cols} matrix",
                weights.len()
            )));
        }
        let words = format.words_per_row(cols);
        let mut codes = vec![0u32; rows * words];
        let mut scales = Vec::with_capacity(rows * format.scales_per_row(cols));
        for (r, row) in weights.chunks_exact(cols.max(1)).enumerate().take(rows) {
            let out = &mut codes[r * words..(r + 1) * words];
            match format.group_spec() {
                Some(spec) => quantize_row(&spec, row, out, &mut scales),
                None => {
                    for (k, &w) in row.iter().enumerate() {
                        out[k / 2] |= (f16::from_f32(w).to_bits() as u32) << (16 * (k % 2));
                    }
                }
            }
        }
        Ok(Self {
            format,
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// Weight `(row, k)` as the GPU kernels see it.
    pub fn weight_at(&self, row: usize, k: usize) -> f32 {
        let per_word = self.format.weights_per_word();
        let word = self.codes[row * self.format.words_per_row(self.cols) + k / per_word];
        let j = k % per_word;
        match self.format.group_spec() {
            Some(spec) => {
                let code = (word >> (j as u32 * spec.bits)) & ((1 << spec.bits) - 1);
                let scale =
                    self.scales[row * self.format.scales_per_row(self.cols) + k / spec.group_size];
                (code as f32 - spec.max_int as f32) * scale.to_f32()
            }
            None => f16::from_bits((word >> (16 * j)) as u16).to_f32(),
        }
    }

    /// The whole matrix, dequantized, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            out.extend((0..self.cols).map(|k| self.weight_at(r, k)));
        }
        out
    }

    /// Scales as u32 words (two f16 per word, low half first), as the kernels bind them.
    pub fn scale_words(&self) -> Vec<u32> {
        self.scales
            .chunks(2)
            .map(|pair| {
                let lo = pair[0].to_bits() as u32;
                let hi = pair.get(1).map_or(0, |h| h.to_bits() as u32);
                lo | (hi << 16)
            })
            .collect()
    }

    /// Bytes this weight occupies on the GPU.
    pub fn byte_size(&self) -> usize {
        self.codes.len() * 4 + self.scales.len() * 2
    }
}

fn quantize_row(spec: &GroupSpec, row: &[f32], out: &mut [u32], scales: &mut Vec<f16>) {
    let max_int = spec.max_int as f32;
    for (g, group) in row.chunks(spec.group_size).enumerate() {
        let max_abs = group
            .iter()
            .map(|&w| f16_round(w).abs())
            .fold(0.0f32, f32::max);
        let scale = f16::from_f32(max_abs / max_int);
        scales.push(scale);
        let s = scale.to_f32();
        for (j, &w) in group.iter().enumerate() {
            let code = if s == 0.0 {
                spec.max_int
            } else {
                let scaled = f16_round(f16_round(f16_round(w) / s) + max_int);
                scaled.round_ties_even().clamp(0.0, 2.0 * max_int) as u32
            };
            let k = g * spec.group_size + j;
            out[k / spec.codes_per_word] |= code << ((k % spec.codes_per_word) as u32 * spec.bits);
        }
    }
}

#[cfg(test)]
mod tests;
