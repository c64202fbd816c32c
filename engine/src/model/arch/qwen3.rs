//! Qwen3 (dense): the Llama block with a per-head RMSNorm of Q and K before RoPE, a head
//! dimension of its own (128 where d_model / heads is 64 on the small models), NeoX RoPE.

use serde_json::Value;

use super::{GgufKeys, HfKeys};
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;

pub(super) fn adapt_gguf(_keys: &GgufKeys, config: &mut ModelConfig) -> Result<()> {
    config.layers.iter_mut().for_each(|l| l.qk_norm = true);
    Ok(())
}

pub(super) fn adapt_hf(keys: &HfKeys, config: &mut ModelConfig) -> Result<()> {
    if keys.get("rope_scaling").is_some() {
        return Err(Error::Unsupported("Qwen3 with rope scaling (YaRN)".into()));
    }
    let bias = keys.get("attention_bias").and_then(Value::as_bool) == Some(true);
    for layer in &mut config.layers {
        layer.qk_norm = true;
        layer.qkv_bias = bias;
    }
    Ok(())
}
