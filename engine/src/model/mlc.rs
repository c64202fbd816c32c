//! MLC-LLM model folders as models: `mlc-chat-config.json` to a [`LlamaConfig`], packed
//! tensors under glim's names ([`MlcModel`]), and writing a folder from any source
//! ([`write_folder`], behind `glim quantize`). The bytes on disk are `formats::mlc`'s.
//!
//! Names: MLC's Llama names its parameters as Hugging Face does, with fused matrices
//! (`model.layers.N.self_attn.qkv_proj`, `mlp.gate_up_proj`); a quantized matrix is
//! `<base>.q_weight` (u32 codes) plus `<base>.q_scale`, an unquantized one `<base>.weight`.

use std::path::{Path, PathBuf};

use half::f16;
use serde_json::{json, Value};

use super::config::LlamaConfig;
use super::source::{check_shape, WeightSource};
use super::weights::{self, LlamaParams, Shape};
use crate::error::{Error, Result};
use crate::formats::mlc::{DType, TensorRecord};
#[cfg(not(target_arch = "wasm32"))]
use crate::formats::mlc::{MlcFolder, TensorCacheWriter};
use crate::quant::{PackedWeight, QuantOptions, ScaleType, WeightFormat};
use crate::text::{ChatTemplate, ConvTemplate, Tokenizer};

/// MLC's quantization schemes glim reads (and, but for the `q0` ones, writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlcQuant {
    /// 4-bit codes, f16 scales, f16 model.
    Q4F16,
    /// 4-bit codes, f32 scales stored as bf16, f32 model (glim runs it with f16 scales,
    /// exact for every scale above 2^-14).
    Q4F32,
    /// 3-bit codes, f16 scales, f16 model.
    Q3F16,
    /// Unquantized f16.
    Q0F16,
    /// Unquantized f32 stored as bf16.
    Q0F32,
}

impl MlcQuant {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "q4f16_1" => Self::Q4F16,
            "q4f32_1" => Self::Q4F32,
            "q3f16_1" => Self::Q3F16,
            "q0f16" => Self::Q0F16,
            "q0f32" => Self::Q0F32,
            other => return Err(Error::Unsupported(format!(
                "MLC quantization `{other}` (glim reads q4f16_1, q4f32_1, q3f16_1, q0f16, q0f32)"
            ))),
        })
    }

    /// MLC's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4F16 => "q4f16_1",
            Self::Q4F32 => "q4f32_1",
            Self::Q3F16 => "q3f16_1",
            Self::Q0F16 => "q0f16",
            Self::Q0F32 => "q0f32",
        }
    }

    /// The GPU format its matrices are packed in; `None` for unquantized folders, whose
    /// weights are quantized at load like a GGUF's.
    pub fn packed_format(self) -> Option<WeightFormat> {
        match self {
            Self::Q4F16 | Self::Q4F32 => Some(WeightFormat::Q4F16),
            Self::Q3F16 => Some(WeightFormat::Q3F16),
            Self::Q0F16 | Self::Q0F32 => None,
        }
    }

    /// Whether the model dtype is f32 (floats stored as bf16 on disk).
    fn f32_model(self) -> bool {
        matches!(self, Self::Q4F32 | Self::Q0F32)
    }
}

/// The MLC base name of a glim parameter name, and whether it is a matrix.
fn mlc_name(name: &str) -> Option<(String, bool)> {
    let fixed = match name {
        "token_embd.weight" => Some(("model.embed_tokens", true)),
        "output.weight" => Some(("lm_head", true)),
        "output_norm.weight" => Some(("model.norm.weight", false)),
        _ => None,
    };
    if let Some((n, m)) = fixed {
        return Some((n.to_string(), m));
    }
    let (layer, part) = name.strip_prefix("blk.")?.split_once('.')?;
    let (mlc, matrix) = match part {
        "attn_qkv.weight" => ("self_attn.qkv_proj", true),
        "attn_output.weight" => ("self_attn.o_proj", true),
        "ffn_gate_up.weight" => ("mlp.gate_up_proj", true),
        "ffn_down.weight" => ("mlp.down_proj", true),
        "attn_norm.weight" => ("input_layernorm.weight", false),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", false),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{mlc}"), matrix))
}

/// Reads the Llama-family config of an `mlc-chat-config.json`, and its quantization.
pub fn config_from_chat_config(chat: &Value) -> Result<(LlamaConfig, MlcQuant)> {
    let quant = chat
        .get("quantization")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Invalid("mlc-chat-config.json has no `quantization`".into()))?;
    let quant = MlcQuant::parse(quant)?;
    let model = chat
        .get("model_config")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            Error::Invalid("mlc-chat-config.json has no `model_config` object".into())
        })?;
    // MLC's model_config is Hugging Face's config.json with a few keys renamed: map it back
    // and let one reader check it.
    let mut hf = model.clone();
    let model_type = chat.get("model_type").cloned().unwrap_or(Value::Null);
    hf.insert("model_type".into(), model_type);
    if let Some(base) = model.get("position_embedding_base") {
        hf.insert("rope_theta".into(), base.clone());
    }
    let window = model
        .get("context_window_size")
        .or_else(|| chat.get("context_window_size"));
    if let Some(w) = window {
        hf.insert("max_position_embeddings".into(), w.clone());
    }
    if let Some(sliding) = chat.get("sliding_window_size").and_then(Value::as_i64) {
        if sliding > 0 {
            hf.insert("sliding_window".into(), sliding.into());
        }
    }
    let config = LlamaConfig::from_hf_json(&Value::Object(hf)).map_err(|e| match e {
        Error::Invalid(m) => Error::Invalid(m.replace("config.json", "mlc-chat-config.json")),
        other => other,
    })?;
    Ok((config, quant))
}

/// The `eos_token_id` of an `mlc-chat-config.json` (a number or a list) and the
/// conv_template's `stop_token_ids`: every id that ends generation.
pub fn stop_ids(chat: &Value) -> Vec<u32> {
    let ids = |v: Option<&Value>| -> Vec<u32> {
        match v {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|x| x.as_u64().map(|x| x as u32))
                .collect(),
            Some(v) => v.as_u64().map(|x| x as u32).into_iter().collect(),
            None => Vec::new(),
        }
    };
    let mut all = ids(chat.get("eos_token_id"));
    all.extend(ids(chat.pointer("/conv_template/stop_token_ids")));
    all.sort_unstable();
    all.dedup();
    all
}

/// Decodes one packed matrix from its two tensors.
fn packed_from_records(
    format: WeightFormat,
    (rows, cols): (usize, usize),
    (codes_rec, codes): (&TensorRecord, &[u8]),
    (scales_rec, scales): (&TensorRecord, &[u8]),
) -> Result<PackedWeight> {
    let words = format.words_per_row(cols);
    let groups = format.scales_per_row(cols);
    if codes_rec.dtype != DType::U32 {
        return Err(Error::Invalid(format!(
            "{} is {}, expected uint32",
            codes_rec.name,
            codes_rec.dtype.name()
        )));
    }
    check_shape(&codes_rec.name, &codes_rec.shape, &[rows, words])?;
    check_shape(&scales_rec.name, &scales_rec.shape, &[rows, groups])?;
    let codes = codes_rec.to_u32(codes)?;
    let scales = scales_rec
        .to_f32(scales)?
        .into_iter()
        .map(|s| {
            let h = f16::from_f32(s);
            if h.is_finite() {
                Ok(h)
            } else {
                Err(Error::Invalid(format!(
                    "{} holds a scale of {s}, which f16 cannot hold",
                    scales_rec.name
                )))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PackedWeight {
        format,
        rows,
        cols,
        codes,
        scales,
    })
}

/// An MLC model folder, opened: its config and lazily mapped shards.
#[cfg(not(target_arch = "wasm32"))]
pub struct MlcModel {
    pub folder: MlcFolder,
    pub config: LlamaConfig,
    pub quant: MlcQuant,
    /// `mlc-chat-config.json` as parsed.
    pub chat_config: Value,
}

#[cfg(not(target_arch = "wasm32"))]
impl MlcModel {
    /// Opens a folder: its shard index and `mlc-chat-config.json`, checked against each
    /// other. Shards are read (and their md5 checked) when their tensors are first needed.
    pub fn open(dir: &Path) -> Result<Self> {
        let folder = MlcFolder::open(dir)?;
        let chat_config = folder.read_json("mlc-chat-config.json")?;
        let (mut config, quant) = config_from_chat_config(&chat_config)?;
        let head = if quant.packed_format().is_some() {
            "lm_head.q_weight"
        } else {
            "lm_head.weight"
        };
        config.tied_embeddings = folder.index.get(head).is_none();
        Ok(Self {
            folder,
            config,
            quant,
            chat_config,
        })
    }

    fn record(&self, name: &str) -> Result<(&TensorRecord, &[u8])> {
        Ok((self.folder.record(name)?, self.folder.tensor_bytes(name)?))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl WeightSource for MlcModel {
    fn has(&self, name: &str) -> bool {
        mlc_name(name).is_some_and(|(base, matrix)| {
            let stored = match (matrix, self.quant.packed_format()) {
                (true, Some(_)) => format!("{base}.q_weight"),
                (true, None) => format!("{base}.weight"),
                (false, _) => base,
            };
            self.folder.index.get(&stored).is_some()
        })
    }

    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (base, matrix) = mlc_name(name)
            .ok_or_else(|| Error::Invalid(format!("MLC folders have no tensor for {name}")))?;
        if matrix && self.quant.packed_format().is_some() {
            return Err(Error::Invalid(format!(
                "{base} is quantized in this folder; it is read packed"
            )));
        }
        let stored = if matrix {
            format!("{base}.weight")
        } else {
            base
        };
        let (record, bytes) = self.record(&stored)?;
        check_shape(&stored, &record.shape, shape)?;
        record.to_f32(bytes)
    }

    fn packed(&self, name: &str, rows: usize, cols: usize) -> Result<Option<PackedWeight>> {
        let (Some(format), Some((base, true))) = (self.quant.packed_format(), mlc_name(name))
        else {
            return Ok(None);
        };
        let codes = self.record(&format!("{base}.q_weight"))?;
        let scales = self.record(&format!("{base}.q_scale"))?;
        packed_from_records(format, (rows, cols), codes, scales).map(Some)
    }

    fn packed_format(&self) -> Option<WeightFormat> {
        self.quant.packed_format()
    }
}

/// What [`write_folder`] writes from.
pub struct FolderSource<'a> {
    pub weights: &'a dyn WeightSource,
    pub config: &'a LlamaConfig,
    pub tokenizer: &'a Tokenizer,
    pub template: &'a ChatTemplate,
}

/// What [`write_folder`] wrote.
#[derive(Debug)]
pub struct WriteReport {
    /// Bytes of tensors written.
    pub tensor_bytes: u64,
    pub shards: usize,
    /// Things the folder holds that MLC's own runtime may not read as glim does.
    pub warnings: Vec<String>,
}

/// The `mlc-chat-config.json` glim writes.
fn chat_config_json(
    src: &FolderSource,
    quant: MlcQuant,
    conv: &ConvTemplate,
    tokenizer_json: &str,
) -> Value {
    let c = src.config;
    let context = c.context_length;
    let prefill_chunk = context.min(8192);
    let rope_scaling = c.rope_scaling.map(|s| {
        json!({
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_context,
        })
    });
    // How token texts map to bytes, in the terms of MLC's tokenizer_info.
    let parsed: Value = serde_json::from_str(tokenizer_json).unwrap_or(Value::Null);
    let decoder = parsed
        .get("decoder")
        .map(Value::to_string)
        .unwrap_or_default();
    let byte_level = decoder.contains("\"ByteLevel\"");
    let normalizer = parsed
        .get("normalizer")
        .map(Value::to_string)
        .unwrap_or_default();
    let t = src.tokenizer;
    let eos: Vec<u32> = t.end_of_generation().to_vec();
    json!({
        "version": "0.1.0",
        "model_type": "llama",
        "quantization": quant.name(),
        "model_config": {
            "hidden_size": c.dim,
            "intermediate_size": c.ffn_dim,
            "num_attention_heads": c.n_heads,
            "num_hidden_layers": c.n_layers,
            "rms_norm_eps": c.rms_eps,
            "vocab_size": c.vocab_size,
            "tie_word_embeddings": c.tied_embeddings,
            "position_embedding_base": c.rope_base,
            "rope_scaling": rope_scaling,
            "context_window_size": context,
            "prefill_chunk_size": prefill_chunk,
            "num_key_value_heads": c.n_kv_heads,
            "head_dim": c.head_dim,
            "tensor_parallel_shards": 1,
            "pipeline_parallel_stages": 1,
            "max_batch_size": 1,
        },
        "vocab_size": c.vocab_size,
        "context_window_size": context,
        "sliding_window_size": -1,
        "prefill_chunk_size": prefill_chunk,
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "temperature": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "top_p": 1.0,
        "tokenizer_files": ["tokenizer.json", "tokenizer_config.json"],
        "tokenizer_info": {
            "token_postproc_method": if byte_level { "byte_level" } else { "byte_fallback" },
            "prepend_space_in_encode": !byte_level && normalizer.contains("\"Prepend\""),
            "strip_space_in_decode": !byte_level && decoder.contains("\"Strip\""),
        },
        "conv_template": conv.to_json(),
        "pad_token_id": t.pad_id().unwrap_or(0),
        "bos_token_id": t.bos_id(),
        "eos_token_id": eos,
    })
}

/// MLC's own `chatml` conversation template, for models whose chat template no
/// conv_template can express.
fn chatml_conv_template(stop_token_ids: Vec<u32>) -> Result<ConvTemplate> {
    let mut conv = ConvTemplate::from_json(&json!({
        "name": "chatml",
        "system_template": "<|im_start|>system\n{system_message}<|im_end|>\n",
        "system_message": "A conversation between a user and an LLM-based AI assistant. The assistant gives helpful and honest answers.",
        "roles": { "user": "<|im_start|>user", "assistant": "<|im_start|>assistant" },
        "seps": ["<|im_end|>\n"],
        "role_content_sep": "\n",
        "role_empty_sep": "\n",
        "stop_str": ["<|im_end|>"],
    }))?;
    conv.stop_token_ids = stop_token_ids;
    Ok(conv)
}

/// The quantization options a scheme writes with: glim's minimum-error scales, exact in the
/// scheme's stored scale type.
fn quant_options(quant: MlcQuant) -> QuantOptions {
    QuantOptions {
        scale_type: if quant.f32_model() {
            ScaleType::Bf16
        } else {
            ScaleType::F16
        },
        ..QuantOptions::default()
    }
}

/// Writes `src` as an MLC model folder in `quant` into `out`, which must not exist or be
/// empty. `progress(done, total)` is called per parameter. Tensors are packed exactly as
/// loading `src` packs them ([`weights::packed_matrix`]); a folder left half written by an
/// error is removed again.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_folder(
    src: &FolderSource,
    quant: MlcQuant,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<WriteReport> {
    let Some(format) = quant.packed_format() else {
        return Err(Error::Unsupported(format!(
            "writing {} folders (glim writes q4f16_1, q3f16_1 and q4f32_1)",
            quant.name()
        )));
    };
    if src.weights.has("rope_freqs.weight") {
        return Err(Error::Unsupported(
            "this GGUF carries Llama 3 frequency scaling as a rope_freqs tensor, which MLC folders cannot hold; quantize the Hugging Face checkpoint instead".into(),
        ));
    }
    let created = prepare_out_dir(out)?;
    let result = write_contents(src, quant, format, out, progress);
    if result.is_err() {
        remove_written(out, created);
    }
    result
}

/// Checks `out` is absent or empty and creates it; returns whether glim created it.
#[cfg(not(target_arch = "wasm32"))]
fn prepare_out_dir(out: &Path) -> Result<bool> {
    let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", out.display()));
    if out.exists() {
        if !out.is_dir() {
            return Err(Error::Invalid(format!(
                "{} exists and is not a folder",
                out.display()
            )));
        }
        if std::fs::read_dir(out).map_err(io)?.next().is_some() {
            return Err(Error::Invalid(format!(
                "{} exists and is not empty; choose a new folder",
                out.display()
            )));
        }
        return Ok(false);
    }
    std::fs::create_dir_all(out).map_err(io)?;
    Ok(true)
}

/// Removes what a failed write left: the folder if glim made it, else its contents (it was
/// empty before).
#[cfg(not(target_arch = "wasm32"))]
fn remove_written(out: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(out);
    } else if let Ok(entries) = std::fs::read_dir(out) {
        for path in entries.flatten().map(|e| e.path()) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn write_contents(
    src: &FolderSource,
    quant: MlcQuant,
    format: WeightFormat,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<WriteReport> {
    let io =
        |path: PathBuf| move |e: std::io::Error| Error::Invalid(format!("{}: {e}", path.display()));
    let params = LlamaParams::new(src.config);
    let all = params.in_mlc_order();
    let options = quant_options(quant);
    let mut writer = TensorCacheWriter::create(out)?;
    let mut source_params = 0u64;
    for (i, param) in all.iter().enumerate() {
        let (base, _) = mlc_name(&param.name)
            .ok_or_else(|| Error::Invalid(format!("no MLC name for {}", param.name)))?;
        match param.shape {
            Shape::Matrix { rows, cols } => {
                let packed = weights::packed_matrix_with(src.weights, param, format, options)?;
                source_params += (rows * cols) as u64;
                let (words, groups) = (format.words_per_row(cols), format.scales_per_row(cols));
                writer.add_u32(&format!("{base}.q_weight"), &[rows, words], &packed.codes)?;
                let scale_name = format!("{base}.q_scale");
                if quant.f32_model() {
                    let scales: Vec<f32> = packed.scales.iter().map(|s| s.to_f32()).collect();
                    writer.add_f32_as_bf16(&scale_name, &[rows, groups], &scales)?;
                } else {
                    writer.add_f16(&scale_name, &[rows, groups], &packed.scales)?;
                }
            }
            Shape::Vector(len) => {
                let values = weights::vector(src.weights, param)?;
                source_params += len as u64;
                if quant.f32_model() {
                    writer.add_f32_as_bf16(&base, &[len], &values)?;
                } else {
                    let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
                    writer.add_f16(&base, &[len], &halves)?;
                }
            }
        }
        progress(i + 1, all.len());
    }
    let index = writer.finish(source_params)?;

    let mut warnings = Vec::new();
    let stops: Vec<u32> = src.tokenizer.end_of_generation().to_vec();
    let stops_for_fallback = stops.clone();
    let conv = match ConvTemplate::derive(src.template, "glim", stops) {
        Ok(conv) => conv,
        Err(e) => {
            warnings.push(format!(
                "{e}; mlc-chat-config.json gets a ChatML conv_template, and MLC's own runtime will format chats differently from glim (which reads the Jinja template in tokenizer_config.json)"
            ));
            chatml_conv_template(stops_for_fallback)?
        }
    };
    let (tokenizer_json, tokenizer_config) = src.tokenizer.to_hf_files()?;
    let chat = chat_config_json(src, quant, &conv, &tokenizer_json);
    let files = [
        ("tokenizer.json", tokenizer_json),
        (
            "tokenizer_config.json",
            serde_json::to_string_pretty(&tokenizer_config).unwrap_or_default(),
        ),
        (
            "mlc-chat-config.json",
            serde_json::to_string_pretty(&chat).unwrap_or_default(),
        ),
    ];
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(io(path.clone()))?;
    }
    Ok(WriteReport {
        tensor_bytes: index.tensors.iter().map(|t| t.nbytes as u64).sum(),
        shards: index.shards.len(),
        warnings,
    })
}
