//! MLC-LLM's group quantization, `q4f16_1` and `q3f16_1`, bit for bit; and glim's quantizer
//! into them.
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
//! These are glim's planes as they are: a group is a segment (4 code words), its f16 scale
//! a scale unit. GGUF's `Q4_0` is the same layout with zero point 8 once its nibbles are
//! put in order ([`super::ggml_legacy`]), and shares the WGSL (`weights_grouped.wgsl`).
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

use half::f16;

use super::{Format, FormatWgsl, PackedWeight};
use crate::error::{Error, Result};

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

    /// Groups (segments) in a row of `cols` weights, the last one padded.
    pub fn groups(&self, cols: usize) -> usize {
        cols.div_ceil(self.group_size)
    }
}

/// A format of symmetric `bits`-bit codes in groups with one f16 scale each, weight
/// `(code - zero) * scale`: MLC's q4f16_1 / q3f16_1 (zero `max_int`), GGUF's `Q4_0`
/// (zero 8).
pub struct GroupFormat {
    pub name: &'static str,
    pub spec: GroupSpec,
    /// The code that means 0.
    pub zero: u32,
}

/// MLC `q4f16_1`: 4-bit codes, groups of 32, f16 scales.
pub const Q4F16: GroupFormat = GroupFormat {
    name: "q4f16",
    spec: GroupSpec {
        bits: 4,
        group_size: 32,
        codes_per_word: 8,
        max_int: 7,
    },
    zero: 7,
};

/// MLC `q3f16_1`: 3-bit codes, groups of 40, f16 scales.
pub const Q3F16: GroupFormat = GroupFormat {
    name: "q3f16",
    spec: GroupSpec {
        bits: 3,
        group_size: 40,
        codes_per_word: 10,
        max_int: 3,
    },
    zero: 3,
};

impl GroupFormat {
    /// The WGSL of every grouped format (shared by GGUF's `Q4_0`).
    pub(crate) fn grouped_wgsl(&self) -> FormatWgsl {
        let s = &self.spec;
        FormatWgsl {
            file: crate::kernels::wgsl::WEIGHTS_GROUPED,
            consts: vec![
                ("SEG", s.group_size as u32),
                ("BITS", s.bits),
                ("CODES_PER_WORD", s.codes_per_word as u32),
                ("ZERO_CODE", self.zero),
            ],
        }
    }

    /// Weight `(row, k)`: `(code - zero) * scale`.
    pub(crate) fn grouped_weight_at(&self, w: &PackedWeight, row: usize, k: usize) -> f32 {
        let s = &self.spec;
        let word = w.code_row(row)[k / s.codes_per_word];
        let code = (word >> ((k % s.codes_per_word) as u32 * s.bits)) & ((1 << s.bits) - 1);
        let scale = f16::from_bits(w.scale_row(row)[k / s.group_size]).to_f32();
        (code as f32 - self.zero as f32) * scale
    }
}

impl Format for GroupFormat {
    fn name(&self) -> &'static str {
        self.name
    }

    fn seg(&self) -> usize {
        self.spec.group_size
    }

    fn code_words_per_row(&self, cols: usize) -> usize {
        self.spec.groups(cols) * self.spec.words_per_group()
    }

    fn scale_halves_per_row(&self, cols: usize) -> usize {
        self.spec.groups(cols)
    }

    fn wgsl(&self) -> FormatWgsl {
        self.grouped_wgsl()
    }

    fn weight_at(&self, w: &PackedWeight, row: usize, k: usize) -> f32 {
        self.grouped_weight_at(w, row, k)
    }

    fn pack_into(
        &self,
        weights: &[f32],
        options: QuantOptions,
        out: &mut PackedWeight,
    ) -> Result<()> {
        let mut scales = vec![f16::ZERO; out.scales.len()];
        quantize_matrix(
            &self.spec,
            options,
            weights,
            out.cols,
            &mut out.codes,
            &mut scales,
        )?;
        out.scales = scales.iter().map(|s| s.to_bits()).collect();
        Ok(())
    }

    fn group_spec(&self) -> Option<GroupSpec> {
        Some(self.spec)
    }
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
