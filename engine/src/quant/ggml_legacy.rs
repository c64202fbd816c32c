//! GGUF's blocks of 32: `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0` and `IQ4_NL`, run as
//! stored (`weights_ggml32.wgsl`). The block layouts are in [`crate::formats::ggml`].
//!
//! A block is a segment. Its codes are repacked into planes numbered flat along K (a GGUF
//! block keeps element `j` and `j + 16` in one byte's two nibbles):
//! - the low plane: 4-bit codes eight to a word (4 words a segment), or for `Q8_0` the
//!   signed bytes four to a word as stored (8 words a segment);
//! - for `Q5_*`, the high plane after it: each block's 32 fifth bits as one word (the
//!   block's `qh`, bit `j` for element `j`), padded to a whole quad per row.
//!
//! Scales: the block's f16 `d`, and for `Q4_1`/`Q5_1` its f16 `m` beside it (one word a
//! block). A weight is `(code - zero) * d` (zero 8, 16, or 0 for `Q8_0`'s signed codes) or
//! `code * d + m`, or for `IQ4_NL` `d * kvalues[code]` (its 4-bit codes index ggml's
//! non-linear grid): the products are exact in f32, so the GPU's value is ggml's whatever
//! the order of the one rounding.

use super::{
    half_bits, iq4_grid_consts, pack_plane, plane_code, whole_quads, Format, FormatWgsl,
    PackedWeight,
};
use crate::error::Result;
use crate::formats::ggml::{GgmlType, KVALUES_IQ4NL};

/// Weights per block.
const BLOCK: usize = 32;

/// One of the 32-weight GGUF block formats.
pub struct LegacyFormat {
    ty: GgmlType,
    /// Bits of the low plane's codes (4, or 8 for `Q8_0`).
    low_bits: u32,
    /// Whether a high plane of fifth bits follows.
    fifth_bit: bool,
    /// Whether blocks carry a minimum `m` (weight `code * d + m`).
    has_min: bool,
    /// The code that means 0 (`Q8_0`: its codes are signed, stored as bytes).
    zero: u32,
    /// Whether codes index [`KVALUES_IQ4NL`] (`IQ4_NL`) rather than count up from `zero`.
    grid: bool,
}

pub const Q4_0: LegacyFormat = LegacyFormat {
    ty: GgmlType::Q4_0,
    low_bits: 4,
    fifth_bit: false,
    has_min: false,
    zero: 8,
    grid: false,
};
pub const Q4_1: LegacyFormat = LegacyFormat {
    ty: GgmlType::Q4_1,
    low_bits: 4,
    fifth_bit: false,
    has_min: true,
    zero: 0,
    grid: false,
};
pub const Q5_0: LegacyFormat = LegacyFormat {
    ty: GgmlType::Q5_0,
    low_bits: 4,
    fifth_bit: true,
    has_min: false,
    zero: 16,
    grid: false,
};
pub const Q5_1: LegacyFormat = LegacyFormat {
    ty: GgmlType::Q5_1,
    low_bits: 4,
    fifth_bit: true,
    has_min: true,
    zero: 0,
    grid: false,
};
pub const Q8_0: LegacyFormat = LegacyFormat {
    ty: GgmlType::Q8_0,
    low_bits: 8,
    fifth_bit: false,
    has_min: false,
    zero: 0,
    grid: false,
};

pub const IQ4_NL: LegacyFormat = LegacyFormat {
    ty: GgmlType::IQ4_NL,
    low_bits: 4,
    fifth_bit: false,
    has_min: false,
    zero: 0,
    grid: true,
};

impl LegacyFormat {
    fn low_words(&self, cols: usize) -> usize {
        cols.div_ceil(BLOCK) * BLOCK * self.low_bits as usize / 32
    }

    /// Scale units per block: `d`, and `m`.
    fn halves_per_block(&self) -> usize {
        if self.has_min {
            2
        } else {
            1
        }
    }

    /// Element `j` of a block's code, from its bytes, and the block's scale units.
    fn unpack_block(&self, b: &[u8], codes: &mut [u32; BLOCK], scales: &mut [u16]) {
        scales[0] = half_bits(b, 0);
        if self.has_min {
            scales[1] = half_bits(b, 2);
        }
        let mut at = 2 * self.halves_per_block();
        if self.low_bits == 8 {
            for (c, &q) in codes.iter_mut().zip(&b[at..at + BLOCK]) {
                *c = q as u32;
            }
            return;
        }
        let qh = if self.fifth_bit {
            at += 4;
            u32::from_le_bytes([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
        } else {
            0
        };
        for (j, &q) in b[at..at + BLOCK / 2].iter().enumerate() {
            codes[j] = (q & 0x0F) as u32 | ((qh >> j) & 1) << 4;
            codes[j + 16] = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        }
    }
}

impl Format for LegacyFormat {
    fn name(&self) -> &'static str {
        self.ty.name()
    }

    fn seg(&self) -> usize {
        BLOCK
    }

    fn code_words_per_row(&self, cols: usize) -> usize {
        let high = if self.fifth_bit {
            whole_quads(cols.div_ceil(BLOCK))
        } else {
            0
        };
        self.low_words(cols) + high
    }

    fn scale_halves_per_row(&self, cols: usize) -> usize {
        cols.div_ceil(BLOCK) * self.halves_per_block()
    }

    fn whole_segments(&self) -> bool {
        true
    }

    fn wgsl(&self) -> FormatWgsl {
        let mut consts = vec![
            ("SEG", BLOCK as u32),
            ("LOW_BITS", self.low_bits),
            ("FIFTH_BIT", self.fifth_bit as u32),
            ("HAS_MIN", self.has_min as u32),
            ("ZERO_CODE", self.zero),
            ("GRID", self.grid as u32),
        ];
        consts.extend(iq4_grid_consts());
        FormatWgsl {
            file: crate::kernels::wgsl::WEIGHTS_GGML32,
            consts,
        }
    }

    fn weight_at(&self, w: &PackedWeight, row: usize, k: usize) -> f32 {
        let codes = w.code_row(row);
        let (block, j) = (k / BLOCK, k % BLOCK);
        let low = plane_code(codes, self.low_bits, k);
        let scales = &w.scale_row(row)[block * self.halves_per_block()..];
        let d = half::f16::from_bits(scales[0]).to_f32();
        if self.low_bits == 8 {
            return (low as u8 as i8) as f32 * d;
        }
        if self.grid {
            return d * KVALUES_IQ4NL[low as usize] as f32;
        }
        let high = if self.fifth_bit {
            (codes[self.low_words(w.cols) + block] >> j) & 1
        } else {
            0
        };
        let code = low | high << 4;
        if self.has_min {
            code as f32 * d + half::f16::from_bits(scales[1]).to_f32()
        } else {
            (code as i32 - self.zero as i32) as f32 * d
        }
    }

    fn ggml_type(&self) -> Option<GgmlType> {
        Some(self.ty)
    }

    fn repack_ggml(&self, bytes: &[u8], out: &mut PackedWeight) -> Result<()> {
        let halves = self.halves_per_block();
        let low_words = self.low_words(out.cols);
        let low_mask = (1u32 << self.low_bits) - 1;
        let per_block = BLOCK * self.low_bits as usize / 32;
        out.for_each_ggml_block(self.ty, bytes, |i, b, codes, scales| {
            let mut block = [0u32; BLOCK];
            self.unpack_block(b, &mut block, &mut scales[i * halves..(i + 1) * halves]);
            pack_plane(
                block.iter().map(|c| c & low_mask),
                self.low_bits,
                &mut codes[i * per_block..(i + 1) * per_block],
            );
            if self.fifth_bit {
                codes[low_words + i] = block
                    .iter()
                    .enumerate()
                    .fold(0, |acc, (j, c)| acc | (c >> 4) << j);
            }
        });
        Ok(())
    }
}
