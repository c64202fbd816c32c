//! Loading a model: [`ModelLoader`] takes parameters one at a time in any order, from any
//! [`WeightSource`], and allocates the KV cache and activations when it finishes.

use std::collections::HashMap;

use super::graph::{cache_ring, Buffers, Layer, Model};

use super::config::{ModelConfig, Rope};
use super::source::{GgufWeights, WeightSource};
use super::weights::{self, ModelParams, Param, Shape};
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::gpu::{DType, GpuContext, Precision, Tensor};
use crate::kernels::attention::AttentionShape;
use crate::kernels::mask;
use crate::kernels::sample::SampleSettings;
use crate::kernels::weight::GpuWeight;
use crate::quant::WeightFormat;

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

/// The format matrices stored as plain floats (Hugging Face folders, MLC's q0 folders) are
/// quantized to when no format is asked for.
pub const FALLBACK_FORMAT: WeightFormat = WeightFormat::Q4F16;

/// The GGUF tensor with Llama 3's per-pair RoPE frequency divisors.
pub(crate) const ROPE_FACTORS: &str = "rope_freqs.weight";

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

    /// Divides RoPE's frequencies pair by pair (Llama 3 GGUFs' `rope_freqs.weight`).
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
        // GGUFs' per-pair divisors or Phi-3's for this context.
        let rope_factors = rope_factors.or_else(|| {
            config
                .long_rope
                .as_ref()
                .map(|l| l.factors(context).to_vec())
        });
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
            mask: ctx.zeros(&[slots, mask::words(config.vocab_size)], DType::U32)?,
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
    /// Loads a GGUF model onto `ctx`. `progress(done, total)` is called per tensor.
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
}
