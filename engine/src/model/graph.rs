//! The forward pass on the GPU, readable top to bottom in [`Model::plan`]: one graph for
//! every architecture, driven by each layer's [`LayerSpec`].
//!
//! All buffers (weights, KV cache, activations for up to `max_batch` tokens, logits) are
//! allocated at load ([`super::upload`]). A call ([`super::steps`]) records the plan for its
//! tokens into one encoder and submits once; the decode plans (one token, or one token of
//! each of `n` sequences) are built once and reused, so a decode step allocates nothing and
//! reads back only the 4-byte token ids (or, when sampling on the host, rows of logits into
//! a buffer kept for them).
//!
//! The KV cache has `slots` ranges of rows per layer: a sequence lives in one slot, and
//! [`Model::decode_batch`] decodes a token of several slots' sequences in one pass over the
//! weights. A token's arithmetic is the same alone or batched (see `shaders/matmul.wgsl`).

use std::collections::HashMap;

use super::config::{Activation, LayerSpec, ModelConfig};
use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, KernelTimer, Precision, Recorder, Tensor};
use crate::kernels::attention::{self, AttentionInputs, AttentionShape, Scores};
use crate::kernels::matmul::{self, Epilogue, Fusion};
use crate::kernels::rope::{self, QkvFusion, QkvOutputs, QkvShape};
use crate::kernels::sample::{self, SettingsPerRow};
use crate::kernels::weight::GpuWeight;
use crate::kernels::{argmax, embedding, mask, norm};
use crate::quant::WeightFormat;

pub use super::measure::{MemoryUse, StepShape};
pub use super::steps::{BatchOutput, BatchToken, Logits, NextToken};
pub use super::upload::{LoadOptions, ModelLoader, FALLBACK_FORMAT};

pub(super) struct Layer {
    pub(super) spec: LayerSpec,
    pub(super) attn_norm: Tensor,
    /// Q, K and V projections as one matrix: rows `[q | k | v]`.
    pub(super) w_qkv: GpuWeight,
    /// `[q | k | v]` biases.
    pub(super) qkv_bias: Option<Tensor>,
    /// `[q | k]` per-head norm weights.
    pub(super) qk_norm: Option<Tensor>,
    pub(super) wo: GpuWeight,
    pub(super) post_attn_norm: Option<Tensor>,
    pub(super) ffn_norm: Tensor,
    /// Gate and up projections as one matrix: rows `[gate | up]`.
    pub(super) w_gate_up: GpuWeight,
    pub(super) w_down: GpuWeight,
    pub(super) post_ffn_norm: Option<Tensor>,
    /// Which of the model's RoPE frequency tables this layer rotates with.
    pub(super) rope: usize,
    /// KV-cache rows per sequence: the context, or for a sliding-window layer its window
    /// and a prefill pass (a pass's keys must not overwrite keys its first token sees).
    pub(super) ring: usize,
    pub(super) k_cache: Tensor,
    pub(super) v_cache: Tensor,
}

/// Activations for up to `max_batch` tokens (and at least one per slot).
pub(super) struct Buffers {
    pub(super) ids: Tensor,
    /// A [`Place`] per token.
    pub(super) places: Tensor,
    /// The residual stream, f32 whatever the activation precision.
    pub(super) x: Tensor,
    /// A block's output before its post-norm joins the residual stream.
    pub(super) block_out: Tensor,
    pub(super) qkv: Tensor,
    pub(super) q: Tensor,
    pub(super) attn: Tensor,
    pub(super) ffn: Tensor,
    pub(super) last: Tensor,
    pub(super) partial: Tensor,
    pub(super) logits: Tensor,
    pub(super) tokens: Tensor,
    pub(super) readback: wgpu::Buffer,
    /// A row of logits per slot, for sampling on the host.
    pub(super) logits_readback: wgpu::Buffer,
    /// The GPU sampler's settings, one [`SampleSettings`] per slot, rewritten before each
    /// sampled pass.
    pub(super) sample_settings: Tensor,
    /// The tokens each row may pick, a mask row per slot (see `kernels::mask`), rewritten
    /// before each constrained pass.
    pub(super) mask: Tensor,
}

/// What a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Pass {
    /// `n` prompt tokens of one sequence, ending in the logits asked for (none: an early
    /// chunk of a long prompt only fills the KV cache). It runs the prefill kernels whatever
    /// `n` is, even 1, so a prompt's KV cache and logits are the same bits however the
    /// prompt is cut into passes (by the chunk size, or after a cached prefix).
    Sequence { n: usize, logits: Option<Logits> },
    /// One token of each of `n` sequences, with the decode kernels: a decode step, batched
    /// when `n` > 1.
    Batch { n: usize },
}

/// How a pass picks its tokens from the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Pick {
    /// A draw with the settings in `Buffers::sample_settings`; else the most likely token.
    pub draw: bool,
    /// Only among the tokens `Buffers::mask` allows (constrained decoding).
    pub masked: bool,
}

impl Pick {
    pub const ARGMAX: Pick = Pick {
        draw: false,
        masked: false,
    };
    pub const SAMPLE: Pick = Pick {
        draw: true,
        masked: false,
    };

    pub fn masked(self, masked: bool) -> Pick {
        Pick { masked, ..self }
    }
}

/// One recorded step of a pass: a kernel, or copying the last token's residual row for the
/// head.
pub(super) enum Op {
    Kernel(Dispatch),
    CopyLastRow,
}

/// A loaded model on one GPU.
pub struct Model {
    pub config: ModelConfig,
    pub precision: Precision,
    /// The weight formats its matrices run in and how many matrices each, most first.
    pub formats: Vec<(WeightFormat, usize)>,
    pub context: usize,
    /// Sequences the KV cache holds, `context` rows each.
    pub slots: usize,
    pub(super) max_batch: usize,
    pub(super) ctx: GpuContext,
    pub(super) embed: GpuWeight,
    pub(super) output: Option<GpuWeight>,
    pub(super) final_norm: Tensor,
    /// RoPE frequency tables, one per distinct [`super::config::Rope`] of the layers.
    pub(super) inv_freqs: Vec<Tensor>,
    pub(super) layers: Vec<Layer>,
    pub(super) buf: Buffers,
    /// The decode plans (one token of one sequence, or of each of n), built on first use.
    pub(super) plans: HashMap<(Pass, Pick), Vec<Op>>,
    /// Tokens the output may pick from: the vocabulary, or fewer when the tokenizer has
    /// fewer tokens than the output head has rows (padding).
    pub(super) output_vocab: usize,
    pub(super) n_splits: usize,
    pub(super) weight_bytes: usize,
    /// Per slot, the end of the last span written: how far back a sequence may resume is
    /// bounded by [`Model::max_rewind`].
    pub(super) filled: Vec<usize>,
}

impl Layer {
    /// Its norm and bias vectors.
    pub(super) fn vectors(&self) -> impl Iterator<Item = &Tensor> {
        [&self.attn_norm, &self.ffn_norm].into_iter().chain(
            [
                &self.qkv_bias,
                &self.qk_norm,
                &self.post_attn_norm,
                &self.post_ffn_norm,
            ]
            .into_iter()
            .flatten(),
        )
    }
}

/// KV-cache rows per sequence of a layer: the context, or a sliding-window layer's window
/// plus a prefill pass, so the keys a pass writes never overwrite keys its own first token
/// still sees.
pub(super) fn cache_ring(spec: &LayerSpec, context: usize, max_batch: usize) -> usize {
    spec.window
        .map_or(context, |w| (w + max_batch).min(context))
}

/// A decode step of one sequence.
pub(super) const ONE_TOKEN: Pass = Pass::Batch { n: 1 };

impl Model {
    /// The forward pass `pass` (token ids and places already in their buffers), ending in
    /// `pick` when it computes logits.
    pub(super) fn plan(&self, pass: Pass, pick: Pick) -> Result<Vec<Op>> {
        let (n, logits) = match pass {
            Pass::Sequence { n, logits } => (n, logits),
            Pass::Batch { n } => (n, Some(Logits::All)),
        };
        // A batch decodes with the one-token kernels, so each of its sequences computes
        // exactly what it would alone.
        let batch = matches!(pass, Pass::Batch { .. });
        let c = &self.config;
        let ctx = &self.ctx;
        let b = &self.buf;
        let mut ops = Vec::new();
        let kernels =
            |ds: Vec<Dispatch>, ops: &mut Vec<Op>| ops.extend(ds.into_iter().map(Op::Kernel));

        kernels(
            embedding::embed(ctx, &b.ids, &self.embed, &b.x, n, c.embed_scale)?,
            &mut ops,
        );
        // Per layer: the attention block's input RMSNorm runs inside the QKV matmul; bias,
        // Q/K norms and RoPE in one kernel that also stores K and V; the output projection
        // adds itself to the residual stream x (or, with post-norms, is normalized into it).
        // The feed-forward block's RMSNorm and gated activation run inside the gate/up
        // matmul, and the down projection joins x the same way. The final RMSNorm runs
        // inside the output head.
        let norm = |weights| Some((weights, c.rms_eps));
        let kernel = if batch {
            matmul::Kernel::Decode
        } else {
            matmul::Kernel::Prefill
        };
        let fused = |x, w, y, fusion: Fusion, ops: &mut Vec<Op>| -> Result<()> {
            kernels(matmul::fused(ctx, x, w, y, n, &fusion, kernel)?, ops);
            Ok(())
        };
        // A block's output projection `w` of `input` joins the residual stream: added, or
        // RMS-normalized with `post_norm` first.
        let join = |input, w, post_norm: Option<&Tensor>, ops: &mut Vec<Op>| -> Result<()> {
            let Some(post_norm) = post_norm else {
                let add = Fusion {
                    norm: None,
                    epilogue: Epilogue::Add,
                };
                return fused(input, w, &b.x, add, ops);
            };
            fused(input, w, &b.block_out, Fusion::NONE, ops)?;
            let add = norm::norm_add(ctx, &b.block_out, post_norm, c.rms_eps, &b.x, n)?;
            ops.push(Op::Kernel(add));
            Ok(())
        };
        for layer in &self.layers {
            let spec = &layer.spec;
            // Attention block.
            let qkv = Fusion {
                norm: norm(&layer.attn_norm),
                epilogue: Epilogue::Store,
            };
            fused(&b.x, &layer.w_qkv, &b.qkv, qkv, &mut ops)?;
            let caches = QkvOutputs {
                q: &b.q,
                k_cache: &layer.k_cache,
                v_cache: &layer.v_cache,
            };
            let qkv_shape = QkvShape {
                n_tokens: n,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: c.head_dim,
                ring: layer.ring,
            };
            let before_rope = QkvFusion {
                bias: layer.qkv_bias.as_ref(),
                qk_norm: layer.qk_norm.as_ref().map(|w| (w, c.rms_eps)),
            };
            ops.push(Op::Kernel(rope::rope_qkv(
                ctx,
                &b.qkv,
                &b.places,
                &self.inv_freqs[layer.rope],
                &caches,
                &qkv_shape,
                c.rope_mode,
                &before_rope,
            )?));
            let inputs = AttentionInputs {
                q: &b.q,
                k_cache: &layer.k_cache,
                v_cache: &layer.v_cache,
                places: &b.places,
                out: &b.attn,
            };
            let attn_shape = AttentionShape {
                n_tokens: n,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: c.head_dim,
                context: self.context,
                window: spec.window,
                ring: layer.ring,
            };
            let scores = Scores {
                scale: spec.attn_scale,
                softcap: spec.attn_softcap,
            };
            if batch {
                let [split, combine] = attention::decode(
                    ctx,
                    &inputs,
                    &b.partial,
                    &attn_shape,
                    scores,
                    self.n_splits,
                )?;
                ops.extend([Op::Kernel(split), Op::Kernel(combine)]);
            } else {
                ops.push(Op::Kernel(attention::prefill(
                    ctx,
                    &inputs,
                    &attn_shape,
                    scores,
                )?));
            }
            join(&b.attn, &layer.wo, layer.post_attn_norm.as_ref(), &mut ops)?;
            // Feed-forward block.
            let gate_up = Fusion {
                norm: norm(&layer.ffn_norm),
                epilogue: match spec.activation {
                    Activation::SwiGlu => Epilogue::SwiGlu,
                    Activation::GeGlu => Epilogue::GeGlu,
                },
            };
            fused(&b.x, &layer.w_gate_up, &b.ffn, gate_up, &mut ops)?;
            join(
                &b.ffn,
                &layer.w_down,
                layer.post_ffn_norm.as_ref(),
                &mut ops,
            )?;
        }
        let Some(logits) = logits else {
            return Ok(ops);
        };
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let final_norm = Fusion {
            norm: norm(&self.final_norm),
            epilogue: Epilogue::Store,
        };
        let rows = match logits {
            Logits::Last => {
                ops.push(Op::CopyLastRow);
                let decode = matmul::Kernel::Decode;
                let head_ops =
                    matmul::fused(ctx, &b.last, head, &b.logits, 1, &final_norm, decode)?;
                kernels(head_ops, &mut ops);
                1
            }
            Logits::All => {
                fused(&b.x, head, &b.logits, final_norm, &mut ops)?;
                n
            }
        };
        if pick.masked {
            ops.push(Op::Kernel(mask::mask_logits(
                ctx,
                &b.logits,
                &b.mask,
                rows,
                self.output_vocab,
                c.vocab_size,
            )?));
        }
        ops.push(Op::Kernel(if !pick.draw {
            argmax::argmax(
                ctx,
                &b.logits,
                &b.tokens,
                rows,
                self.output_vocab,
                c.vocab_size,
            )?
        } else {
            sample::sample(
                ctx,
                &b.logits,
                &b.sample_settings,
                if batch {
                    SettingsPerRow::Own
                } else {
                    SettingsPerRow::Shared
                },
                &b.tokens,
                rows,
                self.output_vocab,
                c.vocab_size,
            )?
        }));
        Ok(ops)
    }

    /// Records `ops` for `n` tokens and submits them, reading back the
    /// `rows` argmax token ids (none, without waiting, when `rows` is 0).
    pub(super) async fn run(&self, ops: &[Op], n: usize, rows: usize) -> Result<Vec<u32>> {
        let b = &self.buf;
        let mut rec = self.ctx.recorder();
        for op in ops {
            self.record(&mut rec, op, n, None)?;
        }
        if rows == 0 {
            rec.submit()?;
            return Ok(Vec::new());
        }
        rec.copy(&b.tokens.buffer, 0, &b.readback, 0, rows as u64 * 4);
        rec.submit()?;
        let bytes = self.ctx.map_and_copy(&b.readback).await?;
        Ok(bytemuck::cast_slice::<u8, u32>(&bytes)[..rows].to_vec())
    }

    /// Records one step of a pass over `n` tokens, timed when `timer` is given.
    pub(super) fn record(
        &self,
        rec: &mut Recorder,
        op: &Op,
        n: usize,
        timer: Option<&mut KernelTimer>,
    ) -> Result<()> {
        match (op, timer) {
            (Op::Kernel(d), None) => rec.dispatch(d),
            (Op::Kernel(d), Some(timer)) => rec.dispatch_timed(d, timer)?,
            (Op::CopyLastRow, _) => {
                let b = &self.buf;
                let row = (self.config.dim * DType::F32.size()) as u64;
                rec.copy(&b.x.buffer, (n as u64 - 1) * row, &b.last.buffer, 0, row);
            }
        }
        Ok(())
    }

    /// The decode plan for `pass` ending in `pick`, built on first use and kept.
    pub(super) fn cached_plan(&mut self, pass: Pass, pick: Pick) -> Result<&[Op]> {
        if !self.plans.contains_key(&(pass, pick)) {
            let plan = self.plan(pass, pick)?;
            self.plans.insert((pass, pick), plan);
        }
        Ok(&self.plans[&(pass, pick)])
    }
}
