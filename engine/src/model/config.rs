//! The Llama-family model configuration, read from a GGUF file's metadata.

use crate::error::{Error, Result};
use serde_json::Value;

use crate::formats::gguf::GgufFile;
use crate::kernels::rope::{Llama3Scaling, RopeMode};

/// Shapes and constants of a Llama-family model (Llama 2/3, SmolLM, TinyLlama, Mistral
/// without sliding windows).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub rope_base: f32,
    pub rope_mode: RopeMode,
    /// Llama 3 frequency scaling, when the model's config asks for it.
    pub rope_scaling: Option<Llama3Scaling>,
    pub rms_eps: f32,
    /// The model's trained context length.
    pub context_length: usize,
    /// The output head shares the token embedding table.
    pub tied_embeddings: bool,
}

/// Bounds on sizes read from files: far above any real model, far below what would make
/// an allocation or an index overflow.
const MAX_LAYERS: usize = 1024;
const MAX_WIDTH: usize = 1 << 20;
const MAX_VOCAB: usize = 1 << 24;

/// Architectures whose GGUF tensors and metadata follow llama.cpp's `llama` layout.
const LLAMA_LIKE: &[&str] = &["llama"];

impl LlamaConfig {
    /// Reads the config of a GGUF Llama model. Other architectures are an error naming them.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.architecture()?;
        if !LLAMA_LIKE.contains(&arch) {
            return Err(Error::Unsupported(format!(
                "model architecture `{arch}` (glim runs: {})",
                LLAMA_LIKE.join(", ")
            )));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let opt_u32 = |k: &str| {
            file.metadata(&key(k))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
        };
        let opt_f32 = |k: &str| {
            file.metadata(&key(k))
                .and_then(|v| v.as_f64())
                .map(|v| v as f32)
        };
        let n_layers = file.get_u32(&key("block_count"))? as usize;
        let dim = file.get_u32(&key("embedding_length"))? as usize;
        let n_heads = file.get_u32(&key("attention.head_count"))? as usize;
        let n_kv_heads = opt_u32("attention.head_count_kv").unwrap_or(n_heads);
        let ffn_dim = file.get_u32(&key("feed_forward_length"))? as usize;
        if n_heads == 0 || n_kv_heads == 0 || dim == 0 || n_layers == 0 {
            return Err(Error::Invalid(
                "model has zero layers, heads or width".into(),
            ));
        }
        let head_dim = opt_u32("attention.key_length").unwrap_or(dim / n_heads);
        let vocab_size = match opt_u32("vocab_size") {
            Some(v) => v,
            None => file.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        if let Some(kind) = file
            .metadata(&key("rope.scaling.type"))
            .and_then(|v| v.as_str())
        {
            if kind != "none" {
                return Err(Error::Unsupported(format!("rope scaling `{kind}`")));
            }
        }
        if let Some(rotary) = opt_u32("rope.dimension_count") {
            if rotary != head_dim {
                return Err(Error::Unsupported(format!(
                    "rotary embedding over {rotary} of {head_dim} head dimensions"
                )));
            }
        }
        let embeddings = file
            .tensor("token_embd.weight")
            .ok_or_else(|| Error::Invalid("model has no token_embd.weight tensor".into()))?;
        let config = Self {
            n_layers,
            dim,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            vocab_size: vocab_size.max(embeddings.n_rows() as usize),
            rope_base: opt_f32("rope.freq_base").unwrap_or(10_000.0),
            // llama.cpp's converter permutes Q/K rows so rotated pairs are adjacent;
            // `GgufWeights` puts them back in Hugging Face order.
            rope_mode: RopeMode::Halves,
            rope_scaling: None, // GGUF files carry it as the rope_freqs.weight tensor

            rms_eps: opt_f32("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            context_length: opt_u32("context_length").unwrap_or(2048),
            tied_embeddings: file.tensor("output.weight").is_none(),
        };
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
            if value == 0 || value > max {
                return bad(format!("model has {value} {what} (expected 1 to {max})"));
            }
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

/// Architectures whose Hugging Face checkpoints glim's Llama graph runs unchanged.
const HF_LLAMA_LIKE: &[&str] = &["llama", "mistral"];

impl LlamaConfig {
    /// Reads the Llama-family config of a Hugging Face `config.json`.
    pub fn from_hf_json(json: &Value) -> Result<Self> {
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        if !HF_LLAMA_LIKE.contains(&model_type) {
            return Err(Error::Unsupported(format!(
                "model architecture `{model_type}` (glim runs: {})",
                HF_LLAMA_LIKE.join(", ")
            )));
        }
        if json.get("sliding_window").is_some_and(|v| !v.is_null()) && model_type == "mistral" {
            return Err(Error::Unsupported(
                "Mistral with a sliding attention window".into(),
            ));
        }
        let int = |k: &str| -> Result<usize> {
            json.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| Error::Invalid(format!("config.json has no integer `{k}`")))
        };
        let opt_int = |k: &str| json.get(k).and_then(Value::as_u64).map(|v| v as usize);
        let float =
            |k: &str, default: f64| json.get(k).and_then(Value::as_f64).unwrap_or(default) as f32;
        let n_heads = int("num_attention_heads")?;
        let dim = int("hidden_size")?;
        if n_heads == 0 {
            return Err(Error::Invalid(
                "config.json has zero attention heads".into(),
            ));
        }
        let rope_scaling = match json.get("rope_scaling") {
            Some(s) if !s.is_null() => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if kind != "llama3" {
                    return Err(Error::Unsupported(format!("rope scaling `{kind}`")));
                }
                let f = |k: &str| s.get(k).and_then(Value::as_f64).map(|v| v as f32);
                Some(Llama3Scaling {
                    factor: f("factor").unwrap_or(8.0),
                    low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
                    high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
                    original_context: f("original_max_position_embeddings").unwrap_or(8192.0),
                })
            }
            _ => None,
        };
        let config = LlamaConfig {
            n_layers: int("num_hidden_layers")?,
            dim,
            n_heads,
            n_kv_heads: opt_int("num_key_value_heads").unwrap_or(n_heads),
            head_dim: opt_int("head_dim").unwrap_or(dim / n_heads),
            ffn_dim: int("intermediate_size")?,
            vocab_size: int("vocab_size")?,
            rope_base: float("rope_theta", 10_000.0),
            rope_mode: RopeMode::Halves,
            rope_scaling,
            rms_eps: float("rms_norm_eps", 1e-5),
            context_length: opt_int("max_position_embeddings").unwrap_or(2048),
            tied_embeddings: json
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }
}
