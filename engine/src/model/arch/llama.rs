//! Llama (and Mistral without a sliding window, SmolLM, TinyLlama): the spec's defaults.
//! GGUF files permute Q/K rows (see [`super::Family::gguf_permutes_qk`]); Llama 3 carries its
//! frequency scaling as `rope_scaling` in `config.json` and as `rope_freqs.weight` in GGUF.

use serde_json::Value;

use super::{GgufKeys, HfKeys};
use crate::error::{Error, Result};
use crate::kernels::rope::Llama3Scaling;
use crate::model::config::{ModelConfig, RopeScaling};

pub(super) fn adapt_gguf(keys: &GgufKeys, _config: &mut ModelConfig) -> Result<()> {
    if let Some(kind) = keys.opt_str("rope.scaling.type") {
        if kind != "none" {
            return Err(Error::Unsupported(format!("rope scaling `{kind}`")));
        }
    }
    // Llama 3's scaling comes as the rope_freqs.weight tensor, applied at load.
    Ok(())
}

pub(super) fn adapt_hf(keys: &HfKeys, model_type: &str, config: &mut ModelConfig) -> Result<()> {
    if model_type == "mistral" && keys.get("sliding_window").is_some() {
        return Err(Error::Unsupported(
            "Mistral with a sliding attention window".into(),
        ));
    }
    if let Some(s) = keys.get("rope_scaling") {
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if kind != "llama3" {
            return Err(Error::Unsupported(format!("rope scaling `{kind}`")));
        }
        let f = |k: &str| s.get(k).and_then(Value::as_f64).map(|v| v as f32);
        let scaling = RopeScaling::Llama3(Llama3Scaling {
            factor: f("factor").unwrap_or(8.0),
            low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
            original_context: f("original_max_position_embeddings").unwrap_or(8192.0),
        });
        config
            .layers
            .iter_mut()
            .for_each(|l| l.rope.scaling = Some(scaling));
    }
    Ok(())
}
