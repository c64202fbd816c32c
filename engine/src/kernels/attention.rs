//! Causal grouped-query attention over a KV cache.
//!
//! [`prefill`] runs one workgroup per (token, head) over all of its keys. [`decode`] splits
//! each head's keys into `n_splits` ranges handled by separate workgroups, then merges them
//! (flash-decoding), so a single query over a long context still fills the GPU.

use super::{common_precision, ensure_len, ensure_places, precision_tag, wgsl, Place};
use crate::error::{ensure_shape, Result};
use crate::gpu::{
    assemble, grid, Binding, DType, Dispatch, GpuContext, KernelSource, Precision, Tensor,
};

/// Largest head dimension the kernels hold in workgroup memory.
pub const MAX_HEAD_DIM: usize = 256;

/// Sizes of one attention call. A sequence holds at most `context` positions, of which a
/// query sees the last `window` (all, with none); its keys are in `ring` cache rows (at
/// most `context`: position p in row `p % ring`), and the KV cache holds at least `ring`
/// rows (more when several sequences share it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub context: usize,
    pub window: Option<usize>,
    pub ring: usize,
}

/// How attention scores are made from `q . k`: times `scale`, then capped to
/// `cap * tanh(score / cap)` with a `softcap` (Gemma 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    pub scale: f32,
    pub softcap: Option<f32>,
}

impl From<f32> for Scores {
    /// Scaled scores, uncapped.
    fn from(scale: f32) -> Self {
        Scores {
            scale,
            softcap: None,
        }
    }
}

impl AttentionShape {
    fn check(&self) -> Result<()> {
        ensure_shape(
            self.n_tokens > 0 && self.n_heads > 0 && self.n_kv_heads > 0,
            || format!("attention: empty shape {self:?}"),
        )?;
        ensure_shape(self.n_heads.is_multiple_of(self.n_kv_heads), || {
            format!(
                "attention: {} query heads do not divide into {} KV heads",
                self.n_heads, self.n_kv_heads
            )
        })?;
        ensure_shape(self.head_dim > 0 && self.head_dim <= MAX_HEAD_DIM, || {
            format!(
                "attention: head dim {} outside 1..={MAX_HEAD_DIM}",
                self.head_dim
            )
        })?;
        ensure_shape(
            self.ring > 0 && self.ring <= self.context && self.window != Some(0),
            || format!("attention: a ring of {} rows for {self:?}", self.ring),
        )
    }

    /// The most keys one query sees.
    pub fn span(&self) -> usize {
        self.window.map_or(self.context, |w| w.min(self.context))
    }

    /// f32 values the split kernel's partial-result buffer needs.
    pub fn partial_len(&self, n_splits: usize) -> usize {
        self.n_tokens * self.n_heads * n_splits * (self.head_dim + 2)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    n_splits: u32,
    split_len: u32,
    scale: f32,
    window: u32,
    ring: u32,
    softcap: f32,
    _pad: [u32; 2],
}

const QKV_BINDINGS: [Binding; 6] = [
    Binding::Uniform,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
];

/// The prefill, split and combine entry points for one precision.
pub fn sources(precision: Precision) -> [KernelSource; 3] {
    let tag = precision_tag(precision);
    [
        KernelSource {
            label: format!("attention.{tag}"),
            source: assemble(
                precision,
                &[],
                &[wgsl::REDUCE, wgsl::ATTENTION_COMMON, wgsl::ATTENTION],
            ),
            entry: "attend",
            bindings: &QKV_BINDINGS,
        },
        KernelSource {
            label: format!("attention_split.{tag}"),
            source: assemble(
                precision,
                &[],
                &[wgsl::REDUCE, wgsl::ATTENTION_COMMON, wgsl::ATTENTION_SPLIT],
            ),
            entry: "attend_split",
            bindings: &QKV_BINDINGS,
        },
        KernelSource {
            label: format!("attention_combine.{tag}"),
            source: assemble(precision, &[], &[wgsl::ATTENTION_COMBINE]),
            entry: "combine",
            bindings: &[Binding::Uniform, Binding::Read, Binding::ReadWrite],
        },
    ]
}

/// The tensors of one attention call: `q` and `out` are `[n_tokens, n_heads, head_dim]`,
/// the caches `[rows, n_kv_heads, head_dim]`, `places` a [`Place`] per token (positions
/// below `context`; the kernel reads the keys of the sequence the shape's window shows).
pub struct AttentionInputs<'a> {
    pub q: &'a Tensor,
    pub k_cache: &'a Tensor,
    pub v_cache: &'a Tensor,
    pub places: &'a Tensor,
    pub out: &'a Tensor,
}

fn check(inputs: &AttentionInputs, shape: &AttentionShape) -> Result<Precision> {
    shape.check()?;
    let AttentionInputs {
        q,
        k_cache,
        v_cache,
        places,
        out,
    } = inputs;
    let precision = common_precision("attention", &[q, k_cache, v_cache, out])?;
    let rows = shape.n_tokens * shape.n_heads * shape.head_dim;
    ensure_len("attention", "q", q, rows)?;
    ensure_len("attention", "out", out, rows)?;
    ensure_places("attention", places, shape.n_tokens)?;
    let cache = shape.ring * shape.n_kv_heads * shape.head_dim;
    ensure_len("attention", "k_cache", k_cache, cache)?;
    ensure_len("attention", "v_cache", v_cache, cache)?;
    Ok(precision)
}

fn params(shape: &AttentionShape, n_splits: usize, split_len: usize, scores: Scores) -> Params {
    Params {
        n_tokens: shape.n_tokens as u32,
        n_heads: shape.n_heads as u32,
        n_kv_heads: shape.n_kv_heads as u32,
        head_dim: shape.head_dim as u32,
        n_splits: n_splits as u32,
        split_len: split_len as u32,
        scale: scores.scale,
        window: shape.window.unwrap_or(0) as u32,
        ring: shape.ring as u32,
        softcap: scores.softcap.unwrap_or(0.0),
        _pad: [0; 2],
    }
}

/// One pass per (token, head): the prefill kernel.
pub fn prefill(
    ctx: &GpuContext,
    inputs: &AttentionInputs,
    shape: &AttentionShape,
    scores: impl Into<Scores>,
) -> Result<Dispatch> {
    let precision = check(inputs, shape)?;
    let [kernel, _, _] = sources(precision);
    let uniform = ctx.uniform(&params(shape, 1, shape.context, scores.into()));
    let i = inputs;
    ctx.dispatch(
        &kernel,
        &[
            &uniform,
            &i.q.buffer,
            &i.k_cache.buffer,
            &i.v_cache.buffer,
            &i.places.buffer,
            &i.out.buffer,
        ],
        grid((shape.n_tokens * shape.n_heads) as u32),
    )
}

/// Keys per split so that `n_splits` ranges cover the `span` keys a query sees.
pub fn split_len(span: usize, n_splits: usize) -> usize {
    span.div_ceil(n_splits.max(1)).max(1)
}

/// Split-sequence attention (the decode kernel) and the merge of its splits. `partial` is
/// an f32 tensor of at least [`AttentionShape::partial_len`] values.
pub fn decode(
    ctx: &GpuContext,
    inputs: &AttentionInputs,
    partial: &Tensor,
    shape: &AttentionShape,
    scores: impl Into<Scores>,
    n_splits: usize,
) -> Result<[Dispatch; 2]> {
    let precision = check(inputs, shape)?;
    ensure_shape(n_splits > 0, || "attention: need at least one split".into())?;
    ensure_shape(partial.dtype == DType::F32, || {
        "attention: partial must be f32".into()
    })?;
    ensure_len("attention", "partial", partial, shape.partial_len(n_splits))?;
    let [_, split, combine] = sources(precision);
    let uniform = ctx.uniform(&params(
        shape,
        n_splits,
        split_len(shape.span(), n_splits),
        scores.into(),
    ));
    let i = inputs;
    let rows = shape.n_tokens * shape.n_heads;
    let first = ctx.dispatch(
        &split,
        &[
            &uniform,
            &i.q.buffer,
            &i.k_cache.buffer,
            &i.v_cache.buffer,
            &i.places.buffer,
            &partial.buffer,
        ],
        grid((rows * n_splits) as u32),
    )?;
    let combine_params = ctx.uniform(&[rows as u32, n_splits as u32, shape.head_dim as u32, 0]);
    let second = ctx.dispatch(
        &combine,
        &[&combine_params, &partial.buffer, &i.out.buffer],
        grid(rows as u32),
    )?;
    Ok([first, second])
}

/// CPU reference: plain softmax attention in f64.
pub fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    places: &[Place],
    shape: &AttentionShape,
    scores: impl Into<Scores>,
) -> Vec<f32> {
    let Scores { scale, softcap } = scores.into();
    let (hd, nkv) = (shape.head_dim, shape.n_kv_heads);
    let group = shape.n_heads / nkv;
    let mut out = vec![0.0; shape.n_tokens * shape.n_heads * hd];
    for (t, place) in places.iter().enumerate().take(shape.n_tokens) {
        let pos = place.position as usize;
        let first = shape.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let row = |j: usize| place.slot_start(shape.ring) + j % shape.ring;
        for h in 0..shape.n_heads {
            let qv = &q[(t * shape.n_heads + h) * hd..][..hd];
            let kvh = h / group;
            let keys = first..=pos;
            let scores: Vec<f64> = keys
                .clone()
                .map(|j| {
                    let kv = &k[(row(j) * nkv + kvh) * hd..][..hd];
                    let s = qv
                        .iter()
                        .zip(kv)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * scale as f64;
                    softcap.map_or(s, |c| c as f64 * (s / c as f64).tanh())
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let o = &mut out[(t * shape.n_heads + h) * hd..][..hd];
            for (d, od) in o.iter_mut().enumerate() {
                let acc: f64 = weights
                    .iter()
                    .zip(keys.clone())
                    .map(|(w, j)| w * v[(row(j) * nkv + kvh) * hd + d] as f64)
                    .sum();
                *od = (acc / total) as f32;
            }
        }
    }
    out
}
