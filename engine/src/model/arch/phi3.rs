//! Phi-3 and Phi-3.5 (mini): the Llama block with Q/K/V and gate/up stored fused (glim
//! runs them fused anyway), NeoX RoPE, and on the 128k-context models LongRoPE: per-pair
//! frequency divisors for short and long contexts and an attention factor. GGUFs hold the
//! divisors as `rope_factors_short/long.weight` and the factor as a key; `config.json` as
//! `rope_scaling`. Partial rotary embeddings (Phi-4-mini) are refused.

use serde_json::Value;

use super::{GgufKeys, HfKeys};
use crate::error::{Error, Result};
use crate::model::config::{LongRope, ModelConfig};

/// GGUF tensors with the short and long divisors.
pub(crate) const SHORT: &str = "rope_factors_short.weight";
pub(crate) const LONG: &str = "rope_factors_long.weight";

/// Scores scale by the square of the factor that scales cos and sin (both Q and K rotate).
fn set(config: &mut ModelConfig, long_rope: LongRope) {
    let factor = long_rope.attention_factor;
    for layer in &mut config.layers {
        layer.attn_scale *= factor * factor;
    }
    config.long_rope = Some(long_rope);
}

pub(super) fn adapt_gguf(keys: &GgufKeys, config: &mut ModelConfig) -> Result<()> {
    let file = keys.file;
    let (Some(short), Some(long)) = (file.tensor(SHORT), file.tensor(LONG)) else {
        return Ok(());
    };
    let pairs = config.head_dim / 2;
    for t in [short, long] {
        if t.n_elements() != pairs as u64 {
            return Err(Error::Invalid(format!(
                "{} has {} values for {pairs} frequency pairs",
                t.name(),
                t.n_elements()
            )));
        }
    }
    let long_rope = LongRope {
        short: keys.data.tensor_f32(SHORT)?,
        long: keys.data.tensor_f32(LONG)?,
        original_context: keys
            .opt_usize("rope.scaling.original_context_length")
            .unwrap_or(config.context_length),
        attention_factor: keys.opt_f32("rope.scaling.attn_factor").unwrap_or(1.0),
    };
    set(config, long_rope);
    Ok(())
}

pub(super) fn adapt_hf(keys: &HfKeys, config: &mut ModelConfig) -> Result<()> {
    if let Some(partial) = keys.opt_f32("partial_rotary_factor") {
        if partial != 1.0 {
            return Err(Error::Unsupported(format!(
                "rotary embedding over a {partial} part of each head (Phi-4-mini)"
            )));
        }
    }
    let Some(scaling) = keys.get("rope_scaling") else {
        return Ok(());
    };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != "longrope" && kind != "su" {
        return Err(Error::Unsupported(format!(
            "Phi-3 with rope scaling `{kind}`"
        )));
    }
    let factors = |k: &str| -> Result<Vec<f32>> {
        scaling
            .get(k)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|v| v.as_f64().map(|v| v as f32)).collect())
            .ok_or_else(|| Error::Invalid(format!("config.json: rope_scaling has no `{k}` list")))
    };
    let original = keys
        .opt_usize("original_max_position_embeddings")
        .unwrap_or(config.context_length);
    // MLC's chat config repeats the trained length here; its `max_position_embeddings` is
    // the context the folder runs at.
    let stretched = scaling
        .get("max_position_embeddings")
        .and_then(Value::as_u64)
        .map_or(config.context_length, |v| v as usize);
    let attention_factor = match scaling.get("attention_factor").and_then(Value::as_f64) {
        Some(f) => f as f32,
        None => LongRope::default_attention_factor(stretched, original),
    };
    let long_rope = LongRope {
        short: factors("short_factor")?,
        long: factors("long_factor")?,
        original_context: original,
        attention_factor,
    };
    set(config, long_rope);
    Ok(())
}
