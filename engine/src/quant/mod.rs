//! Weight formats: how a `[rows, cols]` matrix (rows = output features, cols = K, the input
//! dimension) is stored on the GPU, and what each stored weight is worth.
//!
//! Every format is a peer behind one trait, [`Format`], and lives in a module of its own
//! with one WGSL file (`shaders/weights_*.wgsl`) that the kernels are assembled with:
//!
//! | module | formats | from |
//! | --- | --- | --- |
//! | [`mlc_group`] | `q4f16` (`q4f16_1`), `q3f16` (`q3f16_1`) | MLC-LLM's group quantization, or glim's quantizer |
//! | [`float`] | `f16`, `bf16`, `f32` | plain floats, every value as stored |
//! | [`ggml_legacy`] | `q4_0`, `q4_1`, `q5_0`, `q5_1`, `q8_0`, `iq4_nl` | GGUF blocks of 32, repacked |
//! | [`ggml_k`] | `q4_K`, `q5_K`, `q6_K` | GGUF super-blocks of 256, a scale per 32 |
//! | [`ggml_k16`] | `q2_K`, `q3_K` | GGUF super-blocks of 256, a scale per 16 |
//! | [`ggml_iq4_xs`] | `iq4_xs` | GGUF super-blocks of 256, a non-linear 4-bit grid |
//!
//! # What a format is to the kernels
//!
//! A row is read a *segment* at a time: [`Format::seg`] consecutive weights (32 for every
//! quantized format but q3f16's 40; 8 for f16 and bf16, 4 for f32) whose numbers the format
//! can decode from one load of its code words plus its scales. The format's WGSL defines
//! `load_seg(row, s, k_len) -> Seg`, `seg_dot(seg, x, xsum)` (the segment's share of a dot
//! product with 32 inputs, and their sum for formats with a per-segment offset) and
//! `seg_weight(seg, j)` (one weight, exactly as the CPU reference gives it). The matmul and
//! embedding kernels are written once against these three functions.
//!
//! # Memory
//!
//! A [`PackedWeight`] is two planes, both row-major so a matrix splits between any rows:
//! - `codes`: [`Format::code_words_per_row`] u32 words per row, a multiple of 4 so the
//!   kernels load 16 bytes at a time. A format with several code planes (low and high bits
//!   of 5- and 6-bit codes) lays them one after the other inside the row.
//! - `scales`: [`Format::scale_halves_per_row`] 16-bit units per row (f16 scales, or a GGUF
//!   block's scale bytes as stored), uploaded two to a word.
//!
//! GGUF blocks are repacked into these planes at load (their 18-, 20- or 210-byte blocks are
//! not word-aligned), every code and scale bit kept: a weight decodes to exactly the f32
//! llama.cpp's CPU dequantizer gives ([`crate::formats::ggml`]), and the GPU holds the file's
//! own bits per weight plus at most a few bytes of padding per row.

pub mod float;
pub mod ggml_iq4_xs;
pub mod ggml_k;
pub mod ggml_k16;
pub mod ggml_legacy;
pub mod mlc_group;

use half::f16;

use crate::error::{Error, Result};
use crate::formats::ggml::{GgmlType, KVALUES_IQ4NL};

pub use mlc_group::{GroupSpec, QuantOptions, ScaleRule, ScaleType};

/// The WGSL a format contributes to a kernel: its file and the constants it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatWgsl {
    pub file: &'static str,
    pub consts: Vec<(&'static str, u32)>,
}

/// One way of storing a weight matrix on the GPU. See the module doc for the contract.
pub trait Format: Send + Sync + 'static {
    /// Short lowercase name, as on the command line and in labels (GGML's names for GGUF
    /// block types: `q4_0`, `q4_K`).
    fn name(&self) -> &'static str;

    /// Weights per segment (the kernels' unit of reading).
    fn seg(&self) -> usize;

    /// u32 code words one row of `cols` weights occupies (a multiple of 4).
    fn code_words_per_row(&self, cols: usize) -> usize;

    /// 16-bit scale units one row occupies.
    fn scale_halves_per_row(&self, cols: usize) -> usize;

    /// The WGSL file defining `Seg`, `load_seg`, `seg_dot` and `seg_weight`, and its
    /// constants.
    fn wgsl(&self) -> FormatWgsl;

    /// Weight `(row, k)` as the GPU decodes it: the CPU reference of the WGSL.
    fn weight_at(&self, w: &PackedWeight, row: usize, k: usize) -> f32;

    /// Whether K must be a whole number of segments (GGUF blocks cannot be padded).
    fn whole_segments(&self) -> bool {
        false
    }

    /// The GGML block type this format holds as stored, if any.
    fn ggml_type(&self) -> Option<GgmlType> {
        None
    }

    /// Repacks GGML blocks (`bytes`, as in a GGUF file, already checked to be `out.rows`
    /// rows of `out.cols` weights) into `out`'s zeroed planes.
    fn repack_ggml(&self, _bytes: &[u8], _out: &mut PackedWeight) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{} does not hold GGML blocks",
            self.name()
        )))
    }

    /// Packs a row-major f32 matrix (`out.rows` by `out.cols`) into `out`'s zeroed planes,
    /// for formats glim can write: MLC's group quantization (rounding) and the float formats.
    fn pack_into(
        &self,
        _weights: &[f32],
        _options: QuantOptions,
        _out: &mut PackedWeight,
    ) -> Result<()> {
        Err(Error::Unsupported(format!(
            "glim does not quantize to {}; it runs {} weights as a GGUF file stores them",
            self.name(),
            self.name()
        )))
    }

    /// MLC's group parameters, for the group-quantized formats.
    fn group_spec(&self) -> Option<GroupSpec> {
        None
    }
}

/// A weight format: a handle on one [`Format`], compared and hashed by name.
#[derive(Clone, Copy)]
pub struct WeightFormat(pub &'static dyn Format);

impl std::ops::Deref for WeightFormat {
    type Target = dyn Format;
    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for WeightFormat {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for WeightFormat {}

impl std::hash::Hash for WeightFormat {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl std::fmt::Debug for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl WeightFormat {
    pub const Q4F16: WeightFormat = WeightFormat(&mlc_group::Q4F16);
    pub const Q3F16: WeightFormat = WeightFormat(&mlc_group::Q3F16);
    pub const F16: WeightFormat = WeightFormat(&float::F16);
    pub const BF16: WeightFormat = WeightFormat(&float::BF16);
    pub const F32: WeightFormat = WeightFormat(&float::F32);
    pub const Q4_0: WeightFormat = WeightFormat(&ggml_legacy::Q4_0);
    pub const Q4_1: WeightFormat = WeightFormat(&ggml_legacy::Q4_1);
    pub const Q5_0: WeightFormat = WeightFormat(&ggml_legacy::Q5_0);
    pub const Q5_1: WeightFormat = WeightFormat(&ggml_legacy::Q5_1);
    pub const Q8_0: WeightFormat = WeightFormat(&ggml_legacy::Q8_0);
    pub const Q4_K: WeightFormat = WeightFormat(&ggml_k::Q4_K);
    pub const Q5_K: WeightFormat = WeightFormat(&ggml_k::Q5_K);
    pub const Q6_K: WeightFormat = WeightFormat(&ggml_k::Q6_K);
    pub const Q2_K: WeightFormat = WeightFormat(&ggml_k16::Q2_K);
    pub const Q3_K: WeightFormat = WeightFormat(&ggml_k16::Q3_K);
    pub const IQ4_NL: WeightFormat = WeightFormat(&ggml_legacy::IQ4_NL);
    pub const IQ4_XS: WeightFormat = WeightFormat(&ggml_iq4_xs::IQ4_XS);

    /// The formats glim packs from f32 values itself (MLC's and f16): `--quant` targets.
    pub const PACKABLE: [WeightFormat; 3] =
        [WeightFormat::Q4F16, WeightFormat::Q3F16, WeightFormat::F16];

    /// Every format the kernels run.
    pub const ALL: [WeightFormat; 17] = [
        WeightFormat::Q4F16,
        WeightFormat::Q3F16,
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::F32,
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q5_0,
        WeightFormat::Q5_1,
        WeightFormat::Q8_0,
        WeightFormat::Q4_K,
        WeightFormat::Q5_K,
        WeightFormat::Q6_K,
        WeightFormat::Q2_K,
        WeightFormat::Q3_K,
        WeightFormat::IQ4_NL,
        WeightFormat::IQ4_XS,
    ];

    /// The format that runs GGML type `ty` as stored, if glim has one.
    pub fn for_ggml(ty: GgmlType) -> Option<WeightFormat> {
        Self::ALL.into_iter().find(|f| f.ggml_type() == Some(ty))
    }

    /// A `--quant` target by name.
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

    /// Bytes per row on the GPU (codes and scales, before pairing scales into words).
    pub fn row_bytes(self, cols: usize) -> usize {
        self.code_words_per_row(cols) * 4 + self.scale_halves_per_row(cols) * 2
    }
}

/// A weight matrix in a [`WeightFormat`], on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWeight {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    /// `[rows, code_words_per_row]` words.
    pub codes: Vec<u32>,
    /// `[rows, scale_halves_per_row]` 16-bit units (empty for the float formats).
    pub scales: Vec<u16>,
}

impl PackedWeight {
    /// An all-zero matrix's planes, for a format's packer to fill.
    pub(crate) fn zeroed(format: WeightFormat, rows: usize, cols: usize) -> Self {
        Self {
            format,
            rows,
            cols,
            codes: vec![0; rows * format.code_words_per_row(cols)],
            scales: vec![0; rows * format.scale_halves_per_row(cols)],
        }
    }

    /// Quantizes a row-major `[rows, cols]` f32 matrix with the default options
    /// ([`ScaleRule::MinError`], [`ScaleType::F16`]).
    pub fn quantize(
        format: WeightFormat,
        weights: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        Self::quantize_with(format, weights, rows, cols, QuantOptions::default())
    }

    /// Packs a row-major `[rows, cols]` f32 matrix into `format` (`options` are ignored by
    /// the float formats). A group format refuses non-finite weights and scales that
    /// overflow f16; the GGUF formats are never written, only repacked.
    pub fn quantize_with(
        format: WeightFormat,
        weights: &[f32],
        rows: usize,
        cols: usize,
        options: QuantOptions,
    ) -> Result<Self> {
        if weights.len() != rows * cols {
            return Err(Error::Shape(format!(
                "{} weights do not fill a {rows}x{cols} matrix",
                weights.len()
            )));
        }
        let mut packed = Self::zeroed(format, rows, cols);
        format.pack_into(weights, options, &mut packed)?;
        Ok(packed)
    }

    /// `rows` rows of `cols` weights of GGML type `ty`, as a GGUF file stores them, in the
    /// format that runs them as stored (every value kept).
    pub fn from_ggml(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        let format = WeightFormat::for_ggml(ty).ok_or_else(|| {
            Error::Unsupported(format!("glim's kernels cannot run GGML type {ty} yet"))
        })?;
        let need = ty
            .row_bytes(cols)?
            .checked_mul(rows)
            .ok_or_else(|| Error::Shape(format!("{rows}x{cols} {ty} overflows")))?;
        if bytes.len() != need {
            return Err(Error::Shape(format!(
                "{rows}x{cols} {ty} weights take {need} bytes, got {}",
                bytes.len()
            )));
        }
        let mut packed = Self::zeroed(format, rows, cols);
        format.repack_ggml(bytes, &mut packed)?;
        Ok(packed)
    }

    /// A `[rows, cols]` matrix of pseudo-random weights in `format` (tests and
    /// benchmarks): random GGML blocks for the GGUF formats (every code and scale bit pattern
    /// occurs), random values in about ±0.5 packed for the others.
    pub fn synthetic(format: WeightFormat, rows: usize, cols: usize, seed: u64) -> Result<Self> {
        match format.ggml_type() {
            Some(ty) if ty.block_size() > 1 => {
                let blocks = rows * ty.row_bytes(cols)? / ty.type_size();
                let bytes = crate::formats::ggml::synthetic_blocks(ty, blocks, seed)?;
                Self::from_ggml(ty, &bytes, rows, cols)
            }
            _ => {
                let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
                let values: Vec<f32> = (0..rows * cols)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                    })
                    .collect();
                Self::quantize(format, &values, rows, cols)
            }
        }
    }

    /// Walks `bytes`, this matrix's rows of GGML blocks of type `ty`, block by block:
    /// `each(i, block, codes, scales)` gets block `i` of a row and that row's code words
    /// and scale units, for a format's repacking.
    pub(crate) fn for_each_ggml_block(
        &mut self,
        ty: GgmlType,
        bytes: &[u8],
        mut each: impl FnMut(usize, &[u8], &mut [u32], &mut [u16]),
    ) {
        let (words, halves) = (
            self.format.code_words_per_row(self.cols),
            self.format.scale_halves_per_row(self.cols),
        );
        let row_bytes = self.cols / ty.block_size() * ty.type_size();
        let rows = bytes.chunks_exact(row_bytes.max(1)).take(self.rows);
        let planes = self.codes.chunks_exact_mut(words.max(1));
        let scales = self.scales.chunks_exact_mut(halves.max(1));
        for ((row, codes), scales) in rows.zip(planes).zip(scales) {
            for (i, block) in row.chunks_exact(ty.type_size()).enumerate() {
                each(i, block, codes, scales);
            }
        }
    }

    /// Weight `(row, k)` as the GPU kernels see it.
    pub fn weight_at(&self, row: usize, k: usize) -> f32 {
        self.format.weight_at(self, row, k)
    }

    /// The whole matrix, dequantized, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            out.extend((0..self.cols).map(|k| self.weight_at(r, k)));
        }
        out
    }

    /// Row `row`'s code words.
    pub fn code_row(&self, row: usize) -> &[u32] {
        let n = self.format.code_words_per_row(self.cols);
        &self.codes[row * n..(row + 1) * n]
    }

    /// Row `row`'s 16-bit scale units.
    pub fn scale_row(&self, row: usize) -> &[u16] {
        let n = self.format.scale_halves_per_row(self.cols);
        &self.scales[row * n..(row + 1) * n]
    }

    /// Scale unit `i` of the whole plane as an f16.
    pub fn scale_f16(&self, i: usize) -> f16 {
        f16::from_bits(self.scales[i])
    }

    /// Scales as u32 words (two 16-bit units per word, low half first), as the kernels
    /// bind them.
    pub fn scale_words(&self) -> Vec<u32> {
        halves_to_words(&self.scales)
    }

    /// Bytes this weight occupies on the GPU.
    pub fn byte_size(&self) -> usize {
        self.codes.len() * 4 + self.scales.len() * 2
    }

    /// Bits per weight on the GPU.
    pub fn bits_per_weight(&self) -> f64 {
        self.byte_size() as f64 * 8.0 / (self.rows * self.cols).max(1) as f64
    }

    /// The rows `[a; b]` (two halves stacked) reordered `a0, b0, a1, b1, …`: a fused
    /// gate/up matrix as the SwiGLU matmul reads it, each output's two rows side by side.
    pub fn interleave_halves(&self) -> Result<PackedWeight> {
        if !self.rows.is_multiple_of(2) {
            return Err(Error::Shape(format!(
                "cannot interleave the halves of a matrix with {} rows",
                self.rows
            )));
        }
        let half = self.rows / 2;
        let order: Vec<usize> = (0..half).flat_map(|i| [i, half + i]).collect();
        Ok(self.select_rows(&order))
    }

    /// The matrix whose row `i` is this one's row `order[i]`.
    pub fn select_rows(&self, order: &[usize]) -> PackedWeight {
        let mut out = PackedWeight {
            rows: order.len(),
            codes: Vec::with_capacity(order.len() * self.format.code_words_per_row(self.cols)),
            scales: Vec::with_capacity(order.len() * self.format.scale_halves_per_row(self.cols)),
            ..*self
        };
        for &r in order {
            out.codes.extend_from_slice(self.code_row(r));
            out.scales.extend_from_slice(self.scale_row(r));
        }
        out
    }

    /// Matrices of one format and width stacked by rows.
    pub fn stack(parts: &[PackedWeight]) -> Result<PackedWeight> {
        let first = parts
            .first()
            .ok_or_else(|| Error::Shape("nothing to stack".into()))?;
        if let Some(odd) = parts
            .iter()
            .find(|p| p.format != first.format || p.cols != first.cols)
        {
            return Err(Error::Shape(format!(
                "cannot stack a {}x{} {} matrix under a {}-wide {} one",
                odd.rows, odd.cols, odd.format, first.cols, first.format
            )));
        }
        Ok(PackedWeight {
            rows: parts.iter().map(|p| p.rows).sum(),
            codes: parts.iter().flat_map(|p| p.codes.iter().copied()).collect(),
            scales: parts
                .iter()
                .flat_map(|p| p.scales.iter().copied())
                .collect(),
            ..*first
        })
    }
}

/// 16-bit units paired into u32 words, low half first (an odd last one padded with 0).
pub fn halves_to_words(halves: &[u16]) -> Vec<u32> {
    halves
        .chunks(2)
        .map(|pair| pair[0] as u32 | (pair.get(1).copied().unwrap_or(0) as u32) << 16)
        .collect()
}

/// Rounds `n` up to a multiple of 4 (code rows are whole 16-byte quads).
pub(crate) fn whole_quads(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// ggml's IQ4 grid ([`KVALUES_IQ4NL`]) as the WGSL constants `IQ4_GRID0..3`: its signed
/// bytes four to a word, for the formats whose codes index it.
pub(crate) fn iq4_grid_consts() -> [(&'static str, u32); 4] {
    let word =
        |i: usize| u32::from_le_bytes(std::array::from_fn(|b| KVALUES_IQ4NL[4 * i + b] as u8));
    [
        ("IQ4_GRID0", word(0)),
        ("IQ4_GRID1", word(1)),
        ("IQ4_GRID2", word(2)),
        ("IQ4_GRID3", word(3)),
    ]
}

/// A block's stored scale bytes kept as 16-bit scale units (little-endian pairs), as the
/// GGUF formats' scale planes hold them.
pub(crate) fn bytes_to_halves(bytes: &[u8], out: &mut [u16]) {
    for (h, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *h = u16::from_le_bytes([pair[0], pair[1]]);
    }
}

/// The bytes a block stored, back from its scale units ([`bytes_to_halves`]'s inverse).
pub(crate) fn halves_to_bytes<const N: usize>(halves: &[u16]) -> [u8; N] {
    let mut bytes = [0u8; N];
    for (pair, h) in bytes.chunks_exact_mut(2).zip(halves) {
        pair.copy_from_slice(&h.to_le_bytes());
    }
    bytes
}

/// The little-endian f16 at byte `at` of `b`, as its bits.
pub(crate) fn half_bits(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Packs `codes` (one per weight, at most `bits` wide) into `out`, `32 / bits` per word,
/// weight `k` in word `k / (32 / bits)` at bit `(k % (32 / bits)) * bits`.
pub(crate) fn pack_plane(codes: impl Iterator<Item = u32>, bits: u32, out: &mut [u32]) {
    let per_word = (32 / bits) as usize;
    for (k, c) in codes.enumerate() {
        out[k / per_word] |= c << ((k % per_word) as u32 * bits);
    }
}

/// Code `k` of a plane packed by [`pack_plane`].
pub(crate) fn plane_code(plane: &[u32], bits: u32, k: usize) -> u32 {
    let per_word = (32 / bits) as usize;
    (plane[k / per_word] >> ((k % per_word) as u32 * bits)) & ((1 << bits) - 1)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod ggml_tests;
