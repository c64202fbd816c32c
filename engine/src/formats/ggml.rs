//! GGML tensor types, as stored in GGUF files, and CPU decoders from them to f32.
//!
//! The decoders follow llama.cpp's reference dequantizers (`dequantize_row_*` in
//! `ggml/src/ggml-quants.c`, block layouts in `ggml/src/ggml-common.h`,
//! <https://github.com/ggml-org/llama.cpp>) value for value, including the order of the
//! f32 multiplications, so a tensor decodes here exactly as llama.cpp's CPU backend decodes it.
//! They exist to load weights (and to test GPU kernels against), not to be fast.
//!
//! All data is little-endian. Every type stores a tensor as a flat run of blocks; a block
//! holds [`GgmlType::block_size`] consecutive elements along `ne[0]` (the fastest-varying
//! dimension) in [`GgmlType::type_size`] bytes. The layouts decoded here (`d`, `m`, `dmin`
//! are f16 unless noted):
//!
//! - `Q4_0` (32 elements, 18 bytes): `d`, 16 bytes of nibbles. Byte `j` holds element `j`
//!   in its low nibble and element `j + 16` in its high nibble; `x = (q - 8) * d`.
//! - `Q4_1` (32, 20): `d`, `m`, nibbles as in `Q4_0`; `x = q * d + m`.
//! - `Q5_0` (32, 22): `d`, a u32 `qh` of fifth bits (bit `i` for element `i`), nibbles as in
//!   `Q4_0`; `x = (q - 16) * d`.
//! - `Q5_1` (32, 24): `d`, `m`, `qh`, nibbles; `x = q * d + m`.
//! - `Q8_0` (32, 34): `d`, 32 signed bytes; `x = q * d`.
//! - `Q4_K` (256, 144): `d`, `dmin`, 12 bytes packing eight 6-bit scales and eight 6-bit
//!   mins (see [`scale_min_k4`]), 128 bytes of nibbles. Sub-block `s` (32 elements) has
//!   `x = d * scale[s] * q - dmin * min[s]`; each 32 bytes of nibbles hold two sub-blocks,
//!   the even one in the low nibbles.
//! - `Q5_K` (256, 176): as `Q4_K` plus 32 bytes `qh` before the nibbles: the fifth bit of
//!   element `e` is bit `e / 32` of `qh[e % 32]`.
//! - `Q6_K` (256, 210): 128 bytes of low nibbles `ql`, 64 bytes of high 2-bit pairs `qh`,
//!   16 signed 8-bit scales (one per 16 elements), then `d`; `x = d * scale * (q - 32)`.
//! - `Q2_K` (256, 84): 16 bytes of scales (one per 16 elements: the scale in the low nibble,
//!   the min in the high), 64 bytes of 2-bit codes, `d`, `dmin`; `x = d * scale * q -
//!   dmin * min`. Element `e = 128 n + 32 j + l` is bits `2j..2j+2` of byte `32 n + l`.
//! - `Q3_K` (256, 110): 32 bytes `hmask`, 64 bytes of 2-bit codes as in `Q2_K`, 12 bytes
//!   packing sixteen 6-bit scales (see [`scale_k3`]), `d`; the third bit of element
//!   `e = 128 n + 32 j + l` is bit `4 n + j` of `hmask[l]`, and a clear bit takes 4 off:
//!   `x = d * (scale - 32) * (q - 4)` with `q` the 3-bit code.
//! - `IQ4_NL` (32, 18): `d`, nibbles as in `Q4_0`, each an index into
//!   [`KVALUES_IQ4NL`]; `x = d * kvalues[q]`.
//! - `IQ4_XS` (256, 136): `d`, a u16 `scales_h` (2 high bits per sub-block), 4 bytes
//!   `scales_l` (a nibble per sub-block), then 16 bytes of nibbles per 32-element sub-block
//!   as in `IQ4_NL`; `x = d * (scale - 32) * kvalues[q]` with the 6-bit `scale`.

use half::{bf16, f16};

use crate::error::{Error, Result};

/// Elements in a k-quant super-block (`QK_K`).
const QK_K: usize = 256;

/// The 16 values a 4-bit `IQ4_NL` / `IQ4_XS` code stands for (ggml's `kvalues_iq4nl`): a
/// non-linear grid, denser near zero.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// A GGML tensor element type, with GGML's numeric id as discriminant (ids 4, 5 and 31..=38
/// belonged to types that were removed and are never valid in a GGUF file).
///
/// The names are GGML's, so they read the same as in llama.cpp and in model file names.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

impl GgmlType {
    /// Every type glim knows the layout of (not all of them can be decoded).
    pub const ALL: [GgmlType; 32] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
    ];

    /// The type with GGML id `id`. Unknown ids (removed types, or types newer than glim) are
    /// `Error::Unsupported`: the file may be fine, glim just cannot size or read the tensor.
    pub fn from_id(id: u32) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.id() == id)
            .ok_or_else(|| Error::Unsupported(format!("unknown GGML tensor type id {id}")))
    }

    /// GGML's numeric id, as stored in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// GGML's name for the type (`ggml_type_name`), e.g. `q4_0`, `q6_K`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q8_1 => "q8_1",
            GgmlType::Q2_K => "q2_K",
            GgmlType::Q3_K => "q3_K",
            GgmlType::Q4_K => "q4_K",
            GgmlType::Q5_K => "q5_K",
            GgmlType::Q6_K => "q6_K",
            GgmlType::Q8_K => "q8_K",
            GgmlType::IQ2_XXS => "iq2_xxs",
            GgmlType::IQ2_XS => "iq2_xs",
            GgmlType::IQ3_XXS => "iq3_xxs",
            GgmlType::IQ1_S => "iq1_s",
            GgmlType::IQ4_NL => "iq4_nl",
            GgmlType::IQ3_S => "iq3_s",
            GgmlType::IQ2_S => "iq2_s",
            GgmlType::IQ4_XS => "iq4_xs",
            GgmlType::I8 => "i8",
            GgmlType::I16 => "i16",
            GgmlType::I32 => "i32",
            GgmlType::I64 => "i64",
            GgmlType::F64 => "f64",
            GgmlType::IQ1_M => "iq1_m",
            GgmlType::BF16 => "bf16",
            GgmlType::TQ1_0 => "tq1_0",
            GgmlType::TQ2_0 => "tq2_0",
            GgmlType::MXFP4 => "mxfp4",
        }
    }

    /// Elements per block (1 for plain scalar types).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::F64
            | GgmlType::I8
            | GgmlType::I16
            | GgmlType::I32
            | GgmlType::I64 => 1,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1
            | GgmlType::IQ4_NL
            | GgmlType::MXFP4 => 32,
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::Q8_K
            | GgmlType::IQ2_XXS
            | GgmlType::IQ2_XS
            | GgmlType::IQ3_XXS
            | GgmlType::IQ1_S
            | GgmlType::IQ3_S
            | GgmlType::IQ2_S
            | GgmlType::IQ4_XS
            | GgmlType::IQ1_M
            | GgmlType::TQ1_0
            | GgmlType::TQ2_0 => QK_K,
        }
    }

    /// Bytes per block (`ggml_type_size`), from the block structs in `ggml-common.h`.
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::I32 => 4,
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => 2,
            GgmlType::F64 | GgmlType::I64 => 8,
            GgmlType::I8 => 1,
            GgmlType::Q4_0 | GgmlType::IQ4_NL => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q8_1 => 36,
            GgmlType::MXFP4 => 17,
            GgmlType::Q2_K => 84,
            GgmlType::Q3_K => 110,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
            GgmlType::Q8_K => 292,
            GgmlType::IQ2_XXS => 66,
            GgmlType::IQ2_XS => 74,
            GgmlType::IQ3_XXS => 98,
            GgmlType::IQ1_S => 50,
            GgmlType::IQ3_S => 110,
            GgmlType::IQ2_S => 82,
            GgmlType::IQ4_XS => 136,
            GgmlType::IQ1_M => 56,
            GgmlType::TQ1_0 => 54,
            GgmlType::TQ2_0 => 66,
        }
    }

    /// Bytes that `n` consecutive elements occupy (`ggml_row_size`). `Error::Shape` when `n`
    /// is not a whole number of blocks or the size does not fit in `usize`.
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return Err(Error::Shape(format!(
                "{n} {} elements are not a whole number of {bs}-element blocks",
                self.name()
            )));
        }
        (n / bs).checked_mul(self.type_size()).ok_or_else(|| {
            Error::Shape(format!(
                "{n} {} elements overflow the address space",
                self.name()
            ))
        })
    }

    /// Whether [`dequantize`] can decode this type.
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q2_K
                | GgmlType::Q3_K
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
                | GgmlType::IQ4_NL
                | GgmlType::IQ4_XS
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Byte offsets of a block's f16 fields (`d`, `dmin`, `m`), for [`synthetic_blocks`].
fn half_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            &[0]
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        _ => &[],
    }
}

/// `n_blocks` blocks of `ty` with pseudo-random codes and scales from `seed`, as a GGUF file
/// would hold them (for tests and benchmarks: the formats' decoders see every code and
/// scale bit pattern). Float types get values in about ±1; a block's f16 scales are in
/// ±[2^-8, 2^-6] (k-quants, whose sub-block scales multiply them by up to 63: 64 times
/// less), so weights stay around 1 at most. `Error::Unsupported` for types without a layout
/// here.
pub fn synthetic_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Result<Vec<u8>> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut unit = move || (next() >> 40) as f32 / (1u64 << 24) as f32;
    let size = ty.type_size();
    let mut out = Vec::with_capacity(n_blocks * size);
    for _ in 0..n_blocks {
        match ty {
            GgmlType::F32 => out.extend((unit() * 2.0 - 1.0).to_le_bytes()),
            GgmlType::F16 => out.extend(f16::from_f32(unit() * 2.0 - 1.0).to_le_bytes()),
            GgmlType::BF16 => out.extend(bf16::from_f32(unit() * 2.0 - 1.0).to_le_bytes()),
            _ if half_fields(ty).is_empty() => {
                return Err(Error::Unsupported(format!(
                    "no synthetic blocks of GGML type {ty}"
                )))
            }
            _ => {
                let start = out.len();
                out.extend((0..size).map(|_| (unit() * 256.0) as u8));
                let k_quant = ty.block_size() == QK_K;
                for &at in half_fields(ty) {
                    let sign = if unit() < 0.5 { -1.0 } else { 1.0 };
                    let d = sign * (1.0 + 3.0 * unit()) / if k_quant { 16384.0 } else { 256.0 };
                    out[start + at..start + at + 2]
                        .copy_from_slice(&f16::from_f32(d).to_le_bytes());
                }
            }
        }
    }
    Ok(out)
}

/// Decodes `n_elements` values of type `ty` from `bytes` to f32, in storage order.
///
/// `bytes` must be exactly [`GgmlType::row_bytes`]`(n_elements)` long (`Error::Shape`
/// otherwise); types without a decoder are `Error::Unsupported`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    check(ty, bytes, n_elements)?;
    let mut out = vec![0.0f32; n_elements];
    decode(ty, bytes, &mut out);
    Ok(out)
}

/// Like [`dequantize`], into a caller's buffer: `out.len()` is the element count.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check(ty, bytes, out.len())?;
    decode(ty, bytes, out);
    Ok(())
}

fn check(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<()> {
    if !ty.can_dequantize() {
        return Err(Error::Unsupported(format!(
            "glim cannot decode GGML type {ty}"
        )));
    }
    let need = ty.row_bytes(n_elements)?;
    if bytes.len() != need {
        return Err(Error::Shape(format!(
            "{n_elements} {ty} elements take {need} bytes, got {}",
            bytes.len()
        )));
    }
    Ok(())
}

/// Decodes whole blocks; `check` has matched the lengths and the type.
fn decode(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let blocks = bytes
        .chunks_exact(ty.type_size())
        .zip(out.chunks_exact_mut(ty.block_size()));
    match ty {
        GgmlType::F32 => {
            blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = half_at(b, 0)),
        GgmlType::BF16 => {
            blocks.for_each(|(b, y)| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32())
        }
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| block_q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| block_q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| block_q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| block_q5_1(b, y)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| block_q8_0(b, y)),
        GgmlType::Q4_K => blocks.for_each(|(b, y)| block_q4_k(b, y)),
        GgmlType::Q5_K => blocks.for_each(|(b, y)| block_q5_k(b, y)),
        GgmlType::Q6_K => blocks.for_each(|(b, y)| block_q6_k(b, y)),
        GgmlType::Q2_K => blocks.for_each(|(b, y)| block_q2_k(b, y)),
        GgmlType::Q3_K => blocks.for_each(|(b, y)| block_q3_k(b, y)),
        GgmlType::IQ4_NL => blocks.for_each(|(b, y)| block_iq4_nl(b, y)),
        GgmlType::IQ4_XS => blocks.for_each(|(b, y)| block_iq4_xs(b, y)),
        // `check` rejected everything else.
        _ => {}
    }
}

/// The f16 at byte `at` of `b`, widened.
fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The 5-bit codes of a `Q5_0` / `Q5_1` block: nibbles from `qs`, fifth bits from `qh`.
fn q5_codes(qh: u32, qs: &[u8]) -> impl Iterator<Item = (usize, i32, i32)> + '_ {
    qs.iter().enumerate().map(move |(j, &q)| {
        let lo = (q & 0x0F) as u32 | ((qh >> j) & 1) << 4;
        let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        (j, lo as i32, hi as i32)
    })
}

fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, lo, hi) in q5_codes(qh, &b[6..22]) {
        y[j] = (lo - 16) as f32 * d;
        y[j + 16] = (hi - 16) as f32 * d;
    }
}

fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, lo, hi) in q5_codes(qh, &b[8..24]) {
        y[j] = lo as f32 * d + m;
        y[j + 16] = hi as f32 * d + m;
    }
}

fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = (q as i8) as f32 * d;
    }
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of a `Q4_K` / `Q5_K`
/// block (llama.cpp's `get_scale_min_k4`): sub-blocks 0..4 keep their 6-bit scale and min in
/// the low bits of bytes `j` and `j + 4`; sub-blocks 4..8 keep the low 4 bits in the two
/// nibbles of byte `j + 4` and the high 2 bits in the top bits of bytes `j - 4` (scale) and
/// `j` (min).
pub fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    // Four chunks of 64 elements; each reads 32 bytes of nibbles, low nibbles first.
    for (c, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        for (l, &q) in q.iter().enumerate() {
            y[l] = d1 * (q & 0x0F) as f32 - m1;
            y[l + 32] = d2 * (q >> 4) as f32 - m2;
        }
    }
}

fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let ql = &b[48..176];
    for (c, (q, y)) in ql.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        // Sub-block 2c takes its fifth bits from bit 2c of qh, sub-block 2c + 1 from the next.
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for (l, &q) in q.iter().enumerate() {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((q & 0x0F) + h1) as f32 - m1;
            y[l + 32] = d2 * ((q >> 4) + h2) as f32 - m2;
        }
    }
}

fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    // Two halves of 128 elements: 64 bytes of ql, 32 of qh and 8 scales each.
    for (h, y) in y.chunks_exact_mut(128).enumerate() {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
        let sc = &b[192 + 8 * h..192 + 8 * h + 8];
        let scale = |i: usize| d * (sc[i] as i8) as f32;
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = scale(is) * q1 as f32;
            y[l + 32] = scale(is + 2) * q2 as f32;
            y[l + 64] = scale(is + 4) * q3 as f32;
            y[l + 96] = scale(is + 6) * q4 as f32;
        }
    }
}

/// The 2-bit code of element `e` of a `Q2_K` / `Q3_K` block from its 64 code bytes: each
/// 128 elements read 32 bytes, four 2-bit fields per byte, 32 elements per field.
pub fn k2_code(qs: &[u8], e: usize) -> u8 {
    let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
    (qs[32 * n + l] >> (2 * j)) & 3
}

/// The 6-bit scale (0..64, before ggml takes 32 off) of sub-block `t` (16 elements, 0..16)
/// of a `Q3_K` block, from its 12 scale bytes (llama.cpp unpacks them with `kmask1/2`): the
/// low 4 bits are nibble `t / 8` of byte `t % 8`, the high 2 bits are bits `2 (t / 4)..` of
/// byte `8 + t % 4`.
pub fn scale_k3(t: usize, s: &[u8]) -> u8 {
    let low = (s[t % 8] >> (4 * (t / 8))) & 0x0F;
    let high = (s[8 + t % 4] >> (2 * (t / 4))) & 3;
    low | (high << 4)
}

/// The 6-bit scale (0..64, before ggml takes 32 off) of sub-block `ib` (32 elements) of an
/// `IQ4_XS` block, from its `scales_h` and `scales_l`.
pub fn scale_iq4_xs(ib: usize, scales_h: u16, scales_l: &[u8]) -> u8 {
    let low = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
    let high = ((scales_h >> (2 * ib)) & 3) as u8;
    low | (high << 4)
}

fn block_q2_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 80), half_at(b, 82));
    let (scales, qs) = (&b[..16], &b[16..80]);
    for (e, y) in y.iter_mut().enumerate() {
        let sc = scales[e / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *y = dl * k2_code(qs, e) as f32 - ml;
    }
}

fn block_q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
    let d = half_at(b, 108);
    for (e, y) in y.iter_mut().enumerate() {
        let dl = d * (scale_k3(e / 16, scales) as i32 - 32) as f32;
        let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
        let high = (hmask[l] >> (4 * n + j)) & 1;
        let q = k2_code(qs, e) as i32 - if high == 1 { 0 } else { 4 };
        *y = dl * q as f32;
    }
}

/// Nibbles as in `Q4_0` (element `j` low, `j + 16` high), through [`KVALUES_IQ4NL`].
fn iq4_nibbles(dl: f32, qs: &[u8], y: &mut [f32]) {
    for (j, &q) in qs.iter().enumerate() {
        y[j] = dl * KVALUES_IQ4NL[(q & 0x0F) as usize] as f32;
        y[j + 16] = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
    }
}

fn block_iq4_nl(b: &[u8], y: &mut [f32]) {
    iq4_nibbles(half_at(b, 0), &b[2..18], y);
}

fn block_iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let scales_l = &b[4..8];
    for (ib, (qs, y)) in b[8..136]
        .chunks_exact(16)
        .zip(y.chunks_exact_mut(32))
        .enumerate()
    {
        let dl = d * (scale_iq4_xs(ib, scales_h, scales_l) as i32 - 32) as f32;
        iq4_nibbles(dl, qs, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn ids_round_trip_and_unknown_ids_are_unsupported() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()).unwrap(), t);
        }
        for id in [4, 5, 31, 36, 38, 40, 1000, u32::MAX] {
            assert!(
                matches!(GgmlType::from_id(id), Err(Error::Unsupported(_))),
                "id {id}"
            );
        }
    }

    #[test]
    fn sizes_match_ggml() {
        let table = [
            (GgmlType::F32, 1, 4),
            (GgmlType::F16, 1, 2),
            (GgmlType::BF16, 1, 2),
            (GgmlType::Q4_0, 32, 18),
            (GgmlType::Q4_1, 32, 20),
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q8_0, 32, 34),
            (GgmlType::Q2_K, 256, 84),
            (GgmlType::Q3_K, 256, 110),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q5_K, 256, 176),
            (GgmlType::Q6_K, 256, 210),
            (GgmlType::IQ4_XS, 256, 136),
        ];
        for (t, bs, ts) in table {
            assert_eq!((t.block_size(), t.type_size()), (bs, ts), "{t}");
        }
        assert_eq!(GgmlType::Q4_0.row_bytes(576).unwrap(), 18 * 18);
        assert_eq!(GgmlType::Q6_K.row_bytes(512).unwrap(), 420);
        assert!(GgmlType::Q4_0.row_bytes(33).is_err());
        assert!(GgmlType::Q4_K.row_bytes(128).is_err());
        assert!(GgmlType::F32.row_bytes(usize::MAX).is_err());
        assert_eq!(GgmlType::Q4_K.row_bytes(0).unwrap(), 0);
    }

    #[test]
    fn bad_lengths_and_unsupported_types_are_errors() {
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0; 17], 32),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0; 19], 32),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0; 18], 16),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            dequantize(GgmlType::F32, &[0; 7], 2),
            Err(Error::Shape(_))
        ));
        match dequantize(GgmlType::IQ3_S, &[0; 110], 256) {
            Err(Error::Unsupported(msg)) => assert!(msg.contains("iq3_s"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            dequantize(GgmlType::IQ2_XXS, &[0; 66], 256),
            Err(Error::Unsupported(_))
        ));
        assert_eq!(
            dequantize(GgmlType::Q6_K, &[], 0).unwrap(),
            Vec::<f32>::new()
        );
        let mut out = [0.0f32; 3];
        assert!(dequantize_into(GgmlType::F16, &[0; 4], &mut out).is_err());
    }

    #[test]
    fn float_types() {
        let mut b = Vec::new();
        for x in [1.5f32, -2.25, 0.0] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(dequantize(GgmlType::F32, &b, 3).unwrap(), [1.5, -2.25, 0.0]);

        let b: Vec<u8> = [0.5f32, -3.0, 65504.0].iter().flat_map(|&x| h(x)).collect();
        assert_eq!(
            dequantize(GgmlType::F16, &b, 3).unwrap(),
            [0.5, -3.0, 65504.0]
        );

        // bf16 is the top half of an f32: 1.0 = 0x3F80, -2.5 = 0xC020.
        let b = [0x80, 0x3F, 0x20, 0xC0];
        assert_eq!(dequantize(GgmlType::BF16, &b, 2).unwrap(), [1.0, -2.5]);
    }

    #[test]
    fn q4_0_block() {
        // d = 0.5; byte j holds code j (element j) and code 15 - j (element j + 16).
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        assert_eq!(y[0], -4.0); // (0 - 8) * 0.5
        assert_eq!(y[8], 0.0); // (8 - 8) * 0.5
        assert_eq!(y[15], 3.5); // (15 - 8) * 0.5
        assert_eq!(y[16], 3.5); // (15 - 8) * 0.5
        assert_eq!(y[31], -4.0); // (0 - 8) * 0.5
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
        }
    }

    #[test]
    fn q4_1_block() {
        // d = 0.25, m = -1: x = q / 4 - 1.
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | (3 << 4)));
        let y = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        assert_eq!(y[0], -1.0);
        assert_eq!(y[4], 0.0);
        assert_eq!(y[15], 2.75);
        assert!(y[16..].iter().all(|&v| v == -0.25));
    }

    #[test]
    fn q5_blocks() {
        // Low nibbles all 1, high nibbles all 2; fifth bit set for elements 0 and 16 + 3.
        let qh: u32 = 1 | (1 << 19);
        let qs = [0x21u8; 16];
        let mut b = h(2.0).to_vec();
        b.extend(qh.to_le_bytes());
        b.extend(qs);
        let y = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        assert_eq!(y[0], (17.0 - 16.0) * 2.0);
        assert_eq!(y[1], (1.0 - 16.0) * 2.0);
        assert_eq!(y[16], (2.0 - 16.0) * 2.0);
        assert_eq!(y[19], (18.0 - 16.0) * 2.0);

        let mut b = h(0.5).to_vec();
        b.extend(h(3.0));
        b.extend(qh.to_le_bytes());
        b.extend(qs);
        let y = dequantize(GgmlType::Q5_1, &b, 32).unwrap();
        assert_eq!(y[0], 17.0 * 0.5 + 3.0);
        assert_eq!(y[1], 0.5 + 3.0);
        assert_eq!(y[19], 18.0 * 0.5 + 3.0);
    }

    #[test]
    fn q8_0_block() {
        let mut b = h(0.125).to_vec();
        b.extend((0..32).map(|j: i32| (j * 8 - 128) as i8 as u8));
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        assert_eq!(y[0], -16.0); // -128 / 8
        assert_eq!(y[16], 0.0);
        assert_eq!(y[31], 15.0); // 120 / 8
                                 // Two blocks decode independently.
        let mut two = b.clone();
        two.extend(h(-1.0));
        two.extend([1u8; 32]);
        let y = dequantize(GgmlType::Q8_0, &two, 64).unwrap();
        assert_eq!(y[31], 15.0);
        assert!(y[32..].iter().all(|&v| v == -1.0));
    }

    /// Packs eight 6-bit scales and mins the way llama.cpp's `quantize_row_q4_K_ref` does.
    fn pack_k4(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = sc[j];
                s[j + 4] = m[j];
            } else {
                s[j + 4] = (sc[j] & 0xF) | ((m[j] & 0xF) << 4);
                s[j - 4] |= (sc[j] >> 4) << 6;
                s[j] |= (m[j] >> 4) << 6;
            }
        }
        s
    }

    const SC: [u8; 8] = [1, 63, 17, 32, 37, 5, 48, 60];
    const MN: [u8; 8] = [0, 2, 63, 16, 50, 33, 9, 1];

    #[test]
    fn k4_scale_packing() {
        let s = pack_k4(SC, MN);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &s), (SC[j], MN[j]), "sub-block {j}");
        }
    }

    /// Element `e`'s 4-bit code: sub-block `e / 32`, 32 bytes per pair of sub-blocks, the
    /// even sub-block in the low nibbles.
    fn k_nibble(qs: &[u8], e: usize) -> u8 {
        let byte = qs[32 * (e / 64) + e % 32];
        if (e / 32).is_multiple_of(2) {
            byte & 0xF
        } else {
            byte >> 4
        }
    }

    #[test]
    fn q4_k_block() {
        let (d, dmin) = (2.0f32, 0.5f32);
        let qs: Vec<u8> = (0..128).map(|i| (i * 37 % 256) as u8).collect();
        let mut b = h(d).to_vec();
        b.extend(h(dmin));
        b.extend(pack_k4(SC, MN));
        b.extend(&qs);
        let y = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
        // By hand: element 0 is byte 0 = 0, low nibble 0, sub-block 0: 2*1*0 - 0.5*0 = 0.
        assert_eq!(y[0], 0.0);
        // Element 33: byte 1 = 37 = 0x25, high nibble 2, sub-block 1: 2*63*2 - 0.5*2 = 251.
        assert_eq!(y[33], 251.0);
        // Element 165: sub-block 5, byte 64 + 5 = 69, 69 * 37 % 256 = 249 = 0xF9, high
        // nibble 15: 2*5*15 - 0.5*33 = 133.5.
        assert_eq!(y[165], 133.5);
        // Element 200: sub-block 6, byte 96 + 8 = 104, 104 * 37 % 256 = 8, low nibble 8:
        // 2*48*8 - 0.5*9 = 763.5.
        assert_eq!(y[200], 763.5);
        for (e, &v) in y.iter().enumerate() {
            let s = e / 32;
            let want = d * SC[s] as f32 * k_nibble(&qs, e) as f32 - dmin * MN[s] as f32;
            assert_eq!(v, want, "element {e}");
        }
    }

    #[test]
    fn q5_k_block() {
        let (d, dmin) = (0.25f32, 1.0f32);
        let qh: Vec<u8> = (0..32).map(|i| (i * 91 % 256) as u8).collect();
        let qs: Vec<u8> = (0..128).map(|i| (i * 53 % 256) as u8).collect();
        let mut b = h(d).to_vec();
        b.extend(h(dmin));
        b.extend(pack_k4(SC, MN));
        b.extend(&qh);
        b.extend(&qs);
        let y = dequantize(GgmlType::Q5_K, &b, 256).unwrap();
        // By hand: element 0: qs[0] = 0, qh[0] = 0: 0.25*1*0 - 1*0 = 0.
        assert_eq!(y[0], 0.0);
        // Element 1: qs[1] = 53 = 0x35, low nibble 5; qh[1] = 91 = 0b0101_1011, bit 0 set:
        // code 21, sub-block 0: 0.25*1*21 - 0 = 5.25.
        assert_eq!(y[1], 5.25);
        // Element 34: sub-block 1, qs[2] = 106 = 0x6A, high nibble 6; qh[2] = 182 =
        // 0b1011_0110, bit 1 set: code 22: 0.25*63*22 - 1*2 = 344.5.
        assert_eq!(y[34], 344.5);
        for (e, &v) in y.iter().enumerate() {
            let s = e / 32;
            let code = k_nibble(&qs, e) + 16 * ((qh[e % 32] >> s) & 1);
            let want = d * SC[s] as f32 * code as f32 - dmin * MN[s] as f32;
            assert_eq!(v, want, "element {e}");
        }
    }

    #[test]
    fn q6_k_block() {
        let d = 0.5f32;
        let ql: Vec<u8> = (0..128).map(|i| (i * 29 % 256) as u8).collect();
        let qh: Vec<u8> = (0..64).map(|i| (i * 113 % 256) as u8).collect();
        let sc: [i8; 16] = [
            1, -2, 3, -4, 5, -6, 7, -8, 127, -128, 0, 10, -10, 20, -20, 64,
        ];
        let mut b = ql.clone();
        b.extend(&qh);
        b.extend(sc.iter().map(|&s| s as u8));
        b.extend(h(d));
        assert_eq!(b.len(), 210);
        let y = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        // By hand: element 0: ql[0] = 0, qh[0] = 0, code 0 - 32 = -32, scale 1: 0.5*1*-32.
        assert_eq!(y[0], -16.0);
        // Element 33: ql[33] = 33*29 % 256 = 189 = 0xBD, low nibble 13; qh[1] = 113 =
        // 0b0111_0001, bits 2..4 = 0: code 13 - 32 = -19; scale index 33 / 16 = 2 -> 3:
        // 0.5*3*-19 = -28.5.
        assert_eq!(y[33], -28.5);
        // Element 130 (second half, l = 2): ql[64 + 2] = 66*29 % 256 = 122 = 0x7A, low
        // nibble 10; qh[32 + 2] = 34*113 % 256 = 2 = 0b10, bits 0..2 = 2: code 10 | 32 = 42,
        // 42 - 32 = 10; scale index 8 -> 127: 0.5*127*10 = 635.
        assert_eq!(y[130], 635.0);
        for (e, &v) in y.iter().enumerate() {
            let (half, r) = (e / 128, e % 128);
            let (g, l) = (r / 32, r % 32);
            let byte = ql[64 * half + 32 * (g % 2) + l];
            let lo = if g < 2 { byte & 0xF } else { byte >> 4 };
            let hi = (qh[32 * half + l] >> (2 * g)) & 3;
            let code = (lo | (hi << 4)) as i32 - 32;
            let want = d * sc[e / 16] as f32 * code as f32;
            assert_eq!(v, want, "element {e}");
        }
    }
}
