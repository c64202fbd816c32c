//! MLC-LLM model folders as models: `mlc-chat-config.json` to a [`ModelConfig`], and packed
//! tensors under glim's names ([`MlcModel`]). Writing a folder is `mlc_writer`; the bytes on
//! disk are `formats::mlc`'s.
//!
//! Names: each MLC model names its parameters by its modules' attribute paths ([`mlc_name`]):
//! Llama as Hugging Face does with fused matrices (`model.layers.N.self_attn.qkv_proj`,
//! `mlp.gate_up_proj`), Qwen's fused Q/K/V `self_attn.c_attn` (with its bias), Gemma 3's
//! under `language_model.model.` with Q, K and V apart, Phi-3's `transformer.h.N.mixer.*`.
//! A quantized matrix is `<base>.q_weight` (u32 codes) plus `<base>.q_scale`, an
//! unquantized one `<base>.weight`. Gemma's norms are stored as `w + 1`, as in GGUFs.

#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use half::f16;
use serde_json::Value;

use super::arch::Family;
use super::config::ModelConfig;
use super::source::{check_shape, WeightSource};
use super::weights::Param;
use crate::error::{Error, Result};
#[cfg(not(target_arch = "wasm32"))]
use crate::formats::mlc::MlcFolder;
use crate::formats::mlc::{DType, ShardStore, TensorRecord};
use crate::quant::{PackedWeight, WeightFormat};
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
            other => {
                return Err(Error::Unsupported(format!(
                "MLC quantization `{other}` (glim reads q4f16_1, q4f32_1, q3f16_1, q0f16, q0f32)"
            )))
            }
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
    pub fn f32_model(self) -> bool {
        matches!(self, Self::Q4F32 | Self::Q0F32)
    }
}

/// The MLC base name of a glim parameter name in `family`'s MLC model, and whether it is a
/// matrix (stored as `<base>.q_weight` + `<base>.q_scale`, or `<base>.weight`); `None` for
/// a fused parameter MLC stores as its parts (Gemma 3's Q, K and V), or a name MLC's model
/// of the family has no parameter for. Checked against MLC-LLM's
/// `python/mlc_llm/model/<arch>/` modules, whose attribute paths are the names: Hugging
/// Face's (with the fused `qkv_proj` and `gate_up_proj`), but for Qwen's `c_attn`, Gemma 3's
/// model under `language_model.`, and Phi-3's modules of its own.
pub fn mlc_name(family: Family, name: &str) -> Option<(String, bool)> {
    // Norm weights and biases are stored as they are; matrices by their module's name.
    let matrix = !(name.ends_with("norm.weight") || name.ends_with(".bias"));
    let layer_part = name.strip_prefix("blk.").and_then(|r| r.split_once('.'));
    let named = match (family, layer_part) {
        (Family::Phi3, _) => phi3_name(name)?,
        (
            Family::Qwen2 | Family::Qwen3,
            Some((layer, part @ ("attn_qkv.weight" | "attn_qkv.bias"))),
        ) => {
            let kind = part.rsplit('.').next().unwrap_or("weight");
            format!("model.layers.{layer}.self_attn.c_attn.{kind}")
        }
        (Family::Gemma3, Some((_, "attn_qkv.weight"))) => return None,
        (Family::Gemma3, _) => match family.hf_name(name)? {
            under_model if under_model.starts_with("model.") => {
                format!("language_model.{under_model}")
            }
            head => head,
        },
        _ => family.hf_name(name)?,
    };
    let base = match matrix {
        true => named.strip_suffix(".weight")?.to_string(),
        false => named,
    };
    Some((base, matrix))
}

/// A glim parameter's name in MLC's Phi-3 model (`transformer.h.N.mixer.qkv_proj`, ...).
fn phi3_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("transformer.embd.weight"),
        "output.weight" => Some("lm_head.weight"),
        "output_norm.weight" => Some("transformer.norm.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let (layer, part) = name.strip_prefix("blk.")?.split_once('.')?;
    let module = match part {
        "attn_norm.weight" => "ln.weight",
        "attn_qkv.weight" => "mixer.qkv_proj.weight",
        "attn_output.weight" => "mixer.out_proj.weight",
        "ffn_gate_up.weight" => "mlp.gate_up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("transformer.h.{layer}.{module}"))
}

/// Reads the model config of an `mlc-chat-config.json`, and its quantization.
pub fn config_from_chat_config(chat: &Value) -> Result<(ModelConfig, MlcQuant)> {
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
    // and let one reader check it. Gemma 3's keeps the text model's keys in `text_config`,
    // the keys MLC does not know in its `kwargs`.
    let mut model_type = chat.get("model_type").cloned().unwrap_or(Value::Null);
    let mut hf = model.clone();
    if let Some(text) = model.get("text_config").and_then(Value::as_object) {
        hf = text.clone();
        if let Some(Value::Object(kwargs)) = hf.remove("kwargs") {
            for (k, v) in kwargs {
                hf.entry(k).or_insert(v);
            }
        }
        if let Some(vocab) = model.get("vocab_size") {
            hf.insert("vocab_size".into(), vocab.clone());
        }
        if model_type == "gemma3" {
            model_type = "gemma3_text".into();
        }
    }
    hf.insert("model_type".into(), model_type);
    // MLC's Gemma 3 has `rope_scaling: 0` for none.
    if hf.get("rope_scaling").is_some_and(|s| !s.is_object()) {
        hf.remove("rope_scaling");
    }
    if let Some(base) = hf.get("position_embedding_base").cloned() {
        hf.insert("rope_theta".into(), base);
    }
    let window = hf
        .get("context_window_size")
        .or_else(|| chat.get("context_window_size"))
        .cloned();
    if let Some(w) = window {
        hf.insert("max_position_embeddings".into(), w);
    }
    let sliding = hf
        .get("sliding_window_size")
        .or_else(|| chat.get("sliding_window_size"))
        .and_then(Value::as_i64);
    if let Some(sliding) = sliding.filter(|&s| s > 0) {
        hf.insert("sliding_window".into(), sliding.into());
    }
    let config = ModelConfig::from_hf_json(&Value::Object(hf)).map_err(|e| match e {
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

/// A model folder's tokenizer and chat template, from the bytes of its `tokenizer.json`,
/// `tokenizer_config.json` (if any) and parsed `mlc-chat-config.json`: the Jinja template
/// from `tokenizer_config.json`, else the folder's `conv_template`; every stop id ends
/// generation.
pub fn mlc_text(
    tokenizer_json: &[u8],
    tokenizer_config: Option<&[u8]>,
    chat_config: &Value,
) -> Result<(Tokenizer, ChatTemplate)> {
    let mut tokenizer = Tokenizer::from_json_bytes(tokenizer_json)?;
    if let Some(config) = tokenizer_config {
        tokenizer = tokenizer
            .with_config_json(config)
            .map_err(|e| Error::Invalid(format!("tokenizer_config.json: {e}")))?;
    }
    let tokenizer = tokenizer.with_end_of_generation(&stop_ids(chat_config));
    let template = match (tokenizer.chat_template(), chat_config.get("conv_template")) {
        (None, Some(conv)) if conv.is_object() => {
            let conv = ConvTemplate::from_json(conv).map_err(|e| match e {
                Error::Invalid(m) => Error::Invalid(format!("mlc-chat-config.json: {m}")),
                other => other,
            })?;
            ChatTemplate::new(
                conv.to_jinja(),
                tokenizer.bos_token().unwrap_or_default(),
                tokenizer.eos_token().unwrap_or_default(),
            )?
        }
        _ => ChatTemplate::from_tokenizer(&tokenizer)?,
    };
    Ok((tokenizer, template))
}

/// Decodes one packed `[rows, cols]` matrix from its two tensors and their bytes.
pub fn packed_from_records(
    format: WeightFormat,
    (rows, cols): (usize, usize),
    (codes_rec, codes): (&TensorRecord, &[u8]),
    (scales_rec, scales): (&TensorRecord, &[u8]),
) -> Result<PackedWeight> {
    let words = format.code_words_per_row(cols);
    let groups = format.scale_halves_per_row(cols);
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
                Ok(h.to_bits())
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

/// An MLC model: its config and its shards, from a folder's mapped files
/// ([`MlcFolder`]) or shards streamed into a browser ([`ResidentShards`]).
///
/// [`ResidentShards`]: crate::formats::mlc::ResidentShards
pub struct MlcModel<S: ShardStore> {
    pub shards: S,
    pub config: ModelConfig,
    pub quant: MlcQuant,
    /// `mlc-chat-config.json` as parsed.
    pub chat_config: Value,
}

#[cfg(not(target_arch = "wasm32"))]
impl MlcModel<MlcFolder> {
    /// Opens a folder: its shard index and `mlc-chat-config.json`, checked against each
    /// other. Shards are read (and their md5 checked) when their tensors are first needed.
    pub fn open(dir: &Path) -> Result<Self> {
        let folder = MlcFolder::open(dir)?;
        let chat_config = folder.read_json("mlc-chat-config.json")?;
        Self::new(folder, chat_config)
    }
}

impl<S: ShardStore> MlcModel<S> {
    /// The model whose `mlc-chat-config.json` is `chat_config` and whose tensors `shards`
    /// holds.
    pub fn new(shards: S, chat_config: Value) -> Result<Self> {
        let (config, quant) = config_from_chat_config(&chat_config)?;
        let mut model = Self {
            shards,
            config,
            quant,
            chat_config,
        };
        // A folder without an output head ties it to the embedding table.
        model.config.tied_embeddings = !model.has("output.weight");
        Ok(model)
    }

    /// The stored tensors glim's parameter `name` is: a packed matrix's codes and scales,
    /// an unquantized matrix or a vector; none when MLC stores it only as parts.
    fn stored_as(&self, name: &str) -> Vec<String> {
        let Some((base, matrix)) = mlc_name(self.config.family, name) else {
            return Vec::new();
        };
        match (matrix, self.quant.packed_format()) {
            (true, Some(_)) => vec![format!("{base}.q_weight"), format!("{base}.q_scale")],
            (true, None) => vec![format!("{base}.weight")],
            (false, _) => vec![base],
        }
    }

    /// The stored tensors glim's parameter is made from: its own, or its parts' where MLC
    /// stores them apart (Gemma 3's Q, K and V).
    pub fn stored_tensors(&self, param: &Param) -> Vec<String> {
        let own = self.stored_as(&param.name);
        if !own.is_empty() {
            return own;
        }
        param
            .parts
            .iter()
            .flat_map(|p| self.stored_as(&p.name))
            .collect()
    }

    /// The shards glim's parameter is read from, in order.
    pub fn shards_of(&self, param: &Param) -> Vec<usize> {
        let mut shards: Vec<usize> = self
            .stored_tensors(param)
            .iter()
            .filter_map(|t| self.shards.index().get(t).map(|r| r.shard))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        shards
    }

    fn record(&self, name: &str) -> Result<(&TensorRecord, &[u8])> {
        Ok((self.shards.record(name)?, self.shards.tensor_bytes(name)?))
    }

    /// `e` (about tensors that disagree with the config) with the shard named.
    fn in_shard(&self, tensor: &str, e: Error) -> Error {
        let Error::Invalid(message) = e else { return e };
        match self.shards.index().get(tensor) {
            Some(r) => Error::Invalid(format!(
                "{}: {message} (the shape mlc-chat-config.json implies)",
                self.shards.shard_location(r.shard)
            )),
            None => Error::Invalid(message),
        }
    }
}

impl<S: ShardStore> WeightSource for MlcModel<S> {
    fn has(&self, name: &str) -> bool {
        self.stored_as(name)
            .first()
            .is_some_and(|stored| self.shards.index().get(stored).is_some())
    }

    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let stored = self
            .stored_as(name)
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid(format!("MLC folders have no tensor for {name}")))?;
        if stored.ends_with(".q_weight") {
            return Err(Error::Invalid(format!(
                "{stored} is quantized in this folder; it is read packed"
            )));
        }
        let (record, bytes) = self.record(&stored)?;
        check_shape(&stored, &record.shape, shape).map_err(|e| self.in_shard(&stored, e))?;
        record.to_f32(bytes)
    }

    fn packed(&self, name: &str, rows: usize, cols: usize) -> Result<Option<PackedWeight>> {
        let (Some(format), Some((base, true))) = (
            self.quant.packed_format(),
            mlc_name(self.config.family, name),
        ) else {
            return Ok(None);
        };
        let codes_name = format!("{base}.q_weight");
        let codes = self.record(&codes_name)?;
        let scales = self.record(&format!("{base}.q_scale"))?;
        packed_from_records(format, (rows, cols), codes, scales)
            .map(Some)
            .map_err(|e| self.in_shard(&codes_name, e))
    }

    fn packed_only(&self) -> bool {
        self.quant.packed_format().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::mlc::{TensorCache, TensorCacheBuilder};

    fn scales_f16(p: &PackedWeight) -> Vec<f16> {
        p.scales.iter().map(|&b| f16::from_bits(b)).collect()
    }

    /// The browser's path: shards arrive one at a time as bytes, each checked against the
    /// index, and packed matrices are decoded from them; nothing touches a file.
    #[test]
    fn packed_matrices_decode_from_shard_bytes() {
        let (rows, cols) = (40, 100); // K not a multiple of the group: padded last group
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut want = Vec::new();
        let mut builder = TensorCacheBuilder::with_shard_cap(Vec::new(), 4096);
        for (name, format) in [("a", WeightFormat::Q4F16), ("b", WeightFormat::Q3F16)] {
            let p = PackedWeight::quantize(format, &values, rows, cols).unwrap();
            let (words, groups) = (
                format.code_words_per_row(cols),
                format.scale_halves_per_row(cols),
            );
            builder
                .add_u32(&format!("{name}.q_weight"), &[rows, words], &p.codes)
                .unwrap();
            builder
                .add_f16(&format!("{name}.q_scale"), &[rows, groups], &scales_f16(&p))
                .unwrap();
            want.push((name, p));
        }
        let done = builder.finish((2 * rows * cols) as u64).unwrap();
        let shards: Vec<(String, Vec<u8>)> = done.sink;
        assert!(shards.len() > 1, "the small cap splits the tensors");
        let index = TensorCache::parse(done.index_json.as_bytes(), "tensor-cache.json").unwrap();
        for (n, (_, bytes)) in shards.iter().enumerate() {
            index.check_shard(n, bytes).unwrap();
        }
        let tensor = |name: &str| {
            let record = index.get(name).unwrap();
            (record, record.slice(&shards[record.shard].1).unwrap())
        };
        for (name, p) in want {
            let got = packed_from_records(
                p.format,
                (rows, cols),
                tensor(&format!("{name}.q_weight")),
                tensor(&format!("{name}.q_scale")),
            )
            .unwrap();
            assert_eq!(got, p);
        }
        // A scale tensor whose shape does not fit the matrix is an error naming it.
        let err = packed_from_records(
            WeightFormat::Q4F16,
            (rows + 1, cols),
            tensor("a.q_weight"),
            tensor("a.q_scale"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("a.q_weight"), "{err}");
    }

    /// `mlc-chat-config.json`s in the shapes MLC-LLM's config classes write them (their
    /// dataclass fields, HF keys it does not know kept in `kwargs`).
    #[test]
    fn chat_configs_of_each_family() {
        let read = |v: Value| config_from_chat_config(&v).unwrap().0;
        let qwen2 = read(serde_json::json!({
            "model_type": "qwen2", "quantization": "q4f16_1",
            "model_config": { "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864,
                "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000, "vocab_size": 151936,
                "tie_word_embeddings": true, "context_window_size": 32768,
                "prefill_chunk_size": 2048, "tensor_parallel_shards": 1, "head_dim": 64,
                "dtype": "float32", "max_batch_size": 80 }
        }));
        assert_eq!(qwen2.family, Family::Qwen2);
        assert!(qwen2.layers[0].qkv_bias && qwen2.tied_embeddings);
        assert_eq!(
            (qwen2.layers[0].rope.base, qwen2.context_length),
            (1e6, 32768)
        );

        // Gemma 3 nests the text model; `rope_scaling: 0` is none.
        let gemma = read(serde_json::json!({
            "model_type": "gemma3_text", "quantization": "q4f16_1",
            "model_config": {
                "text_config": { "hidden_size": 640, "intermediate_size": 2048,
                    "num_hidden_layers": 18, "attention_bias": false, "num_attention_heads": 4,
                    "num_key_value_heads": 1, "head_dim": 256, "rms_norm_eps": 1e-6,
                    "hidden_activation": "gelu_pytorch_tanh", "position_embedding_base": 1000000,
                    "rope_scaling": 0, "context_window_size": 8192, "prefill_chunk_size": 8192,
                    "query_pre_attn_scalar": 256, "sliding_window_size": 512,
                    "kwargs": { "rope_local_base_freq": 10000.0, "model_type": "gemma3_text",
                        "max_position_embeddings": 32768 } },
                "vocab_size": 262144, "tensor_parallel_shards": 1, "max_batch_size": 1,
                "context_window_size": 8192, "sliding_window_size": 512,
                "prefill_chunk_size": 8192, "is_text_model": true },
            "sliding_window_size": 512,
        }));
        assert_eq!(gemma.family, Family::Gemma3);
        assert_eq!(
            (gemma.vocab_size, gemma.head_dim, gemma.context_length),
            (262144, 256, 8192)
        );
        let windows: Vec<Option<usize>> = gemma.layers.iter().map(|l| l.window).collect();
        assert_eq!(
            windows[..6],
            [Some(512), Some(512), Some(512), Some(512), Some(512), None]
        );
        assert_eq!(gemma.layers[0].rope.base, 10_000.0);
        assert_eq!(gemma.layers[5].rope.base, 1e6);
        assert!(gemma.tied_embeddings);

        // Phi-3.5's LongRoPE: the attention factor from the trained length MLC copies into
        // `rope_scaling`, not from the (shorter) context the folder runs at.
        let pairs = 48;
        let phi3 = read(serde_json::json!({
            "model_type": "phi3", "quantization": "q4f16_1",
            "model_config": { "model_type": "phi3", "hidden_size": 3072, "vocab_size": 32064,
                "num_hidden_layers": 32, "num_attention_heads": 32, "intermediate_size": 8192,
                "rms_norm_eps": 1e-5, "num_key_value_heads": 32,
                "max_position_embeddings": 131072, "position_embedding_base": 10000.0,
                "rope_scaling": { "type": "longrope", "rope_type": "longrope",
                    "short_factor": vec![1.0; pairs], "long_factor": vec![2.0; pairs],
                    "max_position_embeddings": 131072, "original_max_position_embeddings": 4096 },
                "original_max_position_embeddings": 4096, "context_window_size": 4096,
                "head_dim": 96, "tie_word_embeddings": false, "partial_rotary_factor": 1.0 }
        }));
        let long_rope = phi3.long_rope.as_ref().unwrap();
        assert_eq!(phi3.context_length, 4096);
        assert_eq!(long_rope.factors(phi3.context_length), &[1.0; 48]);
        let factor = (1.0 + (32f64).ln() / (4096f64).ln()).sqrt() as f32;
        assert_eq!(long_rope.attention_factor, factor);
        assert!((phi3.layers[0].attn_scale - factor * factor / 96f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn chat_config_errors_name_the_problem() {
        let err = |v: Value| config_from_chat_config(&v).unwrap_err().to_string();
        assert!(err(serde_json::json!({})).contains("quantization"));
        let no_model = serde_json::json!({ "quantization": "q4f16_1" });
        assert!(err(no_model).contains("model_config"));
        let bad = serde_json::json!({
            "model_type": "llama", "quantization": "q4f16_1",
            "model_config": { "hidden_size": 64, "num_attention_heads": 4 }
        });
        assert!(err(bad).contains("mlc-chat-config.json"));
        let ok = serde_json::json!({
            "model_type": "llama", "quantization": "q3f16_1", "context_window_size": 512,
            "model_config": { "hidden_size": 64, "intermediate_size": 128,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                "rms_norm_eps": 1e-5, "vocab_size": 100, "position_embedding_base": 500000.0,
                "tie_word_embeddings": true }
        });
        let (config, quant) = config_from_chat_config(&ok).unwrap();
        assert_eq!(quant, MlcQuant::Q3F16);
        assert_eq!(
            (config.dim, config.n_kv_heads, config.head_dim),
            (64, 2, 16)
        );
        assert_eq!(config.layers[0].rope.base, 500_000.0);
        assert_eq!(config.context_length, 512);
        assert_eq!(
            stop_ids(&serde_json::json!({ "eos_token_id": [2, 7],
            "conv_template": { "stop_token_ids": [7, 9] } })),
            [2, 7, 9]
        );
    }
}
