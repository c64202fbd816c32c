//! The Llama-family forward pass on the GPU, readable top to bottom in [`Llama::plan`].
//!
//! All buffers (weights, KV cache, activations for up to `max_batch` tokens, logits) are
//! allocated at load. A call records the plan for its tokens into one encoder and submits
//! once; the decode plan (one token) is built once and reused, so a decode step allocates
//! nothing and reads back only the 4-byte token id (or, when sampling on the host, one row
//! of logits into a buffer kept for it).

use super::config::LlamaConfig;
use super::source::WeightSource;
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::gpu::tensor::floats_from_bytes;
use crate::gpu::{DType, Dispatch, GpuContext, Precision, Tensor};
use crate::kernels::attention::{self, AttentionInputs, AttentionShape};
use crate::kernels::weight::GpuWeight;
use crate::kernels::{argmax, embedding, matmul, residual, rmsnorm, rope, swiglu};
use crate::quant::{PackedWeight, WeightFormat};

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// GPU weight format; GGUF tensors are decoded and re-quantized to it.
    pub format: WeightFormat,
    /// KV-cache length in tokens (prompt plus generated); capped at the model's own.
    pub context: usize,
    /// Tokens per prefill pass; longer prompts go in several passes.
    pub max_batch: usize,
    /// Activation precision; `None` picks the adapter's best.
    pub precision: Option<Precision>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            format: WeightFormat::Q4F16,
            context: 2048,
            max_batch: 128,
            precision: None,
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    wq: GpuWeight,
    wk: GpuWeight,
    wv: GpuWeight,
    wo: GpuWeight,
    ffn_norm: Tensor,
    w_gate: GpuWeight,
    w_up: GpuWeight,
    w_down: GpuWeight,
    k_cache: Tensor,
    v_cache: Tensor,
}

/// Activations for up to `max_batch` tokens.
struct Buffers {
    ids: Tensor,
    positions: Tensor,
    x: Tensor,
    h: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn: Tensor,
    gate: Tensor,
    up: Tensor,
    ffn: Tensor,
    last: Tensor,
    partial: Tensor,
    logits: Tensor,
    tokens: Tensor,
    readback: wgpu::Buffer,
    /// One row of logits, for sampling on the host.
    logits_readback: wgpu::Buffer,
}

/// Which logits a pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, teacher-forced checks).
    All,
}

/// One recorded step of a pass: a kernel, or copying the new K/V rows into the cache.
enum Op {
    Kernel(Dispatch),
    StoreKv(usize),
    CopyLastRow,
}

/// A loaded Llama-family model on one GPU.
pub struct Llama {
    pub config: LlamaConfig,
    pub precision: Precision,
    pub format: WeightFormat,
    pub context: usize,
    max_batch: usize,
    ctx: GpuContext,
    embed: GpuWeight,
    output: Option<GpuWeight>,
    final_norm: Tensor,
    inv_freq: Tensor,
    layers: Vec<Layer>,
    buf: Buffers,
    decode_plan: Option<Vec<Op>>,
    /// Tokens the output may pick from: the vocabulary, or fewer when the tokenizer has
    /// fewer tokens than the output head has rows (padding).
    output_vocab: usize,
    n_splits: usize,
    weight_bytes: usize,
}

fn load_matrix(
    ctx: &GpuContext,
    source: &dyn WeightSource,
    name: &str,
    (rows, cols): (usize, usize),
    format: WeightFormat,
    bytes: &mut usize,
) -> Result<GpuWeight> {
    let values = source.tensor_f32(name, &[rows, cols])?;
    let packed = PackedWeight::quantize(format, &values, rows, cols)?;
    *bytes += packed.byte_size();
    GpuWeight::upload(ctx, &packed)
}

fn load_vector(
    ctx: &GpuContext,
    source: &dyn WeightSource,
    name: &str,
    len: usize,
    bytes: &mut usize,
) -> Result<Tensor> {
    let values = source.tensor_f32(name, &[len])?;
    *bytes += len * 4;
    ctx.tensor_from_f32(&values, &[len], DType::F32)
}

impl Llama {
    /// Loads a GGUF Llama model onto `ctx`. `progress(done, total)` is called per tensor.
    pub fn from_gguf(
        ctx: GpuContext,
        file: &GgufFile,
        options: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load(ctx, LlamaConfig::from_gguf(file)?, file, options, progress)
    }

    /// Loads a model of `config` whose weights `source` provides.
    pub fn load(
        ctx: GpuContext,
        config: LlamaConfig,
        source: &dyn WeightSource,
        options: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        config.validate()?;
        let file = source;
        let precision = options.precision.unwrap_or_else(|| ctx.default_precision());
        ctx.check_precision(precision)?;
        let context = options.context.clamp(1, config.context_length.max(1));
        // Each layer's KV cache and the logits are single bindings: keep them under the
        // adapter's binding limit, with a clear error up front instead of a GPU error later.
        let act_bytes = DType::from(precision).size();
        let limit = ctx.max_binding_size() as usize;
        let kv_row = config.kv_dim() * act_bytes;
        if context * kv_row > limit {
            return Err(Error::Unsupported(format!(
                "a KV cache of {context} tokens needs {} MiB per layer, over this adapter's {} MiB binding limit; use a context of at most {}",
                (context * kv_row) >> 20,
                limit >> 20,
                limit / kv_row
            )));
        }
        let logits_row = config.vocab_size * act_bytes;
        let max_batch = options
            .max_batch
            .clamp(1, context)
            .min((limit / logits_row).max(1));
        let format = options.format;
        let (dim, qd, kvd, ffn, vocab) = (
            config.dim,
            config.q_dim(),
            config.kv_dim(),
            config.ffn_dim,
            config.vocab_size,
        );
        let total = 3 + config.n_layers * 9 + usize::from(!config.tied_embeddings);
        let mut done = 0;
        let mut tick = |n: &mut usize| {
            *n += 1;
            progress(*n, total);
        };
        let mut weight_bytes = 0;
        let wb = &mut weight_bytes;

        let embed = load_matrix(&ctx, file, "token_embd.weight", (vocab, dim), format, wb)?;
        tick(&mut done);
        let output = if config.tied_embeddings {
            None
        } else {
            let w = load_matrix(&ctx, file, "output.weight", (vocab, dim), format, wb)?;
            tick(&mut done);
            Some(w)
        };
        let final_norm = load_vector(&ctx, file, "output_norm.weight", dim, wb)?;
        tick(&mut done);
        let mut freqs = rope::inv_freq(config.head_dim, config.rope_base, config.rope_scaling);
        // Llama 3 GGUFs carry their frequency scaling as per-pair divisors instead.
        if file.has("rope_freqs.weight") {
            let factors = file.tensor_f32("rope_freqs.weight", &[freqs.len()])?;
            freqs.iter_mut().zip(&factors).for_each(|(f, d)| *f /= d);
        }
        let inv_freq = ctx.tensor_from_f32(&freqs, &[freqs.len()], DType::F32)?;
        tick(&mut done);

        let act = DType::from(precision);
        let mut layers = Vec::new();
        for i in 0..config.n_layers {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            let mut matrix = |t: &str, rows, cols, n: &mut usize| {
                let w = load_matrix(&ctx, file, &name(t), (rows, cols), format, wb);
                tick(n);
                w
            };
            let wq = matrix("attn_q", qd, dim, &mut done)?;
            let wk = matrix("attn_k", kvd, dim, &mut done)?;
            let wv = matrix("attn_v", kvd, dim, &mut done)?;
            let wo = matrix("attn_output", dim, qd, &mut done)?;
            let w_gate = matrix("ffn_gate", ffn, dim, &mut done)?;
            let w_up = matrix("ffn_up", ffn, dim, &mut done)?;
            let w_down = matrix("ffn_down", dim, ffn, &mut done)?;
            let attn_norm = load_vector(&ctx, file, &name("attn_norm"), dim, wb)?;
            tick(&mut done);
            let ffn_norm = load_vector(&ctx, file, &name("ffn_norm"), dim, wb)?;
            tick(&mut done);
            layers.push(Layer {
                attn_norm,
                wq,
                wk,
                wv,
                wo,
                ffn_norm,
                w_gate,
                w_up,
                w_down,
                k_cache: ctx.zeros(&[context, kvd], act)?,
                v_cache: ctx.zeros(&[context, kvd], act)?,
            });
        }

        let b = max_batch;
        let n_splits = context.div_ceil(256).clamp(1, 32);
        let buf = Buffers {
            ids: ctx.zeros(&[b], DType::U32)?,
            positions: ctx.zeros(&[b], DType::U32)?,
            x: ctx.zeros(&[b, dim], act)?,
            h: ctx.zeros(&[b, dim], act)?,
            q: ctx.zeros(&[b, qd], act)?,
            k: ctx.zeros(&[b, kvd], act)?,
            v: ctx.zeros(&[b, kvd], act)?,
            attn: ctx.zeros(&[b, qd], act)?,
            gate: ctx.zeros(&[b, ffn], act)?,
            up: ctx.zeros(&[b, ffn], act)?,
            ffn: ctx.zeros(&[b, ffn], act)?,
            last: ctx.zeros(&[dim], act)?,
            partial: ctx.zeros(
                &[AttentionShape {
                    n_tokens: 1,
                    n_heads: config.n_heads,
                    n_kv_heads: config.n_kv_heads,
                    head_dim: config.head_dim,
                    context,
                }
                .partial_len(n_splits)],
                DType::F32,
            )?,
            logits: ctx.zeros(&[b, vocab], act)?,
            tokens: ctx.zeros(&[b], DType::U32)?,
            readback: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("token readback"),
                size: (b * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            logits_readback: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("logits readback"),
                size: (logits_row as u64).div_ceil(4) * 4,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        };
        ctx.take_error()?;
        Ok(Self {
            config,
            precision,
            format,
            context,
            max_batch,
            ctx,
            embed,
            output,
            final_norm,
            inv_freq,
            layers,
            buf,
            decode_plan: None,
            output_vocab: vocab,
            n_splits,
            weight_bytes,
        })
    }

    pub fn gpu(&self) -> &GpuContext {
        &self.ctx
    }

    /// Keeps generation to the first `n` vocabulary entries (those a tokenizer can decode).
    pub fn limit_output_vocab(&mut self, n: usize) {
        self.output_vocab = n.clamp(1, self.config.vocab_size);
        self.decode_plan = None;
    }

    /// How many vocabulary entries generation picks from.
    pub fn output_vocab(&self) -> usize {
        self.output_vocab
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// The forward pass for `n` tokens (ids and positions already in their buffers); with
    /// `logits` `None` it only fills the KV cache (an early chunk of a long prompt).
    fn plan(&self, n: usize, logits: Option<Logits>) -> Result<Vec<Op>> {
        let c = &self.config;
        let ctx = &self.ctx;
        let b = &self.buf;
        let mut ops = Vec::new();
        let kernels =
            |ds: Vec<Dispatch>, ops: &mut Vec<Op>| ops.extend(ds.into_iter().map(Op::Kernel));
        let shape = AttentionShape {
            n_tokens: n,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            context: self.context,
        };
        let scale = 1.0 / (c.head_dim as f32).sqrt();

        kernels(
            embedding::embed(ctx, &b.ids, &self.embed, &b.x, n)?,
            &mut ops,
        );
        for (i, layer) in self.layers.iter().enumerate() {
            // Attention block.
            ops.push(Op::Kernel(rmsnorm::rmsnorm(
                ctx,
                &b.x,
                &layer.attn_norm,
                &b.h,
                n,
                c.rms_eps,
            )?));
            kernels(matmul::matmul(ctx, &b.h, &layer.wq, &b.q, n)?, &mut ops);
            kernels(matmul::matmul(ctx, &b.h, &layer.wk, &b.k, n)?, &mut ops);
            kernels(matmul::matmul(ctx, &b.h, &layer.wv, &b.v, n)?, &mut ops);
            ops.push(Op::Kernel(rope::rope(
                ctx,
                &b.q,
                &b.positions,
                &self.inv_freq,
                n,
                c.n_heads,
                c.rope_mode,
            )?));
            ops.push(Op::Kernel(rope::rope(
                ctx,
                &b.k,
                &b.positions,
                &self.inv_freq,
                n,
                c.n_kv_heads,
                c.rope_mode,
            )?));
            ops.push(Op::StoreKv(i));
            let inputs = AttentionInputs {
                q: &b.q,
                k_cache: &layer.k_cache,
                v_cache: &layer.v_cache,
                positions: &b.positions,
                out: &b.attn,
            };
            if n == 1 {
                let [split, combine] =
                    attention::decode(ctx, &inputs, &b.partial, &shape, scale, self.n_splits)?;
                ops.extend([Op::Kernel(split), Op::Kernel(combine)]);
            } else {
                ops.push(Op::Kernel(attention::prefill(ctx, &inputs, &shape, scale)?));
            }
            kernels(matmul::matmul(ctx, &b.attn, &layer.wo, &b.h, n)?, &mut ops);
            ops.push(Op::Kernel(residual::add(ctx, &b.x, &b.h, n * c.dim)?));
            // Feed-forward block.
            ops.push(Op::Kernel(rmsnorm::rmsnorm(
                ctx,
                &b.x,
                &layer.ffn_norm,
                &b.h,
                n,
                c.rms_eps,
            )?));
            kernels(
                matmul::matmul(ctx, &b.h, &layer.w_gate, &b.gate, n)?,
                &mut ops,
            );
            kernels(matmul::matmul(ctx, &b.h, &layer.w_up, &b.up, n)?, &mut ops);
            ops.push(Op::Kernel(swiglu::swiglu(
                ctx,
                &b.gate,
                &b.up,
                &b.ffn,
                n * c.ffn_dim,
            )?));
            kernels(
                matmul::matmul(ctx, &b.ffn, &layer.w_down, &b.h, n)?,
                &mut ops,
            );
            ops.push(Op::Kernel(residual::add(ctx, &b.x, &b.h, n * c.dim)?));
        }
        let Some(logits) = logits else {
            return Ok(ops);
        };
        ops.push(Op::Kernel(rmsnorm::rmsnorm(
            ctx,
            &b.x,
            &self.final_norm,
            &b.h,
            n,
            c.rms_eps,
        )?));
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let rows = match logits {
            Logits::Last => {
                ops.push(Op::CopyLastRow);
                kernels(matmul::gemv(ctx, &b.last, head, &b.logits)?, &mut ops);
                1
            }
            Logits::All => {
                kernels(matmul::matmul(ctx, &b.h, head, &b.logits, n)?, &mut ops);
                n
            }
        };
        ops.push(Op::Kernel(argmax::argmax(
            ctx,
            &b.logits,
            &b.tokens,
            rows,
            self.output_vocab,
            c.vocab_size,
        )?));
        Ok(ops)
    }

    /// Records `ops` for `n` tokens starting at `start` and submits them, reading back the
    /// `rows` argmax token ids (none, without waiting, when `rows` is 0).
    async fn run(&self, ops: &[Op], n: usize, start: usize, rows: usize) -> Result<Vec<u32>> {
        let b = &self.buf;
        let act = DType::from(self.precision).size() as u64;
        let kv_row = (self.config.kv_dim() as u64) * act;
        let mut rec = self.ctx.recorder();
        for op in ops {
            match op {
                Op::Kernel(d) => rec.dispatch(d),
                Op::StoreKv(i) => {
                    let layer = &self.layers[*i];
                    let (offset, size) = (start as u64 * kv_row, n as u64 * kv_row);
                    rec.copy(&b.k.buffer, 0, &layer.k_cache.buffer, offset, size);
                    rec.copy(&b.v.buffer, 0, &layer.v_cache.buffer, offset, size);
                }
                Op::CopyLastRow => {
                    let row = self.config.dim as u64 * act;
                    rec.copy(&b.h.buffer, (n as u64 - 1) * row, &b.last.buffer, 0, row);
                }
            }
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

    fn check_span(&self, tokens: &[u32], start: usize) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::Invalid("no tokens to process".into()));
        }
        if start + tokens.len() > self.context {
            return Err(Error::Invalid(format!(
                "{} tokens at position {start} exceed the context of {} tokens",
                tokens.len(),
                self.context
            )));
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    fn upload_inputs(&self, tokens: &[u32], start: usize) {
        let positions: Vec<u32> = (start..start + tokens.len()).map(|p| p as u32).collect();
        self.ctx
            .queue
            .write_buffer(&self.buf.ids.buffer, 0, bytemuck::cast_slice(tokens));
        self.ctx.queue.write_buffer(
            &self.buf.positions.buffer,
            0,
            bytemuck::cast_slice(&positions),
        );
    }

    /// Runs `tokens` at positions `start..`, filling the KV cache, in passes of at most
    /// `max_batch` tokens. Returns the argmax token after each position (`Logits::All`) or
    /// after the last one only (`Logits::Last`).
    pub async fn forward(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<u32>> {
        Ok(self.forward_inner(tokens, start, logits, false).await?.0)
    }

    /// Like [`Llama::forward`], but returns the logits themselves (`vocab_size` values per
    /// returned row, row-major) for sampling and perplexity.
    pub async fn forward_logits(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        Ok(self.forward_inner(tokens, start, logits, true).await?.1)
    }

    async fn forward_inner(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
        read_logits: bool,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        self.check_span(tokens, start)?;
        let (mut ids_out, mut logits_out) = (Vec::new(), Vec::new());
        for (i, chunk) in tokens.chunks(self.max_batch).enumerate() {
            let pos = start + i * self.max_batch;
            let is_last = pos + chunk.len() == start + tokens.len();
            let n = chunk.len();
            // Early chunks of a prompt whose last logits are all that is wanted only fill
            // the KV cache: no output head, no readback, no wait.
            let wanted = (logits == Logits::All || is_last).then_some(logits);
            let rows = match wanted {
                Some(Logits::All) => n,
                Some(Logits::Last) => 1,
                None => 0,
            };
            self.upload_inputs(chunk, pos);
            let ids = if n == 1 && wanted == Some(Logits::Last) {
                if self.decode_plan.is_none() {
                    self.decode_plan = Some(self.plan(1, Some(Logits::Last))?);
                }
                let plan = self.decode_plan.as_ref().expect("just built");
                self.run(plan, 1, pos, 1).await?
            } else {
                let ops = self.plan(n, wanted)?;
                self.run(&ops, n, pos, rows).await?
            };
            ids_out.extend(ids);
            if read_logits && rows > 0 {
                let t = &self.buf.logits;
                let n_values = rows * self.config.vocab_size;
                let size = (n_values * t.dtype.size()) as u64;
                let bytes = if rows == 1 {
                    // Sampling reads one row per token: into a buffer kept for it.
                    let staging = &self.buf.logits_readback;
                    let mut rec = self.ctx.recorder();
                    rec.copy(
                        &t.buffer,
                        0,
                        staging,
                        0,
                        staging.size().min(size.div_ceil(4) * 4),
                    );
                    rec.submit()?;
                    self.ctx.map_and_copy(staging).await?
                } else {
                    self.ctx.read_bytes(&t.buffer, 0, size).await?
                };
                logits_out.extend(floats_from_bytes(&bytes, t.dtype, n_values));
            }
        }
        Ok((ids_out, logits_out))
    }

    /// Blocking [`Llama::forward_logits`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_logits_blocking(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.forward_logits(tokens, start, logits))
    }

    /// Blocking [`Llama::forward`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<u32>> {
        pollster::block_on(self.forward(tokens, start, logits))
    }
}
