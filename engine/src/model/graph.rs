//! The Llama-family forward pass on the GPU, readable top to bottom in [`Model::plan`].
//!
//! All buffers (weights, KV cache, activations for up to `max_batch` tokens, logits) are
//! allocated at load. A call records the plan for its tokens into one encoder and submits
//! once; the decode plans (one token, or one token of each of `n` sequences) are built once
//! and reused, so a decode step allocates nothing and reads back only the 4-byte token ids
//! (or, when sampling on the host, rows of logits into a buffer kept for them).
//!
//! The KV cache has `slots` ranges of `context` rows: a sequence lives in one slot, and
//! [`Model::decode_batch`] decodes a token of several slots' sequences in one pass over the
//! weights. A token's arithmetic is the same alone or batched (see `shaders/matmul.wgsl`).

use std::collections::HashMap;

use super::config::{Activation, LayerSpec, ModelConfig, Rope};
use super::source::{GgufWeights, WeightSource};
use super::weights::{self, ModelParams, Param, Shape};
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::gpu::tensor::floats_from_bytes;
use crate::gpu::{DType, Dispatch, GpuContext, KernelTimer, Precision, Recorder, Tensor};
use crate::kernels::attention::{self, AttentionInputs, AttentionShape, Scores};
use crate::kernels::matmul::{self, Epilogue, Fusion};
use crate::kernels::rope::{self, QkvFusion, QkvOutputs, QkvShape};
use crate::kernels::sample::{self, SampleSettings, SettingsPerRow};
use crate::kernels::weight::GpuWeight;
use crate::kernels::Place;
use crate::kernels::{argmax, embedding, norm};
use crate::quant::WeightFormat;
use crate::text::Tokenizer;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// A format to convert every matrix to (decoded and quantized: GGUF blocks are rounded a
    /// second time); `None` runs each matrix as the source stores it (GGUF blocks, MLC's
    /// packed weights), and quantizes to [`FALLBACK_FORMAT`] only what no kernel runs as
    /// stored (Hugging Face and q0 folders' floats). An MLC folder packed in another format
    /// is an error: its packed weights are all there is.
    pub format: Option<WeightFormat>,
    /// KV-cache length in tokens (prompt plus generated); capped at the model's own.
    pub context: usize,
    /// Tokens per prefill pass; longer prompts go in several passes.
    pub max_batch: usize,
    /// Activation precision; `None` picks the adapter's best.
    pub precision: Option<Precision>,
    /// Sequences the KV cache holds at once (`context` tokens each), decoded together by
    /// [`Model::decode_batch`]; one for a single conversation.
    pub slots: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            format: None,
            context: 2048,
            max_batch: 128,
            precision: None,
            slots: 1,
        }
    }
}

struct Layer {
    spec: LayerSpec,
    attn_norm: Tensor,
    /// Q, K and V projections as one matrix: rows `[q | k | v]`.
    w_qkv: GpuWeight,
    /// `[q | k | v]` biases.
    qkv_bias: Option<Tensor>,
    /// `[q | k]` per-head norm weights.
    qk_norm: Option<Tensor>,
    wo: GpuWeight,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    /// Gate and up projections as one matrix: rows `[gate | up]`.
    w_gate_up: GpuWeight,
    w_down: GpuWeight,
    post_ffn_norm: Option<Tensor>,
    /// Which of the model's RoPE frequency tables this layer rotates with.
    rope: usize,
    /// KV-cache rows per sequence: the context, or for a sliding-window layer its window
    /// and a prefill pass (a pass's keys must not overwrite keys its first token sees).
    ring: usize,
    k_cache: Tensor,
    v_cache: Tensor,
}

/// Activations for up to `max_batch` tokens (and at least one per slot).
struct Buffers {
    ids: Tensor,
    /// A [`Place`] per token.
    places: Tensor,
    /// The residual stream, f32 whatever the activation precision.
    x: Tensor,
    /// A block's output before its post-norm joins the residual stream.
    block_out: Tensor,
    qkv: Tensor,
    q: Tensor,
    attn: Tensor,
    ffn: Tensor,
    last: Tensor,
    partial: Tensor,
    logits: Tensor,
    tokens: Tensor,
    readback: wgpu::Buffer,
    /// A row of logits per slot, for sampling on the host.
    logits_readback: wgpu::Buffer,
    /// The GPU sampler's settings, one [`SampleSettings`] per slot, rewritten before each
    /// sampled pass.
    sample_settings: Tensor,
}

/// What a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pass {
    /// `n` prompt tokens of one sequence, ending in the logits asked for (none: an early
    /// chunk of a long prompt only fills the KV cache). It runs the prefill kernels whatever
    /// `n` is, even 1, so a prompt's KV cache and logits are the same bits however the
    /// prompt is cut into passes (by the chunk size, or after a cached prefix).
    Sequence { n: usize, logits: Option<Logits> },
    /// One token of each of `n` sequences, with the decode kernels: a decode step, batched
    /// when `n` > 1.
    Batch { n: usize },
}

/// How each sequence of a [`Model::decode_batch`] step picks its next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NextToken {
    /// The most likely token.
    Greedy,
    /// A draw on the GPU with these settings.
    Sample(SampleSettings),
    /// None: the step hands back the row of logits (to sample with penalties on the host).
    Logits,
}

/// One sequence's token in a [`Model::decode_batch`] step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchToken {
    /// The KV-cache slot its sequence lives in.
    pub slot: usize,
    pub token: u32,
    /// Its position in the sequence (tokens already in the slot's cache).
    pub position: usize,
    pub next: NextToken,
}

/// What a [`Model::decode_batch`] step gives each sequence.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchOutput {
    Token(u32),
    /// The logits row (`output_vocab` values) for [`NextToken::Logits`].
    Logits(Vec<f32>),
}

/// How a pass picks its tokens from the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pick {
    /// The most likely token.
    Argmax,
    /// A draw with the settings in `Buffers::sample_settings`.
    Sample,
}

/// Which logits a pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, teacher-forced checks).
    All,
}

/// GPU memory a loaded model holds, in bytes, by what it is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Weights as uploaded (codes, scales, norms).
    pub weights: u64,
    /// Keys and values for every layer, `context` tokens for each slot (a sliding-window
    /// layer's window and a prefill pass).
    pub kv_cache: u64,
    /// What the KV cache would take if every layer kept the whole context.
    pub kv_cache_full: u64,
    /// Activations for `max_batch` tokens, logits, uniforms and readback buffers.
    pub activations: u64,
}

impl MemoryUse {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.activations
    }
}

/// What one decode step records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepShape {
    /// Kernel launches.
    pub dispatches: usize,
    /// Buffer copies between them (the readback of the token id included).
    pub copies: usize,
}

/// One recorded step of a pass: a kernel, or copying the last token's residual row for the
/// head.
enum Op {
    Kernel(Dispatch),
    CopyLastRow,
}

/// A loaded Llama-family model on one GPU.
pub struct Model {
    pub config: ModelConfig,
    pub precision: Precision,
    /// The weight formats its matrices run in and how many matrices each, most first.
    pub formats: Vec<(WeightFormat, usize)>,
    pub context: usize,
    /// Sequences the KV cache holds, `context` rows each.
    pub slots: usize,
    max_batch: usize,
    ctx: GpuContext,
    embed: GpuWeight,
    output: Option<GpuWeight>,
    final_norm: Tensor,
    /// RoPE frequency tables, one per distinct [`Rope`] of the layers.
    inv_freqs: Vec<Tensor>,
    layers: Vec<Layer>,
    buf: Buffers,
    /// The decode plans (one token of one sequence, or of each of n), built on first use.
    plans: HashMap<(Pass, Pick), Vec<Op>>,
    /// Tokens the output may pick from: the vocabulary, or fewer when the tokenizer has
    /// fewer tokens than the output head has rows (padding).
    output_vocab: usize,
    n_splits: usize,
    weight_bytes: usize,
    /// Per slot, the end of the last span written: how far back a sequence may resume is
    /// bounded by [`Model::max_rewind`].
    filled: Vec<usize>,
}

/// The format matrices stored as plain floats (Hugging Face folders, MLC's q0 folders) are
/// quantized to when no format is asked for.
pub const FALLBACK_FORMAT: WeightFormat = WeightFormat::Q4F16;

impl Layer {
    /// Its norm and bias vectors.
    fn vectors(&self) -> impl Iterator<Item = &Tensor> {
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
fn cache_ring(spec: &LayerSpec, context: usize, max_batch: usize) -> usize {
    spec.window
        .map_or(context, |w| (w + max_batch).min(context))
}

/// A decode step of one sequence.
const ONE_TOKEN: Pass = Pass::Batch { n: 1 };

/// The GGUF tensor with Llama 3's per-pair RoPE frequency divisors.
const ROPE_FACTORS: &str = "rope_freqs.weight";

/// A model being loaded. Parameters arrive one at a time and in any order — the browser
/// pushes each one as the shards holding it arrive — and [`ModelLoader::finish`] then
/// allocates the KV cache and activations. Everything the adapter's limits rule out is
/// refused in [`ModelLoader::new`], before a byte is fetched or uploaded.
pub struct ModelLoader {
    ctx: GpuContext,
    config: ModelConfig,
    params: ModelParams,
    precision: Precision,
    convert: Option<WeightFormat>,
    context: usize,
    slots: usize,
    max_batch: usize,
    matrices: HashMap<String, GpuWeight>,
    /// Matrices loaded per format.
    formats: Vec<(WeightFormat, usize)>,
    vectors: HashMap<String, Tensor>,
    rope_factors: Option<Vec<f32>>,
    weight_bytes: usize,
}

impl ModelLoader {
    /// Checks `config` and the adapter's limits.
    pub fn new(ctx: GpuContext, config: ModelConfig, options: &LoadOptions) -> Result<Self> {
        config.validate()?;
        if config.final_softcap.is_some() {
            return Err(Error::Unsupported(
                "a final logit soft-cap (Gemma 2)".into(),
            ));
        }
        let precision = options.precision.unwrap_or_else(|| ctx.default_precision());
        ctx.check_precision(precision)?;
        let context = options.context.clamp(1, config.context_length.max(1));
        let slots = options.slots.max(1);
        // Each layer's KV cache and the logits are single bindings: keep them under the
        // adapter's binding limit, with a clear error up front instead of a GPU error later.
        let act_bytes = DType::from(precision).size();
        let limit = ctx.max_binding_size() as usize;
        let kv_row = config.kv_dim() * act_bytes;
        if slots * context * kv_row > limit {
            let sequences = if slots > 1 {
                format!(" for each of {slots} sequences")
            } else {
                String::new()
            };
            return Err(Error::TooLarge(format!(
                "a KV cache of {context} tokens{sequences} needs {} MiB per layer, over this adapter's {} MiB binding limit (maxStorageBufferBindingSize); use a context of at most {}",
                (slots * context * kv_row) >> 20,
                limit >> 20,
                limit / kv_row / slots
            )));
        }
        let logits_row = config.vocab_size * act_bytes;
        let max_batch = options
            .max_batch
            .clamp(1, context)
            .min((limit / logits_row).max(1));
        let params = ModelParams::new(&config);
        // The widest weight row must fit one binding (a matrix is split between rows): in
        // the format asked for, else in the widest any source stores (f32).
        let widest = options.format.unwrap_or(WeightFormat::F32);
        for param in params.in_mlc_order() {
            if let Shape::Matrix { cols, .. } = param.shape {
                GpuWeight::check_row_fits(&ctx, widest, cols)?;
            }
        }
        Ok(Self {
            ctx,
            config,
            params,
            precision,
            convert: options.format,
            context,
            slots,
            max_batch,
            matrices: HashMap::new(),
            formats: Vec::new(),
            vectors: HashMap::new(),
            rope_factors: None,
            weight_bytes: 0,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Every parameter the model needs, in the order MLC folders store them.
    pub fn params(&self) -> Vec<Param> {
        self.params.in_mlc_order().into_iter().cloned().collect()
    }

    /// Makes `param` from `source` (as stored, or converted: decoded and quantized) and
    /// uploads it.
    pub fn load(&mut self, source: &dyn WeightSource, param: &Param) -> Result<()> {
        match param.shape {
            Shape::Matrix { .. } => {
                let stored = match self.convert {
                    Some(_) => None,
                    None => weights::stored_matrix(source, param)?,
                };
                let mut parts = match stored {
                    Some(parts) => parts,
                    None => {
                        let format = self.convert.unwrap_or(FALLBACK_FORMAT);
                        vec![weights::packed_matrix(source, param, format)?]
                    }
                };
                if self
                    .params
                    .layers
                    .iter()
                    .any(|l| l.gate_up.name == param.name)
                {
                    // The SwiGLU matmul reads each gate row next to its up row.
                    let [whole] = &parts[..] else {
                        return Err(Error::Unsupported(format!(
                            "{}: the gate and up projections are stored in different formats ({}); glim's SwiGLU matmul needs one (--quant converts both)",
                            param.name,
                            parts.iter().map(|p| p.format.name()).collect::<Vec<_>>().join(", ")
                        )));
                    };
                    parts = vec![whole.interleave_halves()?];
                }
                for part in &parts {
                    self.weight_bytes += part.byte_size();
                    match self.formats.iter_mut().find(|(f, _)| *f == part.format) {
                        Some((_, n)) => *n += 1,
                        None => self.formats.push((part.format, 1)),
                    }
                }
                let weight = GpuWeight::upload_parts(&self.ctx, &parts)?;
                self.matrices.insert(param.name.clone(), weight);
            }
            Shape::Vector(len) => {
                let values = weights::vector(source, param, self.convert.is_some())?;
                self.weight_bytes += len * 4;
                let tensor = self.ctx.tensor_from_f32(&values, &[len], DType::F32)?;
                self.vectors.insert(param.name.clone(), tensor);
            }
        }
        // Hand the queued upload to the GPU now, so staging memory holds one parameter at a
        // time, not the model; an allocation the GPU refused shows up here, at its tensor.
        self.ctx.queue.submit(std::iter::empty());
        self.ctx.take_error()
    }

    /// Divides RoPE's frequencies pair by pair (Model 3 GGUFs' `rope_freqs.weight`).
    pub fn set_rope_factors(&mut self, factors: Vec<f32>) {
        self.rope_factors = Some(factors);
    }

    /// Bytes of weights uploaded so far.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Allocates the KV cache and activations; an error names any parameter never loaded.
    pub fn finish(self) -> Result<Model> {
        let missing: Vec<&str> = self
            .params
            .in_mlc_order()
            .into_iter()
            .filter(|p| !self.matrices.contains_key(&p.name) && !self.vectors.contains_key(&p.name))
            .map(|p| p.name.as_str())
            .collect();
        if let Some(first) = missing.first() {
            return Err(Error::Invalid(format!(
                "{} of the model's {} parameters were never loaded, {first} first",
                missing.len(),
                self.params.in_mlc_order().len()
            )));
        }
        let Self {
            ctx,
            config,
            params,
            precision,
            context,
            slots,
            max_batch,
            mut matrices,
            mut vectors,
            rope_factors,
            weight_bytes,
            mut formats,
            ..
        } = self;
        formats.sort_by_key(|&(f, n)| (std::cmp::Reverse(n), f.name()));
        let act = DType::from(precision);
        let (qd, kvd) = (config.q_dim(), config.kv_dim());
        // Every name was checked above.
        let mut matrix = |p: &Param| matrices.remove(&p.name).expect("loaded");
        let mut vector = |p: &Param| vectors.remove(&p.name).expect("loaded");
        let embed = matrix(&params.embed);
        let output = params.output.as_ref().map(&mut matrix);
        // One frequency table per distinct RoPE (Gemma 3: local and global), with Llama 3
        // GGUFs' per-pair divisors.
        let mut ropes: Vec<Rope> = Vec::new();
        let mut inv_freqs = Vec::new();
        for spec in &config.layers {
            if ropes.contains(&spec.rope) {
                continue;
            }
            let mut freqs = spec.rope.inv_freq(config.head_dim);
            if let Some(factors) = &rope_factors {
                if factors.len() != freqs.len() {
                    return Err(Error::Invalid(format!(
                        "{ROPE_FACTORS} has {} values, expected {}",
                        factors.len(),
                        freqs.len()
                    )));
                }
                freqs.iter_mut().zip(factors).for_each(|(f, d)| *f /= d);
            }
            ropes.push(spec.rope);
            inv_freqs.push(ctx.tensor_from_f32(&freqs, &[freqs.len()], DType::F32)?);
        }
        let mut layers = Vec::new();
        for (p, spec) in params.layers.iter().zip(&config.layers) {
            let ring = cache_ring(spec, context, max_batch);
            layers.push(Layer {
                spec: *spec,
                attn_norm: vector(&p.attn_norm),
                w_qkv: matrix(&p.qkv),
                qkv_bias: p.qkv_bias.as_ref().map(&mut vector),
                qk_norm: p.qk_norm.as_ref().map(&mut vector),
                wo: matrix(&p.attn_output),
                post_attn_norm: p.post_attn_norm.as_ref().map(&mut vector),
                ffn_norm: vector(&p.ffn_norm),
                w_gate_up: matrix(&p.gate_up),
                w_down: matrix(&p.down),
                post_ffn_norm: p.post_ffn_norm.as_ref().map(&mut vector),
                rope: ropes.iter().position(|r| *r == spec.rope).expect("added"),
                ring,
                k_cache: ctx.zeros(&[slots * ring, kvd], act)?,
                v_cache: ctx.zeros(&[slots * ring, kvd], act)?,
            });
        }
        let final_norm = vector(&params.final_norm);

        let b = max_batch.max(slots);
        let n_splits = context.div_ceil(256).clamp(1, 32);
        let logits_row = config.vocab_size * act.size();
        let buf = Buffers {
            ids: ctx.zeros(&[b], DType::U32)?,
            places: ctx.zeros(&[b, 2], DType::U32)?,
            x: ctx.zeros(&[b, config.dim], DType::F32)?,
            block_out: ctx.zeros(&[b, config.dim], act)?,
            qkv: ctx.zeros(&[b, qd + 2 * kvd], act)?,
            q: ctx.zeros(&[b, qd], act)?,
            attn: ctx.zeros(&[b, qd], act)?,
            ffn: ctx.zeros(&[b, config.ffn_dim], act)?,
            last: ctx.zeros(&[config.dim], DType::F32)?,
            partial: ctx.zeros(
                &[AttentionShape {
                    n_tokens: slots,
                    n_heads: config.n_heads,
                    n_kv_heads: config.n_kv_heads,
                    head_dim: config.head_dim,
                    context,
                    window: None,
                    ring: context,
                }
                .partial_len(n_splits)],
                DType::F32,
            )?,
            logits: ctx.zeros(&[b, config.vocab_size], act)?,
            tokens: ctx.zeros(&[b], DType::U32)?,
            readback: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("token readback"),
                size: (b * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            logits_readback: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("logits readback"),
                size: ((slots * logits_row) as u64).div_ceil(4) * 4,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            sample_settings: ctx.zeros(
                &[slots, std::mem::size_of::<SampleSettings>() / 4],
                DType::U32,
            )?,
        };
        ctx.take_error()?;
        let vocab = config.vocab_size;
        Ok(Model {
            config,
            precision,
            formats,
            context,
            slots,
            max_batch,
            ctx,
            embed,
            output,
            final_norm,
            inv_freqs,
            layers,
            buf,
            plans: HashMap::new(),
            output_vocab: vocab,
            n_splits,
            weight_bytes,
            filled: vec![0; slots],
        })
    }
}

impl Model {
    /// Loads a GGUF Llama model onto `ctx`. `progress(done, total)` is called per tensor.
    pub fn from_gguf(
        ctx: GpuContext,
        file: &GgufFile,
        options: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let config = ModelConfig::from_gguf(file)?;
        let source = GgufWeights::new(file, &config);
        Self::load(ctx, config, &source, options, progress)
    }

    /// Loads a model of `config` whose weights `source` provides, one parameter at a time.
    pub fn load(
        ctx: GpuContext,
        config: ModelConfig,
        source: &dyn WeightSource,
        options: &LoadOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let mut loader = ModelLoader::new(ctx, config, options)?;
        let params = loader.params();
        let total = params.len() + 1;
        for (done, param) in params.iter().enumerate() {
            loader.load(source, param)?;
            progress(done + 1, total);
        }
        // Llama 3 GGUFs carry their frequency scaling as per-pair divisors.
        if source.has(ROPE_FACTORS) {
            let pairs = loader.config.head_dim / 2;
            loader.set_rope_factors(source.tensor_f32(ROPE_FACTORS, &[pairs])?);
        }
        let model = loader.finish()?;
        progress(total, total);
        Ok(model)
    }

    pub fn gpu(&self) -> &GpuContext {
        &self.ctx
    }

    /// Bits per weight of its matrices on the GPU (codes, scales and padding), the
    /// embedding table and output head included.
    pub fn matrix_bits_per_weight(&self) -> f64 {
        let mut matrices: Vec<&GpuWeight> = vec![&self.embed];
        matrices.extend(&self.output);
        for l in &self.layers {
            matrices.extend([&l.w_qkv, &l.wo, &l.w_gate_up, &l.w_down]);
        }
        let bytes: u64 = matrices.iter().map(|m| m.buffer_bytes()).sum();
        let weights: usize = matrices.iter().map(|m| m.rows * m.cols).sum();
        bytes as f64 * 8.0 / weights.max(1) as f64
    }

    /// Its matrices' formats, most used first: `q4_1`, or `q4_K + q6_K`.
    pub fn weight_formats(&self) -> String {
        let names: Vec<&str> = self.formats.iter().map(|(f, _)| f.name()).collect();
        names.join(" + ")
    }

    /// Keeps generation to the first `n` vocabulary entries (those a tokenizer can decode).
    pub fn limit_output_vocab(&mut self, n: usize) {
        self.output_vocab = n.clamp(1, self.config.vocab_size);
        self.plans.clear();
    }

    /// Checks that `tokenizer` fits this model and keeps generation to the tokens it can
    /// decode (output rows past its vocabulary are padding).
    pub fn fit_tokenizer(&mut self, tokenizer: &Tokenizer) -> Result<()> {
        let (model_vocab, tokens) = (self.config.vocab_size, tokenizer.vocab_size());
        if model_vocab < tokens {
            return Err(Error::Invalid(format!(
                "the tokenizer has {tokens} tokens but the model only {model_vocab}"
            )));
        }
        self.limit_output_vocab(tokens);
        Ok(())
    }

    /// The attention window of each sliding-window layer and the cache rows it keeps per
    /// sequence, and how many layers attend to the whole context.
    pub fn sliding_layers(&self) -> (Vec<(usize, usize)>, usize) {
        let sliding: Vec<(usize, usize)> = self
            .layers
            .iter()
            .filter_map(|l| l.spec.window.map(|w| (w, l.ring)))
            .collect();
        let global = self.layers.len() - sliding.len();
        (sliding, global)
    }

    /// How many tokens back from the end of what a slot holds a sequence can resume (a
    /// cached prefix reused): unbounded, but for a sliding-window layer only as far as the
    /// keys its ring of cache rows still holds.
    pub fn max_rewind(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.ring < self.context)
            .filter_map(|l| l.spec.window.map(|w| l.ring.saturating_sub(w)))
            .min()
            .unwrap_or(usize::MAX)
    }

    /// How many vocabulary entries generation picks from.
    pub fn output_vocab(&self) -> usize {
        self.output_vocab
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// The GPU memory this model holds, from the sizes of its buffers.
    pub fn memory(&self) -> MemoryUse {
        let matrix = GpuWeight::buffer_bytes;
        let vector = |t: &Tensor| t.buffer.size();
        let mut weights = matrix(&self.embed)
            + self.output.as_ref().map_or(0, matrix)
            + vector(&self.final_norm)
            + self.inv_freqs.iter().map(vector).sum::<u64>();
        let mut kv_cache = 0;
        let full_layer = (2 * self.slots * self.context * self.config.kv_dim()) as u64
            * DType::from(self.precision).size() as u64;
        for l in &self.layers {
            weights += l.vectors().map(vector).sum::<u64>();
            weights += matrix(&l.w_qkv) + matrix(&l.wo) + matrix(&l.w_gate_up) + matrix(&l.w_down);
            kv_cache += vector(&l.k_cache) + vector(&l.v_cache);
        }
        let b = &self.buf;
        let activations = [
            &b.ids,
            &b.places,
            &b.x,
            &b.block_out,
            &b.qkv,
            &b.q,
            &b.attn,
            &b.ffn,
            &b.last,
            &b.partial,
            &b.logits,
            &b.tokens,
            &b.sample_settings,
        ]
        .into_iter()
        .map(vector)
        .sum::<u64>()
            + b.readback.size()
            + b.logits_readback.size();
        MemoryUse {
            weights,
            kv_cache,
            kv_cache_full: full_layer * self.layers.len() as u64,
            activations,
        }
    }

    /// Bytes a decode step reads from memory at `position` (tokens already in the KV
    /// cache): every layer's matrices and norms, the output head, one embedding row, and the
    /// keys and values of the tokens each layer sees (`position + 1`, or its window). The bandwidth roofline divides a copy
    /// kernel's bytes per second by this.
    pub fn decode_read_bytes(&self, position: usize) -> u64 {
        let matrix = GpuWeight::buffer_bytes;
        let c = &self.config;
        let act = DType::from(self.precision).size() as u64;
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                matrix(&l.w_qkv)
                    + matrix(&l.wo)
                    + matrix(&l.w_gate_up)
                    + matrix(&l.w_down)
                    + l.vectors().map(|v| v.buffer.size()).sum::<u64>()
                    + (2 * l.spec.window.map_or(position + 1, |w| w.min(position + 1)) * c.kv_dim())
                        as u64
                        * act
            })
            .sum();
        let head = matrix(self.output.as_ref().unwrap_or(&self.embed));
        let embed_row = matrix(&self.embed) / c.vocab_size as u64;
        layers + head + embed_row
    }

    /// Dispatches and copies in one greedy decode step.
    pub fn decode_step_shape(&mut self) -> Result<StepShape> {
        let plan = self.cached_plan(ONE_TOKEN, Pick::Argmax)?;
        let dispatches = plan.iter().filter(|op| matches!(op, Op::Kernel(_))).count();
        // The plan's own copies, plus the token id's copy to the readback buffer.
        let copies = plan.len() - dispatches + 1;
        Ok(StepShape { dispatches, copies })
    }

    /// The forward pass `pass` (token ids and places already in their buffers), ending in
    /// `pick` when it computes logits.
    fn plan(&self, pass: Pass, pick: Pick) -> Result<Vec<Op>> {
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
        ops.push(Op::Kernel(match pick {
            Pick::Argmax => argmax::argmax(
                ctx,
                &b.logits,
                &b.tokens,
                rows,
                self.output_vocab,
                c.vocab_size,
            )?,
            Pick::Sample => sample::sample(
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
            )?,
        }));
        Ok(ops)
    }

    /// Records `ops` for `n` tokens and submits them, reading back the
    /// `rows` argmax token ids (none, without waiting, when `rows` is 0).
    async fn run(&self, ops: &[Op], n: usize, rows: usize) -> Result<Vec<u32>> {
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
    fn record(
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

    /// Runs `tokens` from `position` (a greedy decode step for one token, a prefill pass
    /// for up to `max_batch`) with every kernel timed on the GPU: each dispatch's name and
    /// seconds, in the order the pass runs them. Needs the adapter's timestamp queries.
    pub async fn profile(&mut self, tokens: &[u32], position: usize) -> Result<Vec<(String, f64)>> {
        self.check_span(tokens, position)?;
        let n = tokens.len();
        if n > self.max_batch {
            return Err(Error::Invalid(format!(
                "a profiled pass takes at most {} tokens, got {n}",
                self.max_batch
            )));
        }
        let pass = if n == 1 {
            ONE_TOKEN
        } else {
            Pass::Sequence {
                n,
                logits: Some(Logits::Last),
            }
        };
        let plan = if n == 1 {
            self.cached_plan(pass, Pick::Argmax)?;
            self.plans
                .remove(&(pass, Pick::Argmax))
                .expect("just built")
        } else {
            self.plan(pass, Pick::Argmax)?
        };
        let timed = async {
            let mut timer = KernelTimer::new(&self.ctx, plan.len())?;
            self.upload_inputs(tokens, position, 0);
            let mut rec = self.ctx.recorder();
            for op in &plan {
                self.record(&mut rec, op, n, Some(&mut timer))?;
            }
            rec.resolve(&timer);
            rec.submit()?;
            timer.read(&self.ctx).await
        }
        .await;
        if n == 1 {
            self.plans.insert((pass, Pick::Argmax), plan);
        }
        timed
    }

    /// The decode plan for `pass` ending in `pick`, built on first use and kept.
    fn cached_plan(&mut self, pass: Pass, pick: Pick) -> Result<&[Op]> {
        if !self.plans.contains_key(&(pass, pick)) {
            let plan = self.plan(pass, pick)?;
            self.plans.insert((pass, pick), plan);
        }
        Ok(&self.plans[&(pass, pick)])
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

    /// Writes the ids and places of `tokens`, one sequence's from position `start` in
    /// `slot`.
    fn upload_inputs(&self, tokens: &[u32], start: usize, slot: usize) {
        let places: Vec<Place> = (start..start + tokens.len())
            .map(|p| Place {
                position: p as u32,
                slot: slot as u32,
            })
            .collect();
        self.write_inputs(tokens, &places);
    }

    fn write_inputs(&self, tokens: &[u32], places: &[Place]) {
        let queue = &self.ctx.queue;
        queue.write_buffer(&self.buf.ids.buffer, 0, bytemuck::cast_slice(tokens));
        queue.write_buffer(&self.buf.places.buffer, 0, bytemuck::cast_slice(places));
    }

    /// Runs `tokens` at positions `start..`, filling the KV cache, in passes of at most
    /// `max_batch` tokens. Returns the argmax token after each position (`Logits::All`) or
    /// after the last one only (`Logits::Last`). One token with `Logits::Last` is a decode
    /// step (the decode kernels); [`Model::prefill`] runs prompt tokens however few.
    pub async fn forward(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<u32>> {
        Ok(self
            .forward_inner(0, tokens, start, logits, false, Pick::Argmax, false)
            .await?
            .0)
    }

    /// Like [`Model::forward`], but returns the logits themselves (`vocab_size` values per
    /// returned row, row-major) for sampling and perplexity.
    pub async fn forward_logits(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        Ok(self
            .forward_inner(0, tokens, start, logits, true, Pick::Argmax, false)
            .await?
            .1)
    }

    /// Runs one sequence's `tokens` from position `start` of `slot` (a prompt, in passes
    /// of at most `max_batch` tokens) and picks the token after the last one as `next`
    /// says. What a slot held past `start` is overwritten.
    pub async fn prefill(
        &mut self,
        slot: usize,
        tokens: &[u32],
        start: usize,
        next: NextToken,
    ) -> Result<BatchOutput> {
        let last = Logits::Last;
        Ok(match next {
            NextToken::Greedy => {
                let (ids, _) = self
                    .forward_inner(slot, tokens, start, last, false, Pick::Argmax, true)
                    .await?;
                BatchOutput::Token(ids[0])
            }
            NextToken::Sample(settings) => {
                self.write_sample_settings(&[settings]);
                let (ids, _) = self
                    .forward_inner(slot, tokens, start, last, false, Pick::Sample, true)
                    .await?;
                BatchOutput::Token(ids[0])
            }
            NextToken::Logits => {
                let (_, mut row) = self
                    .forward_inner(slot, tokens, start, last, true, Pick::Argmax, true)
                    .await?;
                row.truncate(self.output_vocab);
                BatchOutput::Logits(row)
            }
        })
    }

    /// Runs one sequence's `tokens` from position `start` of `slot` into the KV cache only
    /// (an early part of a prompt): no output head, no readback, no wait.
    pub async fn fill(&mut self, slot: usize, tokens: &[u32], start: usize) -> Result<()> {
        self.check_span(tokens, start)?;
        self.check_resume(slot, start)?;
        self.filled[slot] = start + tokens.len();
        for (i, chunk) in tokens.chunks(self.max_batch).enumerate() {
            self.upload_inputs(chunk, start + i * self.max_batch, slot);
            let pass = Pass::Sequence {
                n: chunk.len(),
                logits: None,
            };
            let ops = self.plan(pass, Pick::Argmax)?;
            self.run(&ops, chunk.len(), 0).await?;
        }
        Ok(())
    }

    /// Tokens per prefill pass: longer prompts go in several.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Checks `slot` exists and its sequence can go on from `start`: a sliding-window layer
    /// keeps only the last keys of what the slot held, so a sequence cannot go back further
    /// than [`Model::max_rewind`] tokens from the end of it.
    fn check_resume(&self, slot: usize, start: usize) -> Result<()> {
        if slot >= self.slots {
            return Err(Error::Invalid(format!(
                "slot {slot} is past the model's {} slots",
                self.slots
            )));
        }
        let back = self.filled[slot].saturating_sub(start);
        if start > 0 && back > self.max_rewind() {
            return Err(Error::Invalid(format!(
                "slot {slot} cannot resume at position {start}: it holds {} positions and this model's sliding-window layers keep the keys of only the last {} past a window (start again from position 0)",
                self.filled[slot],
                self.max_rewind()
            )));
        }
        Ok(())
    }

    /// One decode step of one sequence: `token` at `position` of `slot`, the token after
    /// it picked as `next` says. It is that sequence's part of a [`Model::decode_batch`].
    pub async fn decode(
        &mut self,
        slot: usize,
        token: u32,
        position: usize,
        next: NextToken,
    ) -> Result<BatchOutput> {
        let step = BatchToken {
            slot,
            token,
            position,
            next,
        };
        let mut outputs = self.decode_batch(&[step]).await?;
        Ok(outputs.remove(0))
    }

    /// One decode step for several sequences at once: each [`BatchToken`]'s token runs at
    /// its position in its slot, in one pass over the weights, and each sequence's next
    /// token is picked as it asks. Every sequence gets the bits [`Model::decode`] of its
    /// token alone would give it. Slots must differ.
    pub async fn decode_batch(&mut self, batch: &[BatchToken]) -> Result<Vec<BatchOutput>> {
        let n = batch.len();
        if n == 0 || n > self.slots {
            return Err(Error::Invalid(format!(
                "a batched step takes 1 to {} sequences (the model's slots), got {n}",
                self.slots
            )));
        }
        let mut seen = vec![false; self.slots];
        for t in batch {
            if t.slot >= self.slots || std::mem::replace(&mut seen[t.slot], true) {
                return Err(Error::Invalid(format!(
                    "slot {} is out of range or twice in one batched step",
                    t.slot
                )));
            }
            self.check_span(&[t.token], t.position)?;
            self.check_resume(t.slot, t.position)?;
        }
        for t in batch {
            self.filled[t.slot] = t.position + 1;
        }
        let tokens: Vec<u32> = batch.iter().map(|t| t.token).collect();
        let places: Vec<Place> = batch
            .iter()
            .map(|t| Place {
                position: t.position as u32,
                slot: t.slot as u32,
            })
            .collect();
        self.write_inputs(&tokens, &places);
        let sampled = batch.iter().any(|t| matches!(t.next, NextToken::Sample(_)));
        let pick = if sampled {
            let settings: Vec<SampleSettings> = batch
                .iter()
                .map(|t| match t.next {
                    NextToken::Sample(s) => s,
                    _ => SampleSettings::greedy(),
                })
                .collect();
            self.write_sample_settings(&settings);
            Pick::Sample
        } else {
            Pick::Argmax
        };
        let pass = Pass::Batch { n };
        self.cached_plan(pass, pick)?;
        let ids = self.run(&self.plans[&(pass, pick)], n, n).await?;
        let logits = if batch.iter().any(|t| t.next == NextToken::Logits) {
            self.read_logit_rows(n).await?
        } else {
            Vec::new()
        };
        let vocab = self.config.vocab_size;
        Ok(batch
            .iter()
            .enumerate()
            .map(|(i, t)| match t.next {
                NextToken::Logits => {
                    BatchOutput::Logits(logits[i * vocab..i * vocab + self.output_vocab].to_vec())
                }
                _ => BatchOutput::Token(ids[i]),
            })
            .collect())
    }

    fn write_sample_settings(&self, settings: &[SampleSettings]) {
        let buffer = &self.buf.sample_settings.buffer;
        self.ctx
            .queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(settings));
    }

    /// The first `rows` rows of logits (at most one per slot), through the buffer kept for
    /// them.
    async fn read_logit_rows(&self, rows: usize) -> Result<Vec<f32>> {
        let t = &self.buf.logits;
        let n_values = rows * self.config.vocab_size;
        let size = (n_values * t.dtype.size()) as u64;
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
        let bytes = self.ctx.map_and_copy(staging).await?;
        Ok(floats_from_bytes(&bytes, t.dtype, n_values))
    }

    /// Runs `tokens` in passes of at most `max_batch`; a pass of one token that wants its
    /// logits is a decode step unless `prompt` says these are prompt tokens.
    #[allow(clippy::too_many_arguments)]
    async fn forward_inner(
        &mut self,
        slot: usize,
        tokens: &[u32],
        start: usize,
        logits: Logits,
        read_logits: bool,
        pick: Pick,
        prompt: bool,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        self.check_span(tokens, start)?;
        self.check_resume(slot, start)?;
        self.filled[slot] = start + tokens.len();
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
            self.upload_inputs(chunk, pos, slot);
            let decode = !prompt && n == 1 && wanted.is_some();
            let pass = if decode {
                ONE_TOKEN
            } else {
                Pass::Sequence { n, logits: wanted }
            };
            let ids = if decode {
                // The one-token plans are built once and kept for every later step.
                self.cached_plan(pass, pick)?;
                self.run(&self.plans[&(pass, pick)], 1, 1).await?
            } else {
                let ops = self.plan(pass, pick)?;
                self.run(&ops, n, rows).await?
            };
            ids_out.extend(ids);
            if read_logits && rows > 0 {
                if rows == 1 {
                    // Sampling reads one row per token: into a buffer kept for it.
                    logits_out.extend(self.read_logit_rows(1).await?);
                } else {
                    let t = &self.buf.logits;
                    let n_values = rows * self.config.vocab_size;
                    let size = (n_values * t.dtype.size()) as u64;
                    let bytes = self.ctx.read_bytes(&t.buffer, 0, size).await?;
                    logits_out.extend(floats_from_bytes(&bytes, t.dtype, n_values));
                }
            }
        }
        Ok((ids_out, logits_out))
    }

    /// Blocking [`Model::forward_logits`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_logits_blocking(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.forward_logits(tokens, start, logits))
    }

    /// Blocking [`Model::forward`] (native only).
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
