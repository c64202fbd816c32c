//! Every architecture from a Hugging Face folder computes what it computes from its GGUF:
//! the GGUF's weights written as `config.json` and f16 safetensors under the family's
//! Hugging Face names (Q/K rows in Hugging Face order, Gemma's norms as `w` where the GGUF
//! holds `w + 1`), both loaded converted to f16, give the same logits bit for bit. The
//! GGUFs themselves are checked against llama.cpp in `goldens.rs`.

use std::path::Path;

use glim::formats::gguf::GgufFile;
use glim::model::arch::Family;
use glim::model::config::ModelConfig;
use glim::model::graph::{LoadOptions, Logits, Model};
use glim::model::hf::HfModel;
use glim::model::source::{GgufWeights, WeightSource};
use glim::model::weights::{ModelParams, Param, Shape};
use glim::quant::WeightFormat;
use half::f16;
use serde_json::json;

/// A Hugging Face `config.json` for `c`, in the keys its family's checkpoints use.
fn config_json(c: &ModelConfig) -> serde_json::Value {
    let global = c
        .layers
        .iter()
        .find(|l| l.window.is_none())
        .unwrap_or(&c.layers[0]);
    let mut config = json!({
        "num_hidden_layers": c.n_layers, "hidden_size": c.dim, "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim, "intermediate_size": c.ffn_dim,
        "vocab_size": c.vocab_size, "rope_theta": global.rope.base, "rms_norm_eps": c.rms_eps,
        "max_position_embeddings": c.context_length, "tie_word_embeddings": c.tied_embeddings,
    });
    let extra = match c.family {
        Family::Llama => json!({"model_type": "llama"}),
        Family::Qwen2 => json!({"model_type": "qwen2", "use_sliding_window": false}),
        Family::Qwen3 => json!({"model_type": "qwen3", "attention_bias": false}),
        Family::Phi3 => {
            let long_rope = c.long_rope.as_ref().unwrap();
            json!({
                "model_type": "phi3",
                "original_max_position_embeddings": long_rope.original_context,
                "rope_scaling": {
                    "type": "longrope", "short_factor": long_rope.short,
                    "long_factor": long_rope.long,
                },
            })
        }
        Family::Gemma3 => {
            let local = c.layers.iter().find(|l| l.window.is_some()).unwrap();
            json!({
                "model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh",
                "sliding_window": local.window, "rope_local_base_freq": local.rope.base,
                "query_pre_attn_scalar": (1.0 / (local.attn_scale * local.attn_scale)).round(),
            })
        }
    };
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

/// The parameters as `family`'s Hugging Face checkpoints store them: fused ones apart in
/// their parts, except Phi-3's Q/K/V and gate/up matrices.
fn leaves(params: &ModelParams, family: Family) -> Vec<Param> {
    params
        .in_mlc_order()
        .into_iter()
        .flat_map(|p| {
            let fused_matrix = matches!(p.shape, Shape::Matrix { .. });
            if p.parts.is_empty() || (family == Family::Phi3 && fused_matrix) {
                vec![p.clone()]
            } else {
                p.parts.clone()
            }
        })
        .collect()
}

/// Writes the GGUF's model as a Hugging Face folder: `config.json` and one f16 safetensors
/// file (norms and biases in f32, as checkpoints often keep them).
fn write_hf_folder(file: &GgufFile, dir: &Path) {
    let config = ModelConfig::from_gguf(file).unwrap();
    std::fs::write(dir.join("config.json"), config_json(&config).to_string()).unwrap();
    let source = GgufWeights::new(file, &config);
    let offset = config.family.hf_norm_offset();
    let mut tensors = Vec::new();
    for param in leaves(&ModelParams::new(&config), config.family) {
        let hf = config.family.hf_name(&param.name).unwrap();
        let (shape, bytes): (Vec<usize>, Vec<u8>) = match param.shape {
            Shape::Matrix { rows, cols } => {
                let values = source.tensor_f32(&param.name, &[rows, cols]).unwrap();
                let bytes = values
                    .iter()
                    .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                    .collect();
                (vec![rows, cols], bytes)
            }
            Shape::Vector(len) => {
                let mut values = source.tensor_f32(&param.name, &[len]).unwrap();
                if hf.ends_with("norm.weight") {
                    values.iter_mut().for_each(|v| *v -= offset);
                }
                (
                    vec![len],
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            }
        };
        let dtype = if shape.len() == 2 {
            safetensors::Dtype::F16
        } else {
            safetensors::Dtype::F32
        };
        tensors.push((hf, dtype, shape, bytes));
    }
    let views = tensors.iter().map(|(name, dtype, shape, bytes)| {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap();
        (name.clone(), view)
    });
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

/// Logits of the first 48 tokens of the test text, the model loaded converted to f16.
fn logits(ctx: glim::gpu::GpuContext, config: ModelConfig, source: &dyn WeightSource) -> Vec<f32> {
    let options = LoadOptions {
        format: Some(WeightFormat::F16),
        context: 64,
        max_batch: 64,
        ..LoadOptions::default()
    };
    let mut model = Model::load(ctx, config, source, &options, &mut |_, _| {}).unwrap();
    let ids: Vec<u32> = (0..48).map(|i| (i * 977 + 13) % 30_000).collect();
    model.forward_logits_blocking(&ids, 0, Logits::All).unwrap()
}

fn hf_equals_gguf(gguf: &Path, family: Family) {
    let (Some(ctx), Some(ctx2)) = (glim_tests::open_gpu(), glim_tests::open_gpu()) else {
        return;
    };
    let file = GgufFile::open(gguf).unwrap();
    let config = ModelConfig::from_gguf(&file).unwrap();
    assert_eq!(config.family, family);
    let dir = std::env::temp_dir().join(format!(
        "glim-test-hf-{}-{}",
        family.gguf_name(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_hf_folder(&file, &dir);
    let hf = HfModel::open(&dir).unwrap();
    // The adapter reads the same spec from config.json as from the GGUF's metadata.
    assert_eq!(
        hf.config, config,
        "{family:?}: config.json and GGUF specs differ"
    );
    let from_gguf = logits(ctx, config, &GgufWeights::new(&file, &hf.config));
    let from_hf = logits(ctx2, hf.config.clone(), &hf);
    let _ = std::fs::remove_dir_all(&dir);
    let differ = from_gguf
        .iter()
        .zip(&from_hf)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differ,
        0,
        "{family:?}: {differ} of {} logits differ between the HF folder and the GGUF",
        from_gguf.len()
    );
    eprintln!(
        "{family:?}: HF folder and GGUF give the same {} logits",
        from_gguf.len()
    );
}

#[test]
fn qwen2_from_hugging_face_equals_its_gguf() {
    if let Some(model) = glim_tests::derived_model(Family::Qwen2) {
        hf_equals_gguf(&model.0, Family::Qwen2);
    }
}

#[test]
fn qwen3_from_hugging_face_equals_its_gguf() {
    if let Some(model) = glim_tests::derived_model(Family::Qwen3) {
        hf_equals_gguf(&model.0, Family::Qwen3);
    }
}

#[test]
fn phi3_from_hugging_face_equals_its_gguf() {
    if let Some(model) = glim_tests::derived_model(Family::Phi3) {
        hf_equals_gguf(&model.0, Family::Phi3);
    }
}

#[test]
fn gemma3_from_hugging_face_equals_its_gguf() {
    if let Some(path) = glim_tests::gemma_q4_k_m() {
        hf_equals_gguf(&path, Family::Gemma3);
    }
}
