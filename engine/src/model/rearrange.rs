//! A Llama GGUF's weights rewritten in another architecture's layout, for testing an
//! adapter against llama.cpp when no small real model of the family is at hand: the same
//! blocks, byte for byte, with Q/K rows put back in NeoX order (only llama-style GGUFs are
//! permuted) and the tensors the family adds: seeded random Q/K/V biases (Qwen2), per-head
//! Q/K norm weights (Qwen3) at realistic scales, or Phi-3's layout (Q/K/V and gate/up
//! stacked into one matrix each) with LongRoPE divisors. llama.cpp and glim then run the
//! identical file (`glim synth --from MODEL.gguf --arch qwen2`).

use std::io::Write;

use super::arch::Family;
use super::config::{LongRope, ModelConfig};
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
    /// The source tensors of these names stacked by rows, each one's rows in the order
    /// given, where one is.
    Copy(Vec<(String, Option<Vec<usize>>)>),
    F32(Vec<f32>),
}

/// The original context the rewritten Phi-3 model claims: below the 1024 tokens the goldens
/// run at, so both engines use the long divisors.
const PHI3_ORIGINAL_CONTEXT: usize = 512;

/// The spec of source tensor `info` under `name`.
fn spec_of(info: &crate::formats::gguf::TensorInfo, name: &str) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        ..TensorSpec::of(info)
    }
}

/// Writes `src` (a `llama` GGUF) as a `target` GGUF with the same weights (see the module
/// documentation); `seed` draws the added tensors.
pub fn write_as(src: &GgufFile, target: Family, seed: u64, out: impl Write) -> Result<()> {
    let config = ModelConfig::from_gguf(src)?;
    if config.family != Family::Llama || target == Family::Gemma3 {
        return Err(Error::Unsupported(format!(
            "rewriting a {:?} GGUF as {target:?} (glim rewrites Llama GGUFs as Llama, Qwen2, Qwen3 or Phi-3)",
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

    if target == Family::Phi3 {
        let attn_factor =
            LongRope::default_attention_factor(config.context_length, PHI3_ORIGINAL_CONTEXT);
        metadata.extend([
            (
                format!("{arch}.rope.scaling.original_context_length"),
                Value::U32(PHI3_ORIGINAL_CONTEXT as u32),
            ),
            (
                format!("{arch}.rope.scaling.attn_factor"),
                Value::F32(attn_factor),
            ),
        ]);
    }

    let mut rng = Rng(seed);
    let mut random = |n: usize, centre: f32, spread: f32| -> Vec<f32> {
        (0..n)
            .map(|_| centre + spread * next_signed(&mut rng))
            .collect()
    };
    let vector = |name: String, values: Vec<f32>| {
        let spec = TensorSpec {
            name,
            dims: vec![values.len() as u64],
            ggml_type: GgmlType::F32,
        };
        (spec, Data::F32(values))
    };
    let mut tensors: Vec<(TensorSpec, Data)> = Vec::new();
    if target == Family::Phi3 {
        // Per-pair divisors near 1 for short contexts, rising to about 4 for the slowest
        // frequencies for long ones (Phi-3.5's rise further).
        let pairs = config.head_dim / 2;
        let short = random(pairs, 1.05, 0.05);
        let long = (0..pairs)
            .map(|i| 4f32.powf(i as f32 / pairs as f32))
            .zip(random(pairs, 1.0, 0.1))
            .map(|(rise, noise)| rise * noise)
            .collect();
        tensors.push(vector("rope_factors_short.weight".into(), short));
        tensors.push(vector("rope_factors_long.weight".into(), long));
    }
    for info in src.tensors() {
        let name = info.name().to_string();
        let Some((layer, part)) = name.strip_prefix("blk.").and_then(|r| r.split_once('.')) else {
            tensors.push((spec_of(info, &name), Data::Copy(vec![(name, None)])));
            continue;
        };
        // llama.cpp permuted the Q/K rows of this llama GGUF; the target stores NeoX order.
        let order = |part: &str| {
            let heads = match part {
                "attn_q" => config.n_heads,
                "attn_k" => config.n_kv_heads,
                _ => return None,
            };
            let rows = src.tensor(&format!("blk.{layer}.{part}.weight"))?.n_rows();
            Some(unpermuted_order(rows as usize, heads))
        };
        let source = |part: &str| (format!("blk.{layer}.{part}.weight"), order(part));
        let stacked = |parts: &[&str], to: &str| -> Result<(TensorSpec, Data)> {
            let infos = parts
                .iter()
                .map(|p| {
                    let n = format!("blk.{layer}.{p}.weight");
                    src.tensor(&n)
                        .ok_or_else(|| Error::Invalid(format!("no tensor {n}")))
                })
                .collect::<Result<Vec<_>>>()?;
            if infos.iter().any(|i| i.ggml_type() != info.ggml_type()) {
                return Err(Error::Unsupported(format!(
                    "stacking layer {layer}'s {parts:?}, stored in different block types"
                )));
            }
            let mut spec = spec_of(info, &format!("blk.{layer}.{to}.weight"));
            spec.dims[1] = infos.iter().map(|i| i.n_rows()).sum();
            Ok((spec, Data::Copy(parts.iter().map(|p| source(p)).collect())))
        };
        let part = part.strip_suffix(".weight").unwrap_or(part);
        match (target, part) {
            (Family::Phi3, "attn_q") => {
                tensors.push(stacked(&["attn_q", "attn_k", "attn_v"], "attn_qkv")?)
            }
            (Family::Phi3, "ffn_gate") => tensors.push(stacked(&["ffn_gate", "ffn_up"], "ffn_up")?),
            (Family::Phi3, "attn_k" | "attn_v" | "ffn_up") => {}
            _ => {
                let order = if name.ends_with(".weight") {
                    order(part)
                } else {
                    None
                };
                tensors.push((
                    spec_of(info, &name),
                    Data::Copy(vec![(name.clone(), order)]),
                ));
            }
        }
        if part != "attn_norm" {
            continue;
        }
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
            Family::Llama | Family::Gemma3 | Family::Phi3 => {}
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
            Data::Copy(sources) => {
                let mut out = Vec::new();
                for (name, order) in sources {
                    let info = src
                        .tensor(name)
                        .ok_or_else(|| Error::Invalid(format!("no tensor {name}")))?;
                    let bytes = src.tensor_bytes(info);
                    match order {
                        None => out.extend_from_slice(bytes),
                        Some(order) => {
                            let row = spec.ggml_type.row_bytes(spec.dims[0] as usize)?;
                            for &r in order {
                                out.extend_from_slice(&bytes[r * row..(r + 1) * row]);
                            }
                        }
                    }
                }
                out
            }
        };
        writer.write_tensor(&bytes)?;
    }
    writer.finish()?;
    Ok(())
}
