//! Unquantized weights: `f16`, `bf16` and `f32`, every value as stored (`weights_float.wgsl`).
//!
//! A segment is 16 bytes, one quad of code words: 8 f16 or bf16 weights (two per word, low
//! half first) or 4 f32 weights. Rows are padded to whole segments with zeros. There are no
//! scales. Reading f16 through `unpack2x16float` and bf16 and f32 through `bitcast` needs no
//! shader-f16, so the f32 kernel variants read these weights too.
//!
//! A GGUF `F32` or `BF16` matrix whose values f16 holds exactly runs as `f16` (half the
//! bytes, the same numbers); otherwise it keeps its own type.

use half::{bf16, f16};

use super::{whole_quads, Format, FormatWgsl, PackedWeight, QuantOptions};
use crate::error::Result;
use crate::formats::ggml::GgmlType;

/// Which float a format stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatKind {
    F16,
    Bf16,
    F32,
}

pub struct FloatFormat {
    kind: FloatKind,
}

pub const F16: FloatFormat = FloatFormat {
    kind: FloatKind::F16,
};
pub const BF16: FloatFormat = FloatFormat {
    kind: FloatKind::Bf16,
};
pub const F32: FloatFormat = FloatFormat {
    kind: FloatKind::F32,
};

impl FloatFormat {
    fn per_word(&self) -> usize {
        match self.kind {
            FloatKind::F32 => 1,
            _ => 2,
        }
    }

    /// The stored bits of `v` (a u16 widened, or an f32's bits).
    fn encode(&self, v: f32) -> u32 {
        match self.kind {
            FloatKind::F16 => f16::from_f32(v).to_bits() as u32,
            FloatKind::Bf16 => bf16::from_f32(v).to_bits() as u32,
            FloatKind::F32 => v.to_bits(),
        }
    }

    fn decode(&self, bits: u32) -> f32 {
        match self.kind {
            FloatKind::F16 => f16::from_bits(bits as u16).to_f32(),
            FloatKind::Bf16 => f32::from_bits(bits << 16),
            FloatKind::F32 => f32::from_bits(bits),
        }
    }

    /// Fills `out` from one stored value per weight, row-major.
    fn fill(&self, values: impl Iterator<Item = u32>, out: &mut PackedWeight) {
        let (words, cols, per_word) =
            (self.code_words_per_row(out.cols), out.cols, self.per_word());
        for (i, bits) in values.enumerate() {
            let (r, k) = (i / cols.max(1), i % cols.max(1));
            // f16 and bf16: the odd weight in the high half; f32: k % 1 is 0.
            out.codes[r * words + k / per_word] |= bits << ((k % per_word) as u32 * 16);
        }
    }
}

impl Format for FloatFormat {
    fn name(&self) -> &'static str {
        match self.kind {
            FloatKind::F16 => "f16",
            FloatKind::Bf16 => "bf16",
            FloatKind::F32 => "f32",
        }
    }

    fn seg(&self) -> usize {
        4 * self.per_word()
    }

    fn code_words_per_row(&self, cols: usize) -> usize {
        whole_quads(cols.div_ceil(self.per_word()))
    }

    fn scale_halves_per_row(&self, _cols: usize) -> usize {
        0
    }

    fn wgsl(&self) -> FormatWgsl {
        FormatWgsl {
            file: crate::kernels::wgsl::WEIGHTS_FLOAT,
            consts: vec![
                ("SEG", self.seg() as u32),
                (
                    "FLOAT_KIND",
                    match self.kind {
                        FloatKind::F16 => 0,
                        FloatKind::Bf16 => 1,
                        FloatKind::F32 => 2,
                    },
                ),
            ],
        }
    }

    fn weight_at(&self, w: &PackedWeight, row: usize, k: usize) -> f32 {
        let per_word = self.per_word();
        let word = w.code_row(row)[k / per_word];
        let bits = match self.kind {
            FloatKind::F32 => word,
            _ => (word >> (16 * (k % 2) as u32)) & 0xFFFF,
        };
        self.decode(bits)
    }

    fn ggml_type(&self) -> Option<GgmlType> {
        Some(match self.kind {
            FloatKind::F16 => GgmlType::F16,
            FloatKind::Bf16 => GgmlType::BF16,
            FloatKind::F32 => GgmlType::F32,
        })
    }

    fn repack_ggml(&self, bytes: &[u8], out: &mut PackedWeight) -> Result<()> {
        match self.kind {
            FloatKind::F32 => self.fill(
                bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                out,
            ),
            _ => self.fill(
                bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32),
                out,
            ),
        }
        Ok(())
    }

    fn pack_into(
        &self,
        weights: &[f32],
        _options: QuantOptions,
        out: &mut PackedWeight,
    ) -> Result<()> {
        self.fill(weights.iter().map(|&v| self.encode(v)), out);
        Ok(())
    }
}

/// Whether every value of a row-major f32 matrix is exactly an f16 (so an `F32` or `BF16`
/// matrix can run as `f16` without changing a value).
pub fn exact_in_f16(values: &[f32]) -> bool {
    values
        .iter()
        .all(|&v| f16::from_f32(v).to_f32().to_bits() == v.to_bits() || v.is_nan())
}
