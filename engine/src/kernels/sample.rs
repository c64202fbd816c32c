//! Sampling on the GPU: top-k, top-p, min-p and temperature applied to each row of logits
//! and a token drawn, so a sampled decode step reads back 4 bytes, as a greedy one does.
//! The cuts are thresholds found by bisection; the draw is the Gumbel-max trick with a
//! counter-based hash for its randomness (see `shaders/sample.wgsl`).

use super::{ensure_len, precision_tag, wgsl};
use crate::error::{ensure_shape, Result};
use crate::gpu::{
    assemble, grid, Binding, DType, Dispatch, GpuContext, KernelSource, Precision, Tensor,
};

/// What the kernel applies to a row, as its settings buffer holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SampleSettings {
    pub inv_temperature: f32,
    /// ln(min_p), or [`MIN_P_OFF`].
    pub log_min_p: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    /// Which draw of the sequence this is: each step gets fresh randomness.
    pub step: u32,
    _pad: u32,
}

/// `log_min_p` when min-p is off.
pub const MIN_P_OFF: f32 = -3.0e38;
/// Tokens more than e^SPAN times less likely than the top one never count in a cut.
const SPAN: f32 = 64.0;
const BISECTION_STEPS: usize = 24;

impl SampleSettings {
    /// The most likely token, as the argmax kernel picks it (for greedy rows of a batch
    /// whose other rows sample).
    pub fn greedy() -> Self {
        Self {
            inv_temperature: 0.0,
            log_min_p: MIN_P_OFF,
            top_p: 1.0,
            top_k: 0,
            seed_lo: 0,
            seed_hi: 0,
            step: 0,
            _pad: 0,
        }
    }

    /// Whether this picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.inv_temperature == 0.0
    }

    /// Settings for a draw at `temperature` (> 0) with the given cuts (`top_k` 0 and
    /// `top_p` 1 are off, as `min_p` 0 is).
    pub fn new(
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        seed: u64,
        step: u32,
    ) -> Self {
        Self {
            inv_temperature: 1.0 / temperature.max(1e-6),
            log_min_p: if min_p > 0.0 { min_p.ln() } else { MIN_P_OFF },
            top_p: top_p.clamp(0.0, 1.0),
            top_k: top_k.min(u32::MAX as usize) as u32,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            step,
            _pad: 0,
        }
    }
}

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("sample.{}", precision_tag(precision)),
        source: assemble(precision, &[], &[wgsl::REDUCE, wgsl::SAMPLE]),
        entry: "sample",
        bindings: &[
            Binding::Uniform,
            Binding::Read,
            Binding::Read,
            Binding::ReadWrite,
        ],
    }
}

/// Which settings a row is drawn with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingsPerRow {
    /// Every row with the first entry; the row number enters the randomness, so rows of the
    /// same logits are independent draws.
    Shared,
    /// Row `r` with entry `r`, its own seed and step making its randomness (a batch of
    /// sequences: a sequence draws the same tokens wherever it sits in the batch).
    Own,
}

/// Draws `out[r]` from `logits[r, 0..n]` for `rows` rows of `stride` values, with the
/// [`SampleSettings`] in `settings` (a u32 tensor the host may rewrite before each run).
#[allow(clippy::too_many_arguments)]
pub fn sample(
    ctx: &GpuContext,
    logits: &Tensor,
    settings: &Tensor,
    per_row: SettingsPerRow,
    out: &Tensor,
    rows: usize,
    n: usize,
    stride: usize,
) -> Result<Dispatch> {
    ensure_shape(out.dtype == DType::U32, || "sample: out must be u32".into())?;
    ensure_shape(n > 0 && n <= stride, || {
        format!("sample: {n} candidates in rows of {stride}")
    })?;
    let entries = match per_row {
        SettingsPerRow::Shared => 1,
        SettingsPerRow::Own => rows,
    };
    let words = std::mem::size_of::<SampleSettings>() / 4;
    ensure_shape(settings.dtype == DType::U32, || {
        "sample: settings must be a u32 tensor".into()
    })?;
    ensure_len("sample", "settings", settings, entries * words)?;
    ensure_len("sample", "logits", logits, rows * stride)?;
    ensure_len("sample", "out", out, rows)?;
    let own = (per_row == SettingsPerRow::Own) as u32;
    let params = ctx.uniform(&[rows as u32, n as u32, stride as u32, own]);
    ctx.dispatch(
        &source(logits.precision()?),
        &[&params, &settings.buffer, &logits.buffer, &out.buffer],
        grid(rows as u32),
    )
}

/// The shader's hash (PCG's output permutation).
fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// CPU reference: the token the kernel draws from `row` (`n` candidates) as row `r` of a
/// batch whose rows share their settings (`per_row` `Shared`); row 0 is also what any row
/// with its own settings draws.
pub fn reference_row(row: &[f32], r: u32, s: &SampleSettings) -> u32 {
    if s.is_greedy() {
        return super::argmax::argmax_row(row);
    }
    let valid = || row.iter().copied().filter(|l| !l.is_nan());
    let top = valid().fold(-3.0e38f32, f32::max);
    let floor = top - SPAN;
    let count = |t: f32| valid().filter(|&l| l >= t).count() as f32;
    let mass = |t: f32| {
        valid()
            .filter(|&l| l >= t)
            .map(|l| (l - top).exp())
            .sum::<f32>()
    };
    let bisect = |mut lo: f32, wanted: f32, measure: &dyn Fn(f32) -> f32| {
        let mut hi = top;
        for _ in 0..BISECTION_STEPS {
            let mid = 0.5 * (lo + hi);
            if measure(mid) >= wanted {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let mut cut = floor;
    if s.top_k > 0 && (s.top_k as usize) < row.len() {
        cut = bisect(floor, s.top_k as f32, &count);
    }
    if s.top_p < 1.0 {
        cut = bisect(cut, s.top_p * mass(cut), &mass);
    }
    cut = cut.max(top + s.log_min_p);
    let key = pcg(s.seed_lo ^ pcg(s.seed_hi ^ pcg(s.step ^ pcg(r))));
    let mut best: Option<(f32, usize)> = None;
    for (k, &l) in row.iter().enumerate() {
        if l >= cut {
            let u = ((pcg(key ^ k as u32) >> 8) as f32 + 0.5) / 16_777_216.0;
            let score = l * s.inv_temperature - (-u.ln()).ln();
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, k));
            }
        }
    }
    best.map_or(0, |(_, k)| k as u32)
}
