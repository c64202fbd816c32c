//! Gemma 3 (text): embeddings times sqrt(d), GeGLU, sandwich norms (before and after each
//! block), per-head Q/K norms, and five sliding-window layers (local RoPE base 10 000) to
//! each global one (the model's base, scaled on the larger models).
//! Norms multiply by `1 + w`: Hugging Face stores `w`, llama.cpp's GGUFs `w + 1`.

use serde_json::Value;

use super::{GgufKeys, HfKeys};
use crate::error::{Error, Result};
use crate::model::config::{Activation, ModelConfig, Rope, RopeScaling};

/// Every sixth layer attends globally, the others to a window.
const PATTERN: usize = 6;
/// RoPE base of the sliding-window layers.
const LOCAL_BASE: f32 = 10_000.0;

pub(super) fn hf_layer_name(part: &str) -> Option<&'static str> {
    Some(match part {
        "post_attention_norm.weight" => "post_attention_layernorm.weight",
        "ffn_norm.weight" => "pre_feedforward_layernorm.weight",
        "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
        _ => return None,
    })
}

/// The layer specs shared by both sources: `sliding[i]` says whether layer i attends to a
/// window of `window` keys.
fn adapt(
    config: &mut ModelConfig,
    sliding: &[bool],
    window: usize,
    global_scaling: Option<RopeScaling>,
    query_scale: f32,
) {
    config.embed_scale = (config.dim as f32).sqrt();
    for (layer, &local) in config.layers.iter_mut().zip(sliding) {
        layer.qk_norm = true;
        layer.post_norms = true;
        layer.activation = Activation::GeGlu;
        layer.attn_scale = 1.0 / query_scale.sqrt();
        if local {
            layer.window = Some(window);
            layer.rope = Rope {
                base: LOCAL_BASE,
                scaling: None,
            };
        } else {
            layer.rope.scaling = global_scaling;
        }
    }
}

fn pattern(n_layers: usize) -> Vec<bool> {
    (0..n_layers).map(|i| i % PATTERN < PATTERN - 1).collect()
}

pub(super) fn adapt_gguf(keys: &GgufKeys, config: &mut ModelConfig) -> Result<()> {
    let window = keys.opt_usize("attention.sliding_window").unwrap_or(4096);
    let scaling = match keys.opt_str("rope.scaling.type") {
        None | Some("none") => None,
        Some("linear") => keys.opt_f32("rope.scaling.factor").map(RopeScaling::Linear),
        Some(other) => return Err(Error::Unsupported(format!("rope scaling `{other}`"))),
    };
    // llama.cpp scales queries by 1/sqrt(head_dim), except on the 27B model (62 layers),
    // whose query_pre_attn_scalar is d_model / heads.
    let query = if config.n_layers == 62 {
        config.dim / config.n_heads
    } else {
        config.head_dim
    };
    let sliding = pattern(config.n_layers);
    adapt(config, &sliding, window, scaling, query as f32);
    Ok(())
}

pub(super) fn adapt_hf(keys: &HfKeys, config: &mut ModelConfig) -> Result<()> {
    if let Some(act) = keys.get("hidden_activation").and_then(Value::as_str) {
        if act != "gelu_pytorch_tanh" {
            return Err(Error::Unsupported(format!(
                "Gemma 3 with activation `{act}`"
            )));
        }
    }
    // Gemma ties its head unless the config says otherwise.
    if keys.get("tie_word_embeddings").is_none() {
        config.tied_embeddings = true;
    }
    let window = keys.opt_usize("sliding_window").unwrap_or(4096);
    let sliding = match keys.get("layer_types").and_then(Value::as_array) {
        Some(types) => types
            .iter()
            .map(|t| t.as_str() == Some("sliding_attention"))
            .collect(),
        None => pattern(config.n_layers),
    };
    if sliding.len() != config.n_layers {
        return Err(Error::Invalid(format!(
            "config.json lists {} layer types for {} layers",
            sliding.len(),
            config.n_layers
        )));
    }
    let scaling = match keys.get("rope_scaling") {
        None => None,
        Some(s) => {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("");
            match (kind, s.get("factor").and_then(Value::as_f64)) {
                ("linear", Some(f)) => Some(RopeScaling::Linear(f as f32)),
                ("default", _) => None,
                _ => return Err(Error::Unsupported(format!("rope scaling `{kind}`"))),
            }
        }
    };
    let query = keys
        .opt_f32("query_pre_attn_scalar")
        .unwrap_or(config.head_dim as f32);
    adapt(config, &sliding, window, scaling, query);
    for layer in &mut config.layers {
        if let Some(local) = layer.window.and(keys.opt_f32("rope_local_base_freq")) {
            layer.rope.base = local;
        }
        layer.attn_softcap = keys.opt_f32("attn_logit_softcapping");
    }
    config.final_softcap = keys.opt_f32("final_logit_softcapping");
    Ok(())
}
