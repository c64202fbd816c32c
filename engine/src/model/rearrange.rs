//! A Llama GGUF's weights rewritten in another architecture's layout, for testing an
//! adapter against llama.cpp when no small real model of the family is at hand: the same
//! blocks, byte for byte, with Q/K rows put back in NeoX order (only llama-style GGUFs are
//! permuted) and the tensors the family adds: seeded random Q/K/V biases (Qwen2) or per-head
//! Q/K norm weights (Qwen3) at realistic scales. llama.cpp and glim then run the identical
//! file (`glim synth --from MODEL.gguf --arch qwen2`).

use std::io::Write;

use super::arch::Family;
use super::config::ModelConfig;
use super::source::unpermuted_order;
use crate::error::{Error, Result};
use crate::formats::ggml::GgmlType;
use crate::formats::gguf::{GgufFile, Value};
use crate::formats::gguf_writer::{GgufWriter, TensorSpec};
use crate::generate::sampler::Rng;

/// Uniform in [-1, 1), from 24 random bits: the same seed gives the same file anywhere.
fn next_signed(rng: &mut Rng) -> f32 {
    ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// A tensor of the new file: where its bytes come from.
enum Data {
    /// The source tensor of this name, its rows in this order when given.
    Copy(String, Option<Vec<usize>>),
    F32(Vec<f32>),
}

/// Writes `src` (a `llama` GGUF) as a `target` GGUF with the same weights (see the module
/// documentation); `seed` draws the added tensors.
pub fn write_as(src: &GgufFile, target: Family, seed: u64, out: impl Write) -> Result<()> {
    let config = ModelConfig::from_gguf(src)?;
    if config.family != Family::Llama || target == Family::Gemma3 {
        return Err(Error::Unsupported(format!(
            "rewriting a {:?} GGUF as {target:?} (glim rewrites Llama GGUFs as Llama, Qwen2 or Qwen3)",
            config.family
        )));
    }
    let arch = target.gguf_name();
    let mut metadata: Vec<(String, Value)> = src
        .metadata_entries()
        .filter(|(k, _)| *k != "general.architecture")
        .map(|(k, v)| {
            let key = match k.strip_prefix("llama.") {
                Some(rest) => format!("{arch}.{rest}"),
                None => k.to_string(),
            };
            (key, v.clone())
        })
        .collect();
    metadata.insert(
        0,
        ("general.architecture".into(), Value::String(arch.into())),
    );
    let head_dim = config.head_dim as u32;
    for what in ["key_length", "value_length"] {
        let key = format!("{arch}.attention.{what}");
        if !metadata.iter().any(|(k, _)| *k == key) {
            metadata.push((key, Value::U32(head_dim)));
        }
    }

    let mut rng = Rng(seed);
    let mut random = |n: usize, centre: f32, spread: f32| -> Vec<f32> {
        (0..n)
            .map(|_| centre + spread * next_signed(&mut rng))
            .collect()
    };
    let mut tensors: Vec<(TensorSpec, Data)> = Vec::new();
    for info in src.tensors() {
        let name = info.name().to_string();
        let spec = TensorSpec {
            name: name.clone(),
            dims: info.dims().to_vec(),
            ggml_type: info.ggml_type(),
        };
        // llama.cpp permuted the Q/K rows of this llama GGUF; the target stores NeoX order.
        let heads = match name.split('.').nth(2) {
            Some("attn_q") => Some(config.n_heads),
            Some("attn_k") => Some(config.n_kv_heads),
            _ => None,
        };
        let order = heads.map(|h| unpermuted_order(info.n_rows() as usize, h));
        tensors.push((spec, Data::Copy(name.clone(), order)));
        let Some(layer) = name
            .strip_prefix("blk.")
            .and_then(|r| r.strip_suffix(".attn_norm.weight"))
        else {
            continue;
        };
        let vector = |name: String, values: Vec<f32>| {
            let spec = TensorSpec {
                name,
                dims: vec![values.len() as u64],
                ggml_type: GgmlType::F32,
            };
            (spec, Data::F32(values))
        };
        let (q, kv) = (config.q_dim(), config.kv_dim());
        match target {
            // Qwen2's biases are large on Q and K, small on V.
            Family::Qwen2 => tensors.extend([
                vector(format!("blk.{layer}.attn_q.bias"), random(q, 0.0, 0.5)),
                vector(format!("blk.{layer}.attn_k.bias"), random(kv, 0.0, 0.5)),
                vector(format!("blk.{layer}.attn_v.bias"), random(kv, 0.0, 0.05)),
            ]),
            Family::Qwen3 => tensors.extend([
                vector(
                    format!("blk.{layer}.attn_q_norm.weight"),
                    random(config.head_dim, 1.0, 0.25),
                ),
                vector(
                    format!("blk.{layer}.attn_k_norm.weight"),
                    random(config.head_dim, 1.0, 0.25),
                ),
            ]),
            Family::Llama | Family::Gemma3 => {}
        }
    }
    let keys: Vec<(&str, Value)> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let specs: Vec<TensorSpec> = tensors.iter().map(|(s, _)| s.clone()).collect();
    let mut writer = GgufWriter::new(out, &keys, &specs)?;
    for (spec, data) in &tensors {
        let bytes = match data {
            Data::F32(values) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Data::Copy(name, order) => {
                let info = src
                    .tensor(name)
                    .ok_or_else(|| Error::Invalid(format!("no tensor {name}")))?;
                let bytes = src.tensor_bytes(info);
                match order {
                    None => bytes.to_vec(),
                    Some(order) => {
                        let row = spec.ggml_type.row_bytes(spec.dims[0] as usize)?;
                        order
                            .iter()
                            .flat_map(|&r| &bytes[r * row..(r + 1) * row])
                            .copied()
                            .collect()
                    }
                }
            }
        };
        writer.write_tensor(&bytes)?;
    }
    writer.finish()?;
    Ok(())
}
