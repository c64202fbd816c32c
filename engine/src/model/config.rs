//! The model spec: an architecture as data. [`ModelConfig`] holds what is per model (shapes,
//! embedding scale, tied head, final soft-cap) and a [`LayerSpec`] per layer (biases, Q/K
//! norms, norm placement, activation, attention window, RoPE, attention scale); the one graph
//! in [`super::graph`] reads it. Each architecture's adapter in [`super::arch`] fills it in
//! from GGUF metadata, a Hugging Face `config.json` or an `mlc-chat-config.json`.

use crate::error::{Error, Result};
use serde_json::Value;

use super::arch::{self, Family};
use crate::formats::gguf::GgufData;
use crate::kernels::rope::{Llama3Scaling, RopeMode};

/// How a layer's RoPE frequencies are made: `base^(-2i / head_dim)`, then scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub base: f32,
    pub scaling: Option<RopeScaling>,
}

/// RoPE frequency scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Llama 3's wavelength-dependent scaling.
    Llama3(Llama3Scaling),
    /// Every frequency divided by the factor (position interpolation; Gemma 3's global
    /// layers on the larger models).
    Linear(f32),
}

impl Rope {
    /// The per-pair inverse frequencies for heads of `head_dim`.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        match self.scaling {
            Some(RopeScaling::Llama3(s)) => {
                crate::kernels::rope::inv_freq(head_dim, self.base, Some(s))
            }
            Some(RopeScaling::Linear(factor)) => {
                crate::kernels::rope::inv_freq(head_dim, self.base, None)
                    .into_iter()
                    .map(|f| f / factor)
                    .collect()
            }
            None => crate::kernels::rope::inv_freq(head_dim, self.base, None),
        }
    }
}

/// Phi-3's LongRoPE: per-pair divisors of the RoPE frequencies, one set for contexts up to
/// the length the model was first trained at (`short`) and one past it (`long`), chosen by
/// the context a model is loaded with, as llama.cpp chooses them. (Hugging Face switches
/// per sequence length, which would change keys already in the cache.) Its attention factor
/// scales cos and sin, so scores by its square: the adapter folds that into `attn_scale`.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    pub short: Vec<f32>,
    pub long: Vec<f32>,
    pub original_context: usize,
    /// What cos and sin are multiplied by (already in the layers' `attn_scale`, squared).
    pub attention_factor: f32,
}

impl LongRope {
    /// The divisors for a KV cache of `context` tokens.
    pub fn factors(&self, context: usize) -> &[f32] {
        if context > self.original_context {
            &self.long
        } else {
            &self.short
        }
    }

    /// The attention factor Phi-3's checkpoints use when they give none: for a model
    /// stretched from `original` to `context` tokens, `sqrt(1 + ln(scale) / ln(original))`.
    pub fn default_attention_factor(context: usize, original: usize) -> f32 {
        let scale = context as f64 / original.max(2) as f64;
        if scale <= 1.0 {
            return 1.0;
        }
        (1.0 + scale.ln() / (original as f64).ln()).sqrt() as f32
    }
}

/// The gated activation of the feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) * up` (Llama, Qwen, Phi).
    SwiGlu,
    /// `gelu_tanh(gate) * up` (Gemma).
    GeGlu,
}

/// What one decoder layer does beyond the Llama block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerSpec {
    /// Q, K and V projections have biases (Qwen2).
    pub qkv_bias: bool,
    /// Each Q and K head is RMS-normalized before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// The attention and feed-forward outputs are RMS-normalized before they join the
    /// residual stream ("sandwich" norms: Gemma 2 and 3).
    pub post_norms: bool,
    pub activation: Activation,
    /// Keys a query sees, itself included: a sliding-window layer; `None` sees all.
    pub window: Option<usize>,
    pub rope: Rope,
    /// Attention scores are `q . k * attn_scale` (usually `1 / sqrt(head_dim)`).
    pub attn_scale: f32,
    /// Attention scores capped at `c * tanh(score / c)` (Gemma 2).
    pub attn_softcap: Option<f32>,
}

impl LayerSpec {
    /// A Llama layer: pre-norms, SwiGLU, global attention.
    pub fn llama(rope: Rope, head_dim: usize) -> Self {
        LayerSpec {
            qkv_bias: false,
            qk_norm: false,
            post_norms: false,
            activation: Activation::SwiGlu,
            window: None,
            rope,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            attn_softcap: None,
        }
    }
}

/// Shapes and constants of a model, and its layers' specs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The architecture's adapter: which names and load-time fixes its files need.
    pub family: Family,
    pub n_layers: usize,
    pub dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub rope_mode: RopeMode,
    pub rms_eps: f32,
    /// The model's trained context length.
    pub context_length: usize,
    /// The output head shares the token embedding table.
    pub tied_embeddings: bool,
    /// Embeddings are multiplied by this as they are looked up (Gemma: sqrt(dim)); a tied
    /// head uses the table unscaled.
    pub embed_scale: f32,
    /// Logits capped at `c * tanh(logit / c)` (Gemma 2).
    pub final_softcap: Option<f32>,
    /// Phi-3's short and long RoPE divisors, for every layer.
    pub long_rope: Option<LongRope>,
    pub layers: Vec<LayerSpec>,
}

/// Bounds on sizes read from files: far above any real model, far below what would make
/// an allocation or an index overflow.
pub(crate) const MAX_LAYERS: usize = 1024;
const MAX_WIDTH: usize = 1 << 20;
const MAX_VOCAB: usize = 1 << 24;
const MAX_CONTEXT: usize = 1 << 24;

/// Checks a count read from a file (`value` `what`) is 1 to `max`.
pub(crate) fn check_size(what: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 || value > max {
        return Err(Error::Invalid(format!(
            "model has {value} {what} (expected 1 to {max})"
        )));
    }
    Ok(())
}

impl ModelConfig {
    /// Reads the config of a GGUF model through its architecture's adapter; an architecture
    /// glim has no adapter for is an error naming those it runs.
    pub fn from_gguf(file: &dyn GgufData) -> Result<Self> {
        let config = arch::config_from_gguf(file)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a Hugging Face `config.json` through its architecture's adapter.
    pub fn from_hf_json(json: &Value) -> Result<Self> {
        let config = arch::config_from_hf(json)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the numbers fit together and the kernels' limits. Sizes come from files, so
    /// they are bounded before anything is allocated from them.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        let sizes = [
            ("layers", self.n_layers, MAX_LAYERS),
            ("width", self.dim, MAX_WIDTH),
            ("attention heads", self.n_heads, MAX_WIDTH),
            ("KV heads", self.n_kv_heads, MAX_WIDTH),
            ("feed-forward width", self.ffn_dim, MAX_WIDTH),
            ("vocabulary", self.vocab_size, MAX_VOCAB),
        ];
        for (what, value, max) in sizes {
            check_size(what, value, max)?;
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} heads do not group into {} KV heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim == 0
            || !self.head_dim.is_multiple_of(2)
            || self.head_dim > crate::kernels::attention::MAX_HEAD_DIM
        {
            return bad(format!(
                "head dimension {} unsupported (even, 2 to 256)",
                self.head_dim
            ));
        }
        if self.layers.len() != self.n_layers {
            return bad(format!(
                "{} layer specs for {} layers",
                self.layers.len(),
                self.n_layers
            ));
        }
        if let Some(long_rope) = &self.long_rope {
            let pairs = self.head_dim / 2;
            if long_rope.short.len() != pairs || long_rope.long.len() != pairs {
                return bad(format!(
                    "LongRoPE factors of {} and {} values for {pairs} frequency pairs",
                    long_rope.short.len(),
                    long_rope.long.len()
                ));
            }
            let positive = |f: &[f32]| f.iter().all(|v| v.is_finite() && *v > 0.0);
            if !positive(&long_rope.short) || !positive(&long_rope.long) {
                return bad("LongRoPE factors must be positive".into());
            }
        }
        if self.layers.iter().any(|l| l.window == Some(0)) {
            return bad("an attention window of no keys".into());
        }
        // Numbers a file gives that would make every answer garbage: refused, not run.
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if !(positive(self.rms_eps) && self.rms_eps < 1.0) {
            return bad(format!(
                "RMS norm epsilon {} (expected between 0 and 1)",
                self.rms_eps
            ));
        }
        if !positive(self.embed_scale) || !self.final_softcap.is_none_or(positive) {
            return bad(
                "an embedding scale or logit soft-cap that is not a positive number".into(),
            );
        }
        if self.context_length == 0 || self.context_length > MAX_CONTEXT {
            return bad(format!(
                "a trained context of {} tokens (expected 1 to {MAX_CONTEXT})",
                self.context_length
            ));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            if !(positive(layer.rope.base) && layer.rope.base > 1.0) {
                return bad(format!(
                    "layer {i}: RoPE base {} (expected a finite number above 1)",
                    layer.rope.base
                ));
            }
            if !layer.rope.inv_freq(self.head_dim).into_iter().all(positive) {
                return bad(format!(
                    "layer {i}: RoPE scaling gives frequencies that are not positive numbers"
                ));
            }
            if !positive(layer.attn_scale) || !layer.attn_softcap.is_none_or(positive) {
                return bad(format!(
                    "layer {i}: an attention scale or soft-cap that is not a positive number"
                ));
            }
        }
        // Rows of f16 activations are copied whole; copies move 4-byte units.
        if !self.dim.is_multiple_of(2) {
            return bad(format!("model width {} is odd", self.dim));
        }
        Ok(())
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
