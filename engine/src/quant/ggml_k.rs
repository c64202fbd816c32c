//! GGUF's k-quants, super-blocks of 256 weights: `Q4_K` and `Q5_K` (`weights_q4_k.wgsl`),
//! `Q6_K` (`weights_q6_k.wgsl`), run as stored. The block layouts are in
//! [`crate::formats::ggml`].
//!
//! A segment is a 32-weight sub-block. Codes are repacked into planes numbered flat along K:
//! the low 4 bits eight to a word (4 words a segment), then for `Q5_K` a word of fifth bits
//! per segment, for `Q6_K` two words of the top 2 bits per segment. The scales stay as the
//! block stores them, never folded into `d * scale`:
//! - `Q4_K` / `Q5_K`: per block the f16 `d` and `dmin` and the 12 bytes that pack eight
//!   6-bit scales and mins: the block's first 16 bytes as they are, 4 words. Weight
//!   `d * sc * q - dmin * m`;
//! - `Q6_K`: per block its 16 signed 8-bit scales (4 words), and after every block's
//!   scales, the blocks' f16 `d`s two to a word. Weight `d * sc * (q - 32)`.
//!
//! `d * sc` and `dmin * m` are exact in f32 (11 + 8 bits at most), so every weight is one
//! rounding of the same exact value on the GPU as in ggml.

use super::{
    bytes_to_halves, half_bits, halves_to_bytes, pack_plane, plane_code, Format, FormatWgsl,
    PackedWeight,
};
use crate::error::Result;
use crate::formats::ggml::{scale_min_k4, GgmlType};

/// Weights per super-block (`QK_K`).
const BLOCK: usize = 256;
/// Weights per sub-block, the segment.
const SUB: usize = 32;

pub struct KFormat {
    ty: GgmlType,
}

pub const Q4_K: KFormat = KFormat { ty: GgmlType::Q4_K };
pub const Q5_K: KFormat = KFormat { ty: GgmlType::Q5_K };
pub const Q6_K: KFormat = KFormat { ty: GgmlType::Q6_K };

impl KFormat {
    /// Code words per segment after the low plane (fifth bits, or 6-bit codes' top bits).
    fn high_words_per_seg(&self) -> usize {
        match self.ty {
            GgmlType::Q5_K => 1,
            GgmlType::Q6_K => 2,
            _ => 0,
        }
    }

    fn blocks(cols: usize) -> usize {
        cols.div_ceil(BLOCK)
    }

    /// Scale units per block before the `Q6_K` `d`s: 16 bytes either way.
    const BLOCK_HALVES: usize = 8;

    /// A block's 256 codes (unsigned, as stored) in element order.
    fn unpack_codes(&self, b: &[u8], codes: &mut [u32; BLOCK]) {
        match self.ty {
            GgmlType::Q6_K => {
                for h in 0..2 {
                    let ql = &b[64 * h..64 * h + 64];
                    let qh = &b[128 + 32 * h..128 + 32 * h + 32];
                    let y = &mut codes[128 * h..128 * h + 128];
                    for l in 0..32 {
                        let hi = qh[l] as u32;
                        y[l] = (ql[l] & 0x0F) as u32 | (hi & 3) << 4;
                        y[l + 32] = (ql[l + 32] & 0x0F) as u32 | ((hi >> 2) & 3) << 4;
                        y[l + 64] = (ql[l] >> 4) as u32 | ((hi >> 4) & 3) << 4;
                        y[l + 96] = (ql[l + 32] >> 4) as u32 | ((hi >> 6) & 3) << 4;
                    }
                }
            }
            _ => {
                let (qh, qs) = match self.ty {
                    GgmlType::Q5_K => (Some(&b[16..48]), &b[48..176]),
                    _ => (None, &b[16..144]),
                };
                for (c, q) in qs.chunks_exact(32).enumerate() {
                    for (l, &q) in q.iter().enumerate() {
                        let high = |s: usize| qh.map_or(0, |qh| ((qh[l] >> s) & 1) as u32) << 4;
                        codes[64 * c + l] = (q & 0x0F) as u32 | high(2 * c);
                        codes[64 * c + 32 + l] = (q >> 4) as u32 | high(2 * c + 1);
                    }
                }
            }
        }
    }
}

impl Format for KFormat {
    fn name(&self) -> &'static str {
        self.ty.name()
    }

    fn seg(&self) -> usize {
        SUB
    }

    fn code_words_per_row(&self, cols: usize) -> usize {
        Self::blocks(cols) * (BLOCK / SUB) * (4 + self.high_words_per_seg())
    }

    fn scale_halves_per_row(&self, cols: usize) -> usize {
        let blocks = Self::blocks(cols);
        match self.ty {
            GgmlType::Q6_K => blocks * Self::BLOCK_HALVES + blocks.div_ceil(2) * 2,
            _ => blocks * Self::BLOCK_HALVES,
        }
    }

    fn whole_segments(&self) -> bool {
        true
    }

    fn wgsl(&self) -> FormatWgsl {
        match self.ty {
            GgmlType::Q6_K => FormatWgsl {
                file: crate::kernels::wgsl::WEIGHTS_Q6_K,
                consts: vec![("SEG", SUB as u32)],
            },
            _ => FormatWgsl {
                file: crate::kernels::wgsl::WEIGHTS_Q4_K,
                consts: vec![
                    ("SEG", SUB as u32),
                    ("FIFTH_BIT", (self.ty == GgmlType::Q5_K) as u32),
                ],
            },
        }
    }

    fn weight_at(&self, w: &PackedWeight, row: usize, k: usize) -> f32 {
        let codes = w.code_row(row);
        let scales = w.scale_row(row);
        let (block, s) = (k / BLOCK, k / SUB);
        let low = plane_code(codes, 4, k);
        let low_words = Self::blocks(w.cols) * BLOCK / 8;
        let f16 = |bits: u16| half::f16::from_bits(bits).to_f32();
        let bytes: [u8; 16] =
            halves_to_bytes(&scales[block * Self::BLOCK_HALVES..(block + 1) * Self::BLOCK_HALVES]);
        if self.ty == GgmlType::Q6_K {
            let high = plane_code(&codes[low_words..], 2, k);
            let d_at = Self::blocks(w.cols) * Self::BLOCK_HALVES + block;
            let sc = bytes[(k % BLOCK) / 16] as i8;
            let q = (low | high << 4) as i32 - 32;
            return f16(scales[d_at]) * sc as f32 * q as f32;
        }
        let high = if self.ty == GgmlType::Q5_K {
            (codes[low_words + s] >> (k % SUB)) & 1
        } else {
            0
        };
        let (sc, m) = scale_min_k4(s % (BLOCK / SUB), &bytes[4..16]);
        let (d, dmin) = (f16(scales[block * 8]), f16(scales[block * 8 + 1]));
        (d * sc as f32) * (low | high << 4) as f32 - dmin * m as f32
    }

    fn ggml_type(&self) -> Option<GgmlType> {
        Some(self.ty)
    }

    fn repack_ggml(&self, bytes: &[u8], out: &mut PackedWeight) -> Result<()> {
        let blocks = Self::blocks(out.cols);
        let low_words = blocks * BLOCK / 8;
        out.for_each_ggml_block(self.ty, bytes, |i, b, row_codes, row_scales| {
            let mut codes = [0u32; BLOCK];
            self.unpack_codes(b, &mut codes);
            let (low, high) = row_codes.split_at_mut(low_words);
            pack_plane(
                codes.iter().map(|c| c & 15),
                4,
                &mut low[i * 32..(i + 1) * 32],
            );
            // The block's 16 scale bytes as stored: Q6_K's int8 scales, else d, dmin and
            // the packed 6-bit scales and mins.
            let stored = match self.ty {
                GgmlType::Q6_K => &b[192..208],
                _ => &b[..16],
            };
            bytes_to_halves(
                stored,
                &mut row_scales[i * Self::BLOCK_HALVES..][..Self::BLOCK_HALVES],
            );
            match self.ty {
                GgmlType::Q6_K => {
                    pack_plane(
                        codes.iter().map(|c| c >> 4),
                        2,
                        &mut high[i * 16..(i + 1) * 16],
                    );
                    row_scales[blocks * Self::BLOCK_HALVES + i] = half_bits(b, 208);
                }
                GgmlType::Q5_K => {
                    pack_plane(
                        codes.iter().map(|c| c >> 4),
                        1,
                        &mut high[i * 8..(i + 1) * 8],
                    );
                }
                _ => {}
            }
        });
        Ok(())
    }
}
