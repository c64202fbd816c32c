//! Llama-shaped GGUF files with random weights: a 7B-class workload without 7B weights.
//!
//! The file is what llama.cpp writes for a Llama 2 model — the same metadata keys, tensor
//! names and GGML block types (Q4_0 or Q4_1 matrices, f32 norms) and a SentencePiece
//! vocabulary (`<unk>`, `<s>`, `</s>`, 256 byte tokens, then made-up pieces) — so glim and
//! llama.cpp can run the identical file and be timed against each other. The weights are
//! random codes with scales that give them a standard deviation of about 0.02; the text the
//! model writes means nothing.

use std::io::Write;

use half::f16;

use crate::error::{Error, Result};
use crate::formats::ggml::GgmlType;
use crate::formats::gguf::{Array, Value};
use crate::formats::gguf_writer::{GgufWriter, TensorSpec};
use crate::generate::sampler::Rng;

/// The dimensions of a Llama-family model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LlamaShape {
    pub layers: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub context: usize,
}

impl LlamaShape {
    /// Llama 2 7B: 32 layers, d 4096, FFN 11008, 32 heads, vocabulary 32000.
    pub const LLAMA2_7B: Self = Self {
        layers: 32,
        dim: 4096,
        ffn_dim: 11008,
        heads: 32,
        kv_heads: 32,
        vocab: 32000,
        context: 4096,
    };

    /// A small model of the same build, for tests.
    pub const TINY: Self = Self {
        layers: 2,
        dim: 128,
        ffn_dim: 384,
        heads: 4,
        kv_heads: 2,
        vocab: 512,
        context: 256,
    };

    /// The shape a name on the command line stands for.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "llama2-7b" => Some(Self::LLAMA2_7B),
            "tiny" => Some(Self::TINY),
            _ => None,
        }
    }

    pub fn parameters(&self) -> u64 {
        let d = self.dim as u64;
        let kv = (self.dim / self.heads * self.kv_heads) as u64;
        let layer = 2 * d * d + 2 * d * kv + 3 * d * self.ffn_dim as u64 + 2 * d;
        self.layers as u64 * layer + 2 * self.vocab as u64 * d + d
    }

    fn check(&self) -> Result<()> {
        let ok = self.layers > 0
            && self.heads > 0
            && self.kv_heads > 0
            && self.dim.is_multiple_of(self.heads)
            && self.heads.is_multiple_of(self.kv_heads)
            && self.dim.is_multiple_of(32)
            && self.ffn_dim.is_multiple_of(32)
            // Room for the special and byte tokens.
            && self.vocab > 259;
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "not a Llama shape glim can write: {self:?}"
            )))
        }
    }
}

/// Random bytes from `rng`: the same seed gives the same file on any machine.
fn fill(rng: &mut Rng, bytes: &mut [u8]) {
    for chunk in bytes.chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// The scale that gives uniform 4-bit codes (centred, spread ±8 steps) a standard
/// deviation of 0.02, a usual initialization.
const SCALE: f32 = 0.02 / 4.6;

/// `rows` rows of `cols` random weights in `ty` (Q4_0 or Q4_1 blocks of 32).
fn random_blocks(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let blocks = rows * cols / 32;
    let block_bytes = ty.type_size();
    let mut bytes = vec![0u8; blocks * block_bytes];
    fill(rng, &mut bytes);
    let d = f16::from_f32(SCALE).to_le_bytes();
    // Q4_1's minimum: -7.5 steps, so its codes centre on zero.
    let m = f16::from_f32(-7.5 * SCALE).to_le_bytes();
    for block in bytes.chunks_mut(block_bytes) {
        block[..2].copy_from_slice(&d);
        if ty == GgmlType::Q4_1 {
            block[2..4].copy_from_slice(&m);
        }
    }
    bytes
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// A SentencePiece vocabulary llama.cpp and glim both accept: `<unk>`, `<s>`, `</s>`, the
/// 256 byte tokens, then distinct made-up pieces with falling scores.
fn vocabulary(n: usize) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let mut i = 0usize;
    while tokens.len() < n {
        let mut piece = String::from("\u{2581}");
        let mut k = i;
        loop {
            piece.push(letters[k % 26] as char);
            k /= 26;
            if k == 0 {
                break;
            }
        }
        tokens.push(piece);
        types.push(1);
        i += 1;
    }
    let scores = (0..n).map(|i| -(i as f32)).collect();
    (tokens, scores, types)
}

/// Writes a Llama model of `shape` with random `ty` (Q4_0 or Q4_1) matrices to `out`;
/// `progress(done, total)` is called per tensor.
pub fn write_random_llama(
    out: impl Write,
    shape: &LlamaShape,
    ty: GgmlType,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    shape.check()?;
    if !matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1) {
        return Err(Error::Unsupported(format!(
            "random models are written as Q4_0 or Q4_1, not {}",
            ty.name()
        )));
    }
    let s = shape;
    let head_dim = s.dim / s.heads;
    let kv_dim = head_dim * s.kv_heads;
    let (tokens, scores, types) = vocabulary(s.vocab);
    let u32v = |v: usize| Value::U32(v as u32);
    let file_type = if ty == GgmlType::Q4_0 { 2 } else { 3 };
    let metadata = [
        ("general.architecture", Value::String("llama".into())),
        (
            "general.name",
            Value::String(format!("random llama {}L d{}", s.layers, s.dim)),
        ),
        ("general.file_type", Value::U32(file_type)),
        ("llama.context_length", u32v(s.context)),
        ("llama.embedding_length", u32v(s.dim)),
        ("llama.block_count", u32v(s.layers)),
        ("llama.feed_forward_length", u32v(s.ffn_dim)),
        ("llama.rope.dimension_count", u32v(head_dim)),
        ("llama.attention.head_count", u32v(s.heads)),
        ("llama.attention.head_count_kv", u32v(s.kv_heads)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.vocab_size", u32v(s.vocab)),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", Value::Array(Array::String(tokens))),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    // (name, rows, cols); a vector has rows 0.
    let mut tensors: Vec<(String, usize, usize)> =
        vec![("token_embd.weight".into(), s.vocab, s.dim)];
    for l in 0..s.layers {
        let name = |what: &str| format!("blk.{l}.{what}.weight");
        tensors.extend([
            (name("attn_norm"), 0, s.dim),
            (name("attn_q"), s.dim, s.dim),
            (name("attn_k"), kv_dim, s.dim),
            (name("attn_v"), kv_dim, s.dim),
            (name("attn_output"), s.dim, s.dim),
            (name("ffn_norm"), 0, s.dim),
            (name("ffn_gate"), s.ffn_dim, s.dim),
            (name("ffn_up"), s.ffn_dim, s.dim),
            (name("ffn_down"), s.dim, s.ffn_dim),
        ]);
    }
    tensors.push(("output_norm.weight".into(), 0, s.dim));
    tensors.push(("output.weight".into(), s.vocab, s.dim));
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, rows, cols)| TensorSpec {
            name: name.clone(),
            dims: if *rows == 0 {
                vec![*cols as u64]
            } else {
                vec![*cols as u64, *rows as u64]
            },
            ggml_type: if *rows == 0 { GgmlType::F32 } else { ty },
        })
        .collect();
    let mut writer = GgufWriter::new(out, &metadata, &specs)?;
    let mut rng = Rng(seed);
    for (i, (_, rows, cols)) in tensors.iter().enumerate() {
        let bytes = if *rows == 0 {
            f32_bytes(std::iter::repeat_n(1.0, *cols))
        } else {
            random_blocks(ty, *rows, *cols, &mut rng)
        };
        writer.write_tensor(&bytes)?;
        progress(i + 1, tensors.len());
    }
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf::GgufFile;
    use crate::model::config::LlamaConfig;
    use crate::text::Tokenizer;

    #[test]
    fn a_random_model_reads_back_as_a_llama() {
        let mut bytes = Vec::new();
        let shape = LlamaShape::TINY;
        write_random_llama(&mut bytes, &shape, GgmlType::Q4_1, 7, &mut |_, _| {}).unwrap();
        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
        let config = LlamaConfig::from_gguf(&file).unwrap();
        assert_eq!(
            (
                config.n_layers,
                config.dim,
                config.ffn_dim,
                config.n_heads,
                config.n_kv_heads
            ),
            (2, 128, 384, 4, 2)
        );
        assert_eq!(config.vocab_size, 512);
        let tokenizer = Tokenizer::from_gguf(&file).unwrap();
        assert_eq!(tokenizer.vocab_size(), 512);
        // Weights average about zero with the intended spread.
        let w = file.tensor_f32("blk.0.ffn_up.weight").unwrap();
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.003 && (0.015..0.025).contains(&std),
            "{mean} {std}"
        );
        // The seed decides the file.
        let mut again = Vec::new();
        write_random_llama(&mut again, &shape, GgmlType::Q4_1, 7, &mut |_, _| {}).unwrap();
        assert_eq!(again, bytes);
        assert!(write_random_llama(Vec::new(), &shape, GgmlType::F32, 7, &mut |_, _| {}).is_err());
    }

    #[test]
    fn the_7b_shape_has_7b_parameters() {
        let n = LlamaShape::LLAMA2_7B.parameters();
        assert_eq!(n, 6_738_415_616);
    }
}
