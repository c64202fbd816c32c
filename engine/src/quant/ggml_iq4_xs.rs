//! GGUF's `IQ4_XS` (`weights_iq4_xs.wgsl`), run as stored: super-blocks of 256 weights in
//! sub-blocks of 32, each with a 6-bit scale, and 4-bit codes that index ggml's non-linear
//! grid ([`KVALUES_IQ4NL`]). The block layout is in [`crate::formats::ggml`].
//!
//! A segment is a sub-block. Its codes are repacked into one plane numbered flat along K,
//! eight to a word (4 words a segment). Scales: each block's first 8 bytes as stored (its
//! f16 `d`, the u16 `scales_h` and the 4 bytes `scales_l`), 2 words. Weight
//! `d * (scale - 32) * kvalues[code]`: both products are exact in f32.

use super::{
    bytes_to_halves, halves_to_bytes, iq4_grid_consts, pack_plane, plane_code, Format, FormatWgsl,
    PackedWeight,
};
use crate::error::Result;
use crate::formats::ggml::{scale_iq4_xs, GgmlType, KVALUES_IQ4NL};

/// Weights per super-block (`QK_K`).
const BLOCK: usize = 256;
/// Weights per sub-block, the segment.
const SUB: usize = 32;
/// Scale units per block: `d`, `scales_h`, `scales_l`.
const BLOCK_HALVES: usize = 4;

pub struct Iq4XsFormat;

pub const IQ4_XS: Iq4XsFormat = Iq4XsFormat;

fn blocks(cols: usize) -> usize {
    cols.div_ceil(BLOCK)
}

impl Format for Iq4XsFormat {
    fn name(&self) -> &'static str {
        GgmlType::IQ4_XS.name()
    }

    fn seg(&self) -> usize {
        SUB
    }

    fn code_words_per_row(&self, cols: usize) -> usize {
        blocks(cols) * BLOCK / 8
    }

    fn scale_halves_per_row(&self, cols: usize) -> usize {
        blocks(cols) * BLOCK_HALVES
    }

    fn whole_segments(&self) -> bool {
        true
    }

    fn wgsl(&self) -> FormatWgsl {
        let mut consts = vec![("SEG", SUB as u32)];
        consts.extend(iq4_grid_consts());
        FormatWgsl {
            file: crate::kernels::wgsl::WEIGHTS_IQ4_XS,
            consts,
        }
    }

    fn weight_at(&self, w: &PackedWeight, row: usize, k: usize) -> f32 {
        let stored = &w.scale_row(row)[(k / BLOCK) * BLOCK_HALVES..][..BLOCK_HALVES];
        let d = half::f16::from_bits(stored[0]).to_f32();
        let bytes: [u8; 8] = halves_to_bytes(stored);
        let scale = scale_iq4_xs((k % BLOCK) / SUB, stored[1], &bytes[4..]);
        let dl = d * (scale as i32 - 32) as f32;
        dl * KVALUES_IQ4NL[plane_code(w.code_row(row), 4, k) as usize] as f32
    }

    fn ggml_type(&self) -> Option<GgmlType> {
        Some(GgmlType::IQ4_XS)
    }

    fn repack_ggml(&self, bytes: &[u8], out: &mut PackedWeight) -> Result<()> {
        out.for_each_ggml_block(GgmlType::IQ4_XS, bytes, |i, b, codes, scales| {
            // Each sub-block's 16 bytes hold element j in the low nibble and j + 16 in the
            // high one.
            let nibble = |e: usize| {
                let q = b[8 + 16 * (e / SUB) + e % 16];
                (if e % SUB < 16 { q & 0x0F } else { q >> 4 }) as u32
            };
            pack_plane(
                (0..BLOCK).map(nibble),
                4,
                &mut codes[i * BLOCK / 8..(i + 1) * BLOCK / 8],
            );
            bytes_to_halves(
                &b[..8],
                &mut scales[i * BLOCK_HALVES..(i + 1) * BLOCK_HALVES],
            );
        });
        Ok(())
    }
}
