//! GGUF's k-quants with a scale per 16 weights and 2-bit code fields: `Q2_K` and `Q3_K`
//! (`weights_q2_k.wgsl`), run as stored. The block layouts are in
//! [`crate::formats::ggml`].
//!
//! A segment is 32 weights (two scales). Codes are repacked into planes numbered flat along
//! K: the low 2 bits sixteen to a word (2 words a segment), then for `Q3_K` the third bits
//! (`hmask`) 32 to a word (a word a segment). The scales stay as the block stores them:
//! - `Q2_K`: per block its 16 scale bytes (scale in the low nibble, min in the high), then
//!   its f16 `d` and `dmin`: 5 words. Weight `d * scale * q - dmin * min`;
//! - `Q3_K`: per block its 12 bytes packing sixteen 6-bit scales (3 words), and after every
//!   block's scales, the blocks' f16 `d`s two to a word. Weight `d * (scale - 32) * (q - 4)`.
//!
//! `d * scale` and `dmin * min` are exact in f32, so every weight is one rounding of the
//! same exact value on the GPU as in ggml (none at all for `Q3_K`).

use super::{
    bytes_to_halves, half_bits, halves_to_bytes, pack_plane, plane_code, Format, FormatWgsl,
    PackedWeight,
};
use crate::error::Result;
use crate::formats::ggml::{k2_code, scale_k3, GgmlType};

/// Weights per super-block (`QK_K`).
const BLOCK: usize = 256;
/// Weights per segment.
const SEG: usize = 32;
/// Low-plane code words per block: 256 2-bit codes.
const LOW_WORDS: usize = BLOCK / 16;

pub struct K16Format {
    ty: GgmlType,
}

pub const Q2_K: K16Format = K16Format { ty: GgmlType::Q2_K };
pub const Q3_K: K16Format = K16Format { ty: GgmlType::Q3_K };

impl K16Format {
    fn third_bit(&self) -> bool {
        self.ty == GgmlType::Q3_K
    }

    fn blocks(cols: usize) -> usize {
        cols.div_ceil(BLOCK)
    }

    /// Scale units per block (before `Q3_K`'s `d`s): `Q2_K`'s 16 scale bytes, `d` and
    /// `dmin`; `Q3_K`'s 12 scale bytes.
    fn block_halves(&self) -> usize {
        if self.third_bit() {
            6
        } else {
            10
        }
    }
}

impl Format for K16Format {
    fn name(&self) -> &'static str {
        self.ty.name()
    }

    fn seg(&self) -> usize {
        SEG
    }

    fn code_words_per_row(&self, cols: usize) -> usize {
        let third = if self.third_bit() { BLOCK / 32 } else { 0 };
        Self::blocks(cols) * (LOW_WORDS + third)
    }

    fn scale_halves_per_row(&self, cols: usize) -> usize {
        let blocks = Self::blocks(cols);
        let ds = if self.third_bit() {
            blocks.div_ceil(2) * 2
        } else {
            0
        };
        blocks * self.block_halves() + ds
    }

    fn whole_segments(&self) -> bool {
        true
    }

    fn wgsl(&self) -> FormatWgsl {
        FormatWgsl {
            file: crate::kernels::wgsl::WEIGHTS_Q2_K,
            consts: vec![("SEG", SEG as u32), ("THIRD_BIT", self.third_bit() as u32)],
        }
    }

    fn weight_at(&self, w: &PackedWeight, row: usize, k: usize) -> f32 {
        let codes = w.code_row(row);
        let scales = w.scale_row(row);
        let blocks = Self::blocks(w.cols);
        let block = k / BLOCK;
        let sub = (k % BLOCK) / 16;
        let f16 = |bits: u16| half::f16::from_bits(bits).to_f32();
        let stored = &scales[block * self.block_halves()..(block + 1) * self.block_halves()];
        let bytes: [u8; 20] = halves_to_bytes(stored);
        let low = plane_code(codes, 2, k);
        if self.third_bit() {
            let third = plane_code(&codes[blocks * LOW_WORDS..], 1, k);
            let d = f16(scales[blocks * self.block_halves() + block]);
            let dl = d * (scale_k3(sub, &bytes) as i32 - 32) as f32;
            return dl * ((low | third << 2) as i32 - 4) as f32;
        }
        let sc = bytes[sub];
        let (d, dmin) = (f16(stored[8]), f16(stored[9]));
        (d * (sc & 0x0F) as f32) * low as f32 - dmin * (sc >> 4) as f32
    }

    fn ggml_type(&self) -> Option<GgmlType> {
        Some(self.ty)
    }

    fn repack_ggml(&self, bytes: &[u8], out: &mut PackedWeight) -> Result<()> {
        let blocks = Self::blocks(out.cols);
        let halves = self.block_halves();
        out.for_each_ggml_block(self.ty, bytes, |i, b, row_codes, row_scales| {
            let (low, third) = row_codes.split_at_mut(blocks * LOW_WORDS);
            // Q3_K: hmask, then the codes; Q2_K: the scales, then the codes.
            let (qs, stored) = if self.third_bit() {
                (&b[32..96], &b[96..108])
            } else {
                (&b[16..80], &b[..16])
            };
            pack_plane(
                (0..BLOCK).map(|e| k2_code(qs, e) as u32),
                2,
                &mut low[i * LOW_WORDS..(i + 1) * LOW_WORDS],
            );
            let block_scales = &mut row_scales[i * halves..(i + 1) * halves];
            bytes_to_halves(stored, block_scales);
            if self.third_bit() {
                let hmask = &b[..32];
                pack_plane(
                    (0..BLOCK).map(|e| ((hmask[e % 32] >> (e / 32)) & 1) as u32),
                    1,
                    &mut third[i * 8..(i + 1) * 8],
                );
                row_scales[blocks * halves + i] = half_bits(b, 108);
            } else {
                block_scales[8] = half_bits(b, 80);
                block_scales[9] = half_bits(b, 82);
            }
        });
        Ok(())
    }
}
