//! Hugging Face model folders: `config.json`, `tokenizer.json` (+ `tokenizer_config.json`)
//! and one or more `*.safetensors` files holding f32, f16 or bf16 weights.
//!
//! Weights keep HF's layout (`[out_features, in_features]`, Q/K rows unpermuted), so these
//! models rotate with [`RopeMode::Halves`], unlike GGUF files.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::LlamaConfig;
use super::source::{check_shape, WeightSource};
use crate::error::{Error, Result};
use crate::formats::safetensors::SafetensorsFiles;
use crate::kernels::rope::{Llama3Scaling, RopeMode};

/// An opened HF folder: its config and memory-mapped weight files.
pub struct HfModel {
    pub dir: PathBuf,
    pub config: LlamaConfig,
    /// `config.json` as parsed, for callers that need more of it.
    pub config_json: Value,
    files: SafetensorsFiles,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{} is not valid JSON: {e}", path.display())))
}

/// Architectures whose HF checkpoints glim's Llama graph runs unchanged.
const LLAMA_LIKE: &[&str] = &["llama", "mistral"];

/// Reads the Llama-family config from `config.json`.
pub fn config_from_json(json: &Value) -> Result<LlamaConfig> {
    let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
    if !LLAMA_LIKE.contains(&model_type) {
        return Err(Error::Unsupported(format!(
            "model architecture `{model_type}` (glim runs: {})",
            LLAMA_LIKE.join(", ")
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

/// The HF name of a tensor glim knows by its llama.cpp name.
fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output.weight" => Some("lm_head.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let hf = match part {
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

impl HfModel {
    /// Opens a folder, checking every safetensors header against its file.
    pub fn open(dir: &Path) -> Result<Self> {
        let config_json = read_json(&dir.join("config.json"))?;
        let mut config = config_from_json(&config_json)?;
        let files = SafetensorsFiles::open_dir(dir)?;
        // Some checkpoints tie embeddings without saying so: no lm_head means tied.
        if !files.contains("lm_head.weight") {
            config.tied_embeddings = true;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            config_json,
            files,
        })
    }
}

impl WeightSource for HfModel {
    fn has(&self, name: &str) -> bool {
        hf_name(name).is_some_and(|n| self.files.contains(&n))
    }

    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let hf =
            hf_name(name).ok_or_else(|| Error::Invalid(format!("no HF name for tensor {name}")))?;
        let found = self
            .files
            .shape(&hf)
            .ok_or_else(|| Error::Invalid(format!("model has no tensor {hf}")))?;
        check_shape(&hf, found, shape)?;
        self.files.tensor_f32(&hf)
    }
}
