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
//! # Scale rules ([`ScaleRule`])
//!
//! A decoder only computes `(code - max_int) * scale`, so any scale keeps the bytes MLC's.
//!
//! - `MaxAbs`: the rule above, bit for bit MLC (f16 arithmetic) with [`ScaleType::F16`].
//! - `MinError` (glim's default): per group, from the f32 weights, the least-squares scale
//!   `sum(w q) / sum(q q)` of the best of the code vectors `q = round(w * t)` for 16 inverse
//!   scales `t` evenly over `[(max_int - 1) / max_abs, (max_int + 2) / max_abs]`; that scale
//!   rounded to the scale type, the value on its other side, and the MaxAbs scale are each
//!   tried with their nearest codes `clamp(round(w / scale), -max_int, max_int) + max_int`,
//!   and the smallest squared error over the real weights wins (ties: MaxAbs, nearest,
//!   other). So it is never worse than MaxAbs's scale; it trades clipping the largest weight
//!   against a finer step. Padding stays code 0; an all-zero group (or one below 2^-25,
//!   nearer 0 than any f16 scale reaches) gets scale 0 and code `max_int`.
//!
//! Either rule refuses non-finite weights and a scale that overflows f16 (MaxAbs with F16
//! also weights beyond f16, as MLC rounds them to f16 first). [`ScaleType::Bf16`] keeps
//! every scale exact in bf16 too, for `q4f32_1` whose f32 scales are stored as bf16.
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

/// How each group's scale is chosen. Either way the bytes are MLC's format: a decoder only
/// computes `(code - max_int) * scale`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ScaleRule {
    /// MLC's rule, `scale = max_abs / max_int` (bit for bit MLC with [`ScaleType::F16`]).
    MaxAbs,
    /// The scale, and its nearest codes, with the smallest squared error over the group.
    #[default]
    MinError,
}

/// The type a scale must be exactly representable in. The GPU always holds f16 scales.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ScaleType {
    /// f16 scales (`q4f16_1`, `q3f16_1`).
    #[default]
    F16,
    /// Scales exact in bf16 and in f16 (rounded to bf16, nearest even, then to f16): for
    /// MLC's `q4f32_1`, whose f32 scales are stored as bf16.
    Bf16,
}

/// How [`PackedWeight::quantize_with`] quantizes. The default is what glim uses everywhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QuantOptions {
    pub rule: ScaleRule,
    pub scale_type: ScaleType,
}

impl PackedWeight {
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

    /// Quantizes a row-major `[rows, cols]` f32 matrix (`options` are ignored for F16). A
    /// group format refuses non-finite weights and scales that overflow f16.
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
        let words = format.words_per_row(cols);
        let mut codes = vec![0u32; rows * words];
        let mut scales = vec![f16::ZERO; rows * format.scales_per_row(cols)];
        match format.group_spec() {
            Some(spec) => quantize_matrix(&spec, options, weights, cols, &mut codes, &mut scales)?,
            None => {
                for (r, row) in weights.chunks_exact(cols.max(1)).enumerate().take(rows) {
                    let out = &mut codes[r * words..(r + 1) * words];
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
        Ok(PackedWeight {
            codes: interleave_rows(&self.codes, half, self.format.words_per_row(self.cols)),
            scales: interleave_rows(&self.scales, half, self.format.scales_per_row(self.cols)),
            ..*self
        })
    }
}

/// Rows `0..half` and `half..2 half` of `width`-wide rows, alternated.
fn interleave_rows<T: Copy>(data: &[T], half: usize, width: usize) -> Vec<T> {
    if width == 0 {
        return Vec::new();
    }
    let (a, b) = data.split_at(half * width);
    a.chunks(width)
        .zip(b.chunks(width))
        .flat_map(|(ra, rb)| ra.iter().chain(rb).copied())
        .collect()
}

/// Below this a group's weights are all closer to 0 than to any nonzero code of the smallest
/// f16 scale (2^-24): the best scale is 0.
const TINY: f32 = 1.0 / (1u32 << 25) as f32;
/// MinError samples inverse scales over `[(max_int - BELOW) / max_abs, (max_int + ABOVE) /
/// max_abs]`: from codes one level short of the range to clipping the largest weights.
const SWEEP_BELOW: f32 = 1.0;
const SWEEP_ABOVE: f32 = 2.0;
/// Weights per thread worth spawning it for.
#[cfg(not(target_arch = "wasm32"))]
const MIN_WEIGHTS_PER_THREAD: usize = 1 << 16;

/// Quantizes whole rows, split over threads on native targets.
fn quantize_matrix(
    spec: &GroupSpec,
    options: QuantOptions,
    weights: &[f32],
    cols: usize,
    codes: &mut [u32],
    scales: &mut [f16],
) -> Result<()> {
    if cols == 0 || weights.is_empty() {
        return Ok(());
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let rows = weights.len() / cols;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = threads
            .min(weights.len() / MIN_WEIGHTS_PER_THREAD)
            .min(rows);
        if threads > 1 {
            let per = rows.div_ceil(threads);
            let (words, per_row) = (codes.len() / rows, scales.len() / rows);
            return std::thread::scope(|s| {
                let handles: Vec<_> = weights
                    .chunks(per * cols)
                    .zip(codes.chunks_mut(per * words))
                    .zip(scales.chunks_mut(per * per_row))
                    .enumerate()
                    .map(|(i, ((w, c), sc))| {
                        s.spawn(move || quantize_rows(spec, options, w, cols, c, sc, i * per))
                    })
                    .collect();
                // In row order, so the error reported is the first one whatever the split.
                handles
                    .into_iter()
                    .try_for_each(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            });
        }
    }
    quantize_rows(spec, options, weights, cols, codes, scales, 0)
}

/// Quantizes the rows `weights` holds (the first is row `row0` of the matrix) into their
/// zeroed `codes` and their `scales`.
fn quantize_rows(
    spec: &GroupSpec,
    options: QuantOptions,
    weights: &[f32],
    cols: usize,
    codes: &mut [u32],
    scales: &mut [f16],
    row0: usize,
) -> Result<()> {
    let rows = weights.len() / cols;
    let (words, per_row) = (codes.len() / rows, scales.len() / rows);
    let wpg = spec.words_per_group();
    for (r, row) in weights.chunks_exact(cols).enumerate() {
        let out = &mut codes[r * words..(r + 1) * words];
        for (g, group) in row.chunks(spec.group_size).enumerate() {
            if let Some(j) = group.iter().position(|w| !w.is_finite()) {
                return Err(Error::Invalid(format!(
                    "weight ({}, {}) is not finite",
                    row0 + r,
                    g * spec.group_size + j
                )));
            }
            let out = &mut out[g * wpg..(g + 1) * wpg];
            let scale = match (spec.bits, options.rule, options.scale_type) {
                (4, ScaleRule::MaxAbs, ScaleType::F16) => mlc_group::<32, 4>(group, out),
                (4, ..) => group_kernel::<32, 4>(options, group, out),
                (3, ScaleRule::MaxAbs, ScaleType::F16) => mlc_group::<40, 3>(group, out),
                (3, ..) => group_kernel::<40, 3>(options, group, out),
                _ => unreachable!("no {}-bit group format", spec.bits),
            };
            if !scale.is_finite() {
                return Err(Error::Invalid(format!(
                    "row {} group {g}: the scale overflows f16",
                    row0 + r
                )));
            }
            scales[r * per_row + g] = scale;
        }
    }
    Ok(())
}

/// Packs a group's `N` codes (padding already code 0), lowest bits first.
#[inline(always)]
fn pack<const N: usize, const BITS: u32>(codes: &[u8; N], out: &mut [u32]) {
    let per_word = (32 / BITS) as usize;
    for (word, chunk) in out.iter_mut().zip(codes.chunks_exact(per_word)) {
        *word = chunk
            .iter()
            .enumerate()
            .fold(0, |acc, (l, &c)| acc | (c as u32) << (l as u32 * BITS));
    }
}

/// MLC's `q*f16_1` group of `N` weights, `BITS` each, in f16 arithmetic: the weights rounded
/// to f16, `scale = max_abs / max_int`, `code = round(w / scale + max_int)`.
fn mlc_group<const N: usize, const BITS: u32>(group: &[f32], out: &mut [u32]) -> f16 {
    let max_int = ((1 << (BITS - 1)) - 1) as f32;
    let max_abs = group
        .iter()
        .map(|&w| f16_round(w).abs())
        .fold(0.0f32, f32::max);
    let scale = f16::from_f32(max_abs / max_int);
    let s = scale.to_f32();
    let mut codes = [0u8; N];
    for (code, &w) in codes.iter_mut().zip(group) {
        *code = if s == 0.0 {
            max_int as u8
        } else {
            let scaled = f16_round(f16_round(f16_round(w) / s) + max_int);
            scaled.round_ties_even().clamp(0.0, 2.0 * max_int) as u8
        };
    }
    pack::<N, BITS>(&codes, out);
    scale
}

/// Adding then subtracting 1.5 * 2^23 rounds an f32 below 2^22 to an integer, ties to even,
/// in plain (vectorizable) arithmetic.
const ROUNDER: f32 = 12_582_912.0;

/// The signed code `round(w / s)`, clamped to `±m`, as an f32.
#[inline(always)]
fn nearest(w: f32, s: f32, m: f32) -> f32 {
    let x = w / s;
    let x = if x < -m {
        -m
    } else if x > m {
        m
    } else {
        x
    };
    (x + ROUNDER) - ROUNDER
}

/// Squared error of the group with scale `s` (0 or finite) and its nearest codes; the zero
/// padding adds nothing.
#[inline(always)]
fn sq_error<const N: usize>(w: &[f32; N], s: f32, m: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    for c in 0..N / 8 {
        for (l, a) in acc.iter_mut().enumerate() {
            let x = w[c * 8 + l];
            let d = if s == 0.0 {
                x
            } else {
                nearest(x, s, m) * s - x
            };
            *a += d * d;
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Rounds a scale to the nearest value of the scale type, and gives also the value on the
/// other side of `s`, if any (else the nearest again). A scale past f16's range stays
/// infinite rather than fall back to f16's largest.
fn round_scale(ty: ScaleType, s: f32) -> [f16; 2] {
    let [near, other] = match ty {
        ScaleType::F16 => {
            let h = f16::from_f32(s);
            [h, f16::from_bits(neighbour(h.to_bits(), h.to_f32(), s))]
        }
        ScaleType::Bf16 => {
            let b = half::bf16::from_f32(s);
            let other = half::bf16::from_bits(neighbour(b.to_bits(), b.to_f32(), s));
            [bf16_to_f16(b), bf16_to_f16(other)]
        }
    };
    [near, if near.is_finite() { other } else { near }]
}

/// The bits of the positive float on the other side of `s` from `(bits, value)`.
fn neighbour(bits: u16, value: f32, s: f32) -> u16 {
    if value < s {
        bits + 1
    } else if value > s && bits > 0 {
        bits - 1
    } else {
        bits
    }
}

/// A bf16 rounded to f16: still exact in bf16 (f16's grid is finer above 2^-14, and below
/// it rounding to multiples of 2^-24 only drops low bits).
fn bf16_to_f16(b: half::bf16) -> f16 {
    f16::from_f32(b.to_f32())
}

/// The MaxAbs scale in `ty`: MLC's f16 arithmetic for F16, f32 for Bf16 (`q4f32_1`).
fn max_abs_scale(ty: ScaleType, max_abs: f32, max_int: f32) -> f16 {
    match ty {
        ScaleType::F16 => f16::from_f32(f16_round(max_abs) / max_int),
        ScaleType::Bf16 => bf16_to_f16(half::bf16::from_f32(max_abs / max_int)),
    }
}

/// One group of `N` weights (`group.len()` real, the rest padding), `BITS` each, by
/// `options` (all but MLC's own): packs the codes into `out` and returns the scale, or a
/// non-finite one when every candidate overflows f16.
fn group_kernel<const N: usize, const BITS: u32>(
    options: QuantOptions,
    group: &[f32],
    out: &mut [u32],
) -> f16 {
    let mut w = [0.0f32; N];
    w[..group.len()].copy_from_slice(group);
    let m = ((1 << (BITS - 1)) - 1) as f32;
    let max_abs = w.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    let first = max_abs_scale(options.scale_type, max_abs, m);
    let mut candidates = [first; 3];
    if options.rule == ScaleRule::MinError && max_abs >= TINY {
        let [near, other] = round_scale(options.scale_type, sweep(&w, m, max_abs));
        candidates[1] = near;
        candidates[2] = other;
    }
    // Fixed order, the first of equal errors wins: MaxAbs, the nearest, the other side.
    let mut best: Option<(f16, f32)> = None;
    for (i, &c) in candidates.iter().enumerate() {
        if !c.is_finite() || candidates[..i].contains(&c) {
            continue;
        }
        let err = sq_error(&w, c.to_f32(), m);
        if best.is_none_or(|(_, e)| err < e) {
            best = Some((c, err));
        }
    }
    let Some((scale, _)) = best else {
        return f16::INFINITY;
    };
    let s = scale.to_f32();
    let mut codes = [0u8; N];
    for (code, &x) in codes.iter_mut().zip(&w) {
        *code = if s == 0.0 { m } else { nearest(x, s, m) + m } as u8;
    }
    codes[group.len()..].fill(0);
    pack::<N, BITS>(&codes, out);
    scale
}

/// Inverse scales MinError samples.
const SAMPLES: usize = 16;

/// The least-squares scale of the best of the code vectors `q = round(w * t)` for
/// [`SAMPLES`] inverse scales `t` evenly over the window: a code vector with its own best
/// scale `sum(w q) / sum(q q)` leaves the error `sum(w w) - sum(w q)^2 / sum(q q)`.
fn sweep<const N: usize>(w: &[f32; N], m: f32, max_abs: f32) -> f32 {
    let step = (SWEEP_BELOW + SWEEP_ABOVE) / (SAMPLES - 1) as f32;
    let mut t = [0.0f32; SAMPLES];
    for (c, t) in t.iter_mut().enumerate() {
        *t = (m - SWEEP_BELOW + step * c as f32) / max_abs;
    }
    let (mut wq, mut qq) = ([0.0f32; SAMPLES], [0.0f32; SAMPLES]);
    for &x in w {
        let a = x.abs();
        for c in 0..SAMPLES {
            let v = a * t[c];
            let q = (if v > m { m } else { v } + ROUNDER) - ROUNDER;
            wq[c] += a * q;
            qq[c] += q * q;
        }
    }
    // Maximize wq^2 / qq, the first of equals; every sample gives the largest weight a code.
    let mut best = 0;
    for c in 1..SAMPLES {
        if wq[c] * wq[c] * qq[best] > wq[best] * wq[best] * qq[c] {
            best = c;
        }
    }
    wq[best] / qq[best]
}

#[cfg(test)]
mod tests;
