//! Qwen2 and Qwen2.5: the Llama block with biases on Q, K and V, RoPE in NeoX order (GGUFs
//! are not permuted), tied embeddings on the small models.

use super::{GgufKeys, HfKeys};
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;

pub(super) fn adapt_gguf(_keys: &GgufKeys, config: &mut ModelConfig) -> Result<()> {
    config.layers.iter_mut().for_each(|l| l.qkv_bias = true);
    Ok(())
}

pub(super) fn adapt_hf(keys: &HfKeys, config: &mut ModelConfig) -> Result<()> {
    if keys.get("use_sliding_window").and_then(|v| v.as_bool()) == Some(true) {
        return Err(Error::Unsupported(
            "Qwen2 with a sliding attention window".into(),
        ));
    }
    if keys.get("rope_scaling").is_some() {
        return Err(Error::Unsupported("Qwen2 with rope scaling (YaRN)".into()));
    }
    config.layers.iter_mut().for_each(|l| l.qkv_bias = true);
    Ok(())
}
