//! Architecture adapters: one small file per family turns its config (GGUF metadata, a
//! Hugging Face `config.json`) into a [`ModelConfig`] of per-layer specs, names its tensors
//! in each source, and says which load-time fixes its files need. Everything they share —
//! the keys every GGUF and `config.json` spell the same way — is read here once.

mod gemma3;
mod llama;
mod phi3;
mod qwen2;
mod qwen3;

use serde_json::Value;

use super::config::{check_size, LayerSpec, ModelConfig, Rope, MAX_LAYERS};
use crate::error::{Error, Result};
use crate::formats::gguf::{GgufData, GgufHeader};
use crate::kernels::rope::RopeMode;

/// The architectures glim has an adapter for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Llama 2/3, SmolLM, TinyLlama, Mistral without sliding windows.
    Llama,
    /// Qwen2 and Qwen2.5.
    Qwen2,
    /// Qwen3 (dense).
    Qwen3,
    /// Gemma 3 (text).
    Gemma3,
    /// Phi-3 and Phi-3.5 (mini).
    Phi3,
}

/// GGUF `general.architecture` names and Hugging Face `model_type`s, per family.
const NAMES: &[(Family, &str, &[&str])] = &[
    (Family::Llama, "llama", &["llama", "mistral"]),
    (Family::Qwen2, "qwen2", &["qwen2"]),
    (Family::Qwen3, "qwen3", &["qwen3"]),
    (Family::Gemma3, "gemma3", &["gemma3_text"]),
    (Family::Phi3, "phi3", &["phi3"]),
];

impl Family {
    /// Every family.
    pub const ALL: [Family; 5] = [
        Family::Llama,
        Family::Qwen2,
        Family::Qwen3,
        Family::Gemma3,
        Family::Phi3,
    ];

    /// The GGUF `general.architecture` name.
    pub fn gguf_name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(f, _, _)| *f == self)
            .map_or("", |(_, name, _)| name)
    }

    /// What glim runs, for errors about what it does not.
    fn supported() -> String {
        NAMES
            .iter()
            .map(|(_, gguf, _)| *gguf)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn unsupported(name: &str) -> Error {
        Error::Unsupported(format!(
            "model architecture `{name}` (glim runs: {})",
            Family::supported()
        ))
    }

    /// Whether llama.cpp's converter permuted this family's Q/K rows in GGUF files (for
    /// interleaved RoPE); glim puts them back in Hugging Face order.
    pub fn gguf_permutes_qk(self) -> bool {
        self == Family::Llama
    }

    /// The name of a tensor in this family's GGUFs, for glim's name: Phi-3's fused gate and
    /// up projections are llama.cpp's `ffn_up` (twice the rows).
    pub fn gguf_tensor_name(self, name: &str) -> std::borrow::Cow<'_, str> {
        match (self, name.strip_suffix(".ffn_gate_up.weight")) {
            (Family::Phi3, Some(layer)) => format!("{layer}.ffn_up.weight").into(),
            _ => name.into(),
        }
    }

    /// The Hugging Face name of a tensor glim knows by its llama.cpp name.
    pub fn hf_name(self, name: &str) -> Option<String> {
        let fixed = match name {
            "token_embd.weight" => Some("model.embed_tokens.weight"),
            "output.weight" => Some("lm_head.weight"),
            "output_norm.weight" => Some("model.norm.weight"),
            _ => None,
        };
        if let Some(f) = fixed {
            return Some(f.to_string());
        }
        let (layer, part) = name.strip_prefix("blk.")?.split_once('.')?;
        let own = match self {
            Family::Gemma3 => gemma3::hf_layer_name(part),
            Family::Llama | Family::Qwen2 | Family::Qwen3 | Family::Phi3 => match part {
                "ffn_norm.weight" => Some("post_attention_layernorm.weight"),
                _ => None,
            },
        };
        let hf = own.or(match part {
            "attn_qkv.weight" => Some("self_attn.qkv_proj.weight"),
            "ffn_gate_up.weight" => Some("mlp.gate_up_proj.weight"),
            "attn_q.weight" => Some("self_attn.q_proj.weight"),
            "attn_k.weight" => Some("self_attn.k_proj.weight"),
            "attn_v.weight" => Some("self_attn.v_proj.weight"),
            "attn_q.bias" => Some("self_attn.q_proj.bias"),
            "attn_k.bias" => Some("self_attn.k_proj.bias"),
            "attn_v.bias" => Some("self_attn.v_proj.bias"),
            "attn_q_norm.weight" => Some("self_attn.q_norm.weight"),
            "attn_k_norm.weight" => Some("self_attn.k_norm.weight"),
            "attn_output.weight" => Some("self_attn.o_proj.weight"),
            "ffn_gate.weight" => Some("mlp.gate_proj.weight"),
            "ffn_up.weight" => Some("mlp.up_proj.weight"),
            "ffn_down.weight" => Some("mlp.down_proj.weight"),
            "attn_norm.weight" => Some("input_layernorm.weight"),
            _ => None,
        })?;
        Some(format!("model.layers.{layer}.{hf}"))
    }

    /// What Hugging Face checkpoints store for a norm whose model multiplies by `1 + w`
    /// (Gemma): glim runs `x * w` and adds 1 at load (llama.cpp's GGUFs hold `w + 1`).
    pub fn hf_norm_offset(self) -> f32 {
        match self {
            Family::Gemma3 => 1.0,
            Family::Llama | Family::Qwen2 | Family::Qwen3 | Family::Phi3 => 0.0,
        }
    }
}

/// What every source says the same way, before an adapter adds its family's part.
struct Base {
    family: Family,
    n_layers: usize,
    dim: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    ffn_dim: usize,
    vocab_size: usize,
    rms_eps: f32,
    context_length: usize,
    tied_embeddings: bool,
    rope_base: f32,
}

impl Base {
    /// The Llama spec of these numbers, every layer alike, for the adapter to adjust. The
    /// layer count is bounded first: a file may claim billions of layers, and a spec is
    /// made per layer.
    fn llama(self) -> Result<ModelConfig> {
        check_size("layers", self.n_layers, MAX_LAYERS)?;
        let rope = Rope {
            base: self.rope_base,
            scaling: None,
        };
        Ok(ModelConfig {
            family: self.family,
            n_layers: self.n_layers,
            dim: self.dim,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            ffn_dim: self.ffn_dim,
            vocab_size: self.vocab_size,
            // Hugging Face order: `GgufWeights` un-permutes the families llama.cpp permuted.
            rope_mode: RopeMode::Halves,
            rms_eps: self.rms_eps,
            context_length: self.context_length,
            tied_embeddings: self.tied_embeddings,
            embed_scale: 1.0,
            final_softcap: None,
            long_rope: None,
            layers: vec![LayerSpec::llama(rope, self.head_dim); self.n_layers],
        })
    }
}

/// A GGUF file's `{arch}.*` metadata, and its data for the small tensors a config holds
/// (Phi-3's LongRoPE divisors).
pub(crate) struct GgufKeys<'a> {
    file: &'a GgufHeader,
    data: &'a dyn GgufData,
    arch: &'a str,
}

impl GgufKeys<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    pub fn usize(&self, k: &str) -> Result<usize> {
        Ok(self.file.get_u32(&self.key(k))? as usize)
    }

    pub fn opt_usize(&self, k: &str) -> Option<usize> {
        self.file
            .metadata(&self.key(k))
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
    }

    pub fn opt_f32(&self, k: &str) -> Option<f32> {
        self.file
            .metadata(&self.key(k))
            .and_then(|v| v.as_f64())
            .map(|v| v as f32)
    }

    pub fn opt_str(&self, k: &str) -> Option<&str> {
        self.file.metadata(&self.key(k)).and_then(|v| v.as_str())
    }
}

/// The GGUF tensors a config holds (read by [`config_from_gguf`] with the metadata).
pub(crate) const GGUF_CONFIG_TENSORS: [&str; 2] = [phi3::SHORT, phi3::LONG];

/// Reads a GGUF model's config: the keys every architecture shares, then its adapter's.
pub fn config_from_gguf(data: &dyn GgufData) -> Result<ModelConfig> {
    let file = data.header();
    let arch = file.architecture()?;
    let family = NAMES
        .iter()
        .find(|(_, gguf, _)| *gguf == arch)
        .map(|(f, _, _)| *f)
        .ok_or_else(|| Family::unsupported(arch))?;
    let keys = GgufKeys { file, data, arch };
    let n_layers = keys.usize("block_count")?;
    let dim = keys.usize("embedding_length")?;
    let n_heads = keys.usize("attention.head_count")?;
    let n_kv_heads = keys.opt_usize("attention.head_count_kv").unwrap_or(n_heads);
    if n_heads == 0 || n_kv_heads == 0 || dim == 0 || n_layers == 0 {
        return Err(Error::Invalid(
            "model has zero layers, heads or width".into(),
        ));
    }
    let head_dim = keys
        .opt_usize("attention.key_length")
        .unwrap_or(dim / n_heads);
    let vocab_size = match keys.opt_usize("vocab_size") {
        Some(v) => v,
        None => file.get_str_array("tokenizer.ggml.tokens")?.len(),
    };
    if let Some(rotary) = keys.opt_usize("rope.dimension_count") {
        if rotary != head_dim {
            return Err(Error::Unsupported(format!(
                "rotary embedding over {rotary} of {head_dim} head dimensions"
            )));
        }
    }
    let embeddings = file
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::Invalid("model has no token_embd.weight tensor".into()))?;
    let mut config = Base {
        family,
        n_layers,
        dim,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn_dim: keys.usize("feed_forward_length")?,
        vocab_size: vocab_size.max(embeddings.n_rows() as usize),
        rms_eps: keys
            .opt_f32("attention.layer_norm_rms_epsilon")
            .unwrap_or(1e-5),
        context_length: keys.opt_usize("context_length").unwrap_or(2048),
        tied_embeddings: file.tensor("output.weight").is_none(),
        rope_base: keys.opt_f32("rope.freq_base").unwrap_or(10_000.0),
    }
    .llama()?;
    match family {
        Family::Llama => llama::adapt_gguf(&keys, &mut config)?,
        Family::Qwen2 => qwen2::adapt_gguf(&keys, &mut config)?,
        Family::Qwen3 => qwen3::adapt_gguf(&keys, &mut config)?,
        Family::Gemma3 => gemma3::adapt_gguf(&keys, &mut config)?,
        Family::Phi3 => phi3::adapt_gguf(&keys, &mut config)?,
    }
    Ok(config)
}

/// A `config.json`'s keys.
pub(crate) struct HfKeys<'a>(&'a Value);

impl HfKeys<'_> {
    pub fn usize(&self, k: &str) -> Result<usize> {
        self.opt_usize(k)
            .ok_or_else(|| Error::Invalid(format!("config.json has no integer `{k}`")))
    }

    pub fn opt_usize(&self, k: &str) -> Option<usize> {
        self.0.get(k).and_then(Value::as_u64).map(|v| v as usize)
    }

    pub fn opt_f32(&self, k: &str) -> Option<f32> {
        self.0.get(k).and_then(Value::as_f64).map(|v| v as f32)
    }

    /// The value at `k`, absent when missing or null.
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
}

/// Reads a Hugging Face `config.json`: the keys every architecture shares, then its
/// adapter's.
pub fn config_from_hf(json: &Value) -> Result<ModelConfig> {
    let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
    let family = NAMES
        .iter()
        .find(|(_, _, hf)| hf.contains(&model_type))
        .map(|(f, _, _)| *f)
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "model architecture `{model_type}` (glim runs: {})",
                NAMES
                    .iter()
                    .flat_map(|(_, _, hf)| hf.iter().copied())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let keys = HfKeys(json);
    let n_heads = keys.usize("num_attention_heads")?;
    let dim = keys.usize("hidden_size")?;
    if n_heads == 0 {
        return Err(Error::Invalid(
            "config.json has zero attention heads".into(),
        ));
    }
    let head_dim = keys.opt_usize("head_dim").unwrap_or(dim / n_heads);
    let n_layers = keys.usize("num_hidden_layers")?;
    let mut config = Base {
        family,
        n_layers,
        dim,
        n_heads,
        n_kv_heads: keys.opt_usize("num_key_value_heads").unwrap_or(n_heads),
        head_dim,
        ffn_dim: keys.usize("intermediate_size")?,
        vocab_size: keys.usize("vocab_size")?,
        rms_eps: keys.opt_f32("rms_norm_eps").unwrap_or(1e-5),
        context_length: keys.opt_usize("max_position_embeddings").unwrap_or(2048),
        tied_embeddings: json
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        rope_base: keys.opt_f32("rope_theta").unwrap_or(10_000.0),
    }
    .llama()?;
    match family {
        Family::Llama => llama::adapt_hf(&keys, model_type, &mut config)?,
        Family::Qwen2 => qwen2::adapt_hf(&keys, &mut config)?,
        Family::Qwen3 => qwen3::adapt_hf(&keys, &mut config)?,
        Family::Gemma3 => gemma3::adapt_hf(&keys, &mut config)?,
        Family::Phi3 => phi3::adapt_hf(&keys, &mut config)?,
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ggml::GgmlType;
    use crate::formats::gguf::GgufFile;
    use crate::formats::gguf_writer::{GgufWriter, TensorSpec};

    /// A file claiming billions of layers is an error naming the count, not an allocation
    /// of a spec per claimed layer.
    #[test]
    fn absurd_layer_counts_are_errors() {
        let metadata = [
            (
                "general.architecture",
                crate::formats::gguf::Value::String("llama".into()),
            ),
            (
                "llama.block_count",
                crate::formats::gguf::Value::U32(4_000_000_000),
            ),
            (
                "llama.embedding_length",
                crate::formats::gguf::Value::U32(8),
            ),
            (
                "llama.attention.head_count",
                crate::formats::gguf::Value::U32(2),
            ),
            (
                "llama.feed_forward_length",
                crate::formats::gguf::Value::U32(16),
            ),
            ("llama.vocab_size", crate::formats::gguf::Value::U32(4)),
        ];
        let embed = TensorSpec {
            name: "token_embd.weight".into(),
            dims: vec![8, 4],
            ggml_type: GgmlType::F32,
        };
        let mut writer = GgufWriter::new(Vec::new(), &metadata, &[embed]).unwrap();
        writer.write_tensor(&[0u8; 8 * 4 * 4]).unwrap();
        let file = GgufFile::from_bytes(writer.finish().unwrap()).unwrap();
        let err = config_from_gguf(&file).unwrap_err().to_string();
        assert!(err.contains("4000000000 layers"), "{err}");

        let json = serde_json::json!({
            "model_type": "qwen2", "num_hidden_layers": 1_000_000_000u64, "hidden_size": 8,
            "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 4,
        });
        let err = config_from_hf(&json).unwrap_err().to_string();
        assert!(err.contains("1000000000 layers"), "{err}");
    }
}
