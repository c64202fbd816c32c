//! Hugging Face model folders: `config.json`, `tokenizer.json` (+ `tokenizer_config.json`)
//! and one or more `*.safetensors` files holding f32, f16 or bf16 weights.
//!
//! Weights keep HF's layout (`[out_features, in_features]`, Q/K rows unpermuted), so these
//! models rotate with [`RopeMode::Halves`], unlike GGUF files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde_json::Value;

use super::config::LlamaConfig;
use super::source::{check_shape, WeightSource};
use crate::error::{Error, Result};
use crate::kernels::rope::{Llama3Scaling, RopeMode};

/// Where one tensor's bytes are.
struct Entry {
    file: usize,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    range: std::ops::Range<usize>,
}

/// An opened HF folder: its config and memory-mapped weight files.
pub struct HfModel {
    pub dir: PathBuf,
    pub config: LlamaConfig,
    /// `config.json` as parsed, for callers that need more of it.
    pub config_json: Value,
    files: Vec<memmap2::Mmap>,
    index: HashMap<String, Entry>,
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
        let config = config_from_json(&config_json)?;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::Invalid(format!("cannot list {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::Invalid(format!(
                "{} holds no .safetensors files",
                dir.display()
            )));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in &paths {
            let file = std::fs::File::open(path)
                .map_err(|e| Error::Invalid(format!("cannot open {}: {e}", path.display())))?;
            // SAFETY: read-only private map; like any mmap loader, glim assumes the file is
            // not truncated while the model loads.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| Error::Invalid(format!("cannot map {}: {e}", path.display())))?;
            let (header_len, metadata) =
                safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
                    Error::Invalid(format!(
                        "{} is not a valid safetensors file: {e}",
                        path.display()
                    ))
                })?;
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                let (begin, end) = info.data_offsets;
                let range = data_start + begin..data_start + end;
                if range.end > map.len() {
                    return Err(Error::Invalid(format!(
                        "{}: tensor {name} runs past the end of the file",
                        path.display()
                    )));
                }
                let entry = Entry {
                    file: files.len(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range,
                };
                index.insert(name, entry);
            }
            files.push(map);
        }
        let mut config = config;
        // Some checkpoints tie embeddings without saying so: no lm_head means tied.
        if !index.contains_key("lm_head.weight") {
            config.tied_embeddings = true;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            config_json,
            files,
            index,
        })
    }
}

impl WeightSource for HfModel {
    fn has(&self, name: &str) -> bool {
        hf_name(name).is_some_and(|n| self.index.contains_key(&n))
    }

    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let hf =
            hf_name(name).ok_or_else(|| Error::Invalid(format!("no HF name for tensor {name}")))?;
        let entry = self
            .index
            .get(&hf)
            .ok_or_else(|| Error::Invalid(format!("model has no tensor {hf}")))?;
        check_shape(&hf, &entry.shape, shape)?;
        let bytes = &self.files[entry.file][entry.range.clone()];
        let n: usize = entry.shape.iter().product();
        let width = match entry.dtype {
            safetensors::Dtype::F32 => 4,
            safetensors::Dtype::F16 | safetensors::Dtype::BF16 => 2,
            other => {
                return Err(Error::Unsupported(format!(
                    "tensor {hf} has dtype {other:?} (glim reads f32, f16, bf16)"
                )))
            }
        };
        if bytes.len() != n * width {
            return Err(Error::Invalid(format!(
                "tensor {hf} holds {} bytes, its shape needs {}",
                bytes.len(),
                n * width
            )));
        }
        let values = match entry.dtype {
            safetensors::Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            safetensors::Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        };
        Ok(values)
    }
}
