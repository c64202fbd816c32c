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
use crate::formats::ggml::{synthetic_blocks, GgmlType};
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

    /// A small model whose sizes are whole k-quant blocks (256), for dry runs of the
    /// benchmarks (`benches/gpu-check.sh --small`).
    pub const SMALL: Self = Self {
        layers: 4,
        dim: 512,
        ffn_dim: 1536,
        heads: 8,
        kv_heads: 4,
        vocab: 2048,
        context: 1024,
    };

    /// The shape a name on the command line stands for.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "llama2-7b" => Some(Self::LLAMA2_7B),
            "small" => Some(Self::SMALL),
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

/// The block types of a random model's matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Every matrix in one type: Q4_0 or Q4_1.
    All(GgmlType),
    /// llama.cpp's `Q4_K_M` recipe for Llama: Q4_K, but Q6_K for the output head and for
    /// `attn_v` and `ffn_down` in the layers where it spends more bits (the first and last
    /// eighth, and every third layer between).
    Q4KM,
}

impl Mix {
    /// The name of the mix, as in GGUF file names.
    pub fn name(self) -> &'static str {
        match self {
            Mix::All(ty) => ty.name(),
            Mix::Q4KM => "Q4_K_M",
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    fn file_type(self) -> u32 {
        match self {
            Mix::All(GgmlType::Q4_0) => 2,
            Mix::All(_) => 3,
            Mix::Q4KM => 15,
        }
    }

    /// The type of matrix `what` (`attn_q`, `output`, ...) of layer `layer` of `layers`.
    fn matrix_type(self, what: &str, layer: usize, layers: usize) -> GgmlType {
        match self {
            Mix::All(ty) => ty,
            Mix::Q4KM => {
                let eighth = layers / 8;
                let more_bits =
                    layer < eighth || layer >= 7 * layers / 8 || (layer - eighth) % 3 == 2;
                match what {
                    "output" => GgmlType::Q6_K,
                    "attn_v" | "ffn_down" if more_bits => GgmlType::Q6_K,
                    _ => GgmlType::Q4_K,
                }
            }
        }
    }
}

/// Writes a Llama model of `shape` with random matrices in `mix` to `out`;
/// `progress(done, total)` is called per tensor.
pub fn write_random_llama(
    out: impl Write,
    shape: &LlamaShape,
    mix: Mix,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    shape.check()?;
    if let Mix::All(ty) = mix {
        if !matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1) {
            return Err(Error::Unsupported(format!(
                "random models are written as Q4_0, Q4_1 or Q4_K_M, not {}",
                ty.name()
            )));
        }
    }
    if mix == Mix::Q4KM && !(shape.dim.is_multiple_of(256) && shape.ffn_dim.is_multiple_of(256)) {
        return Err(Error::Invalid(format!(
            "Q4_K_M's blocks of 256 need d and FFN sizes that are multiples of 256: {shape:?}"
        )));
    }
    let s = shape;
    let head_dim = s.dim / s.heads;
    let kv_dim = head_dim * s.kv_heads;
    let (tokens, scores, types) = vocabulary(s.vocab);
    let u32v = |v: usize| Value::U32(v as u32);
    let metadata = [
        ("general.architecture", Value::String("llama".into())),
        (
            "general.name",
            Value::String(format!("random llama {}L d{}", s.layers, s.dim)),
        ),
        ("general.file_type", Value::U32(mix.file_type())),
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
    // (name, rows, cols, type); a vector has rows 0.
    let matrix = |what: &str, layer: usize, rows: usize, cols: usize| {
        let name = if what == "output" || what == "token_embd" {
            format!("{what}.weight")
        } else {
            format!("blk.{layer}.{what}.weight")
        };
        (name, rows, cols, mix.matrix_type(what, layer, s.layers))
    };
    let vector = |name: String| (name, 0, s.dim, GgmlType::F32);
    let mut tensors = vec![matrix("token_embd", 0, s.vocab, s.dim)];
    for l in 0..s.layers {
        tensors.extend([
            vector(format!("blk.{l}.attn_norm.weight")),
            matrix("attn_q", l, s.dim, s.dim),
            matrix("attn_k", l, kv_dim, s.dim),
            matrix("attn_v", l, kv_dim, s.dim),
            matrix("attn_output", l, s.dim, s.dim),
            vector(format!("blk.{l}.ffn_norm.weight")),
            matrix("ffn_gate", l, s.ffn_dim, s.dim),
            matrix("ffn_up", l, s.ffn_dim, s.dim),
            matrix("ffn_down", l, s.dim, s.ffn_dim),
        ]);
    }
    tensors.push(vector("output_norm.weight".into()));
    tensors.push(matrix("output", 0, s.vocab, s.dim));
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, rows, cols, ty)| TensorSpec {
            name: name.clone(),
            dims: if *rows == 0 {
                vec![*cols as u64]
            } else {
                vec![*cols as u64, *rows as u64]
            },
            ggml_type: *ty,
        })
        .collect();
    let mut writer = GgufWriter::new(out, &metadata, &specs)?;
    let mut rng = Rng(seed);
    for (i, (_, rows, cols, ty)) in tensors.iter().enumerate() {
        let bytes = match ty {
            GgmlType::F32 => f32_bytes(std::iter::repeat_n(1.0, *cols)),
            GgmlType::Q4_0 | GgmlType::Q4_1 => random_blocks(*ty, *rows, *cols, &mut rng),
            // k-quants: random codes and sub-block scales under small f16 super-block scales.
            _ => synthetic_blocks(*ty, rows * cols / ty.block_size(), rng.next_u64())?,
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
    use crate::model::config::ModelConfig;
    use crate::text::Tokenizer;

    #[test]
    fn a_random_model_reads_back_as_a_llama() {
        let mut bytes = Vec::new();
        let shape = LlamaShape::TINY;
        write_random_llama(
            &mut bytes,
            &shape,
            Mix::All(GgmlType::Q4_1),
            7,
            &mut |_, _| {},
        )
        .unwrap();
        let file = GgufFile::from_bytes(bytes.clone()).unwrap();
        let config = ModelConfig::from_gguf(&file).unwrap();
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
        write_random_llama(
            &mut again,
            &shape,
            Mix::All(GgmlType::Q4_1),
            7,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(again, bytes);
        let f32s = Mix::All(GgmlType::F32);
        assert!(write_random_llama(Vec::new(), &shape, f32s, 7, &mut |_, _| {}).is_err());
        // The tiny shape's d of 128 cannot hold blocks of 256.
        assert!(write_random_llama(Vec::new(), &shape, Mix::Q4KM, 7, &mut |_, _| {}).is_err());
    }

    #[test]
    fn q4_k_m_follows_llama_cpps_recipe() {
        let shape = LlamaShape {
            layers: 8,
            ..LlamaShape::SMALL
        };
        let mut bytes = Vec::new();
        write_random_llama(&mut bytes, &shape, Mix::Q4KM, 3, &mut |_, _| {}).unwrap();
        let file = GgufFile::from_bytes(bytes).unwrap();
        let ty = |name: &str| file.tensor(name).unwrap().ggml_type();
        assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
        // 8 layers: more bits in layer 0 (first eighth), 3 (every third after it) and 7.
        for l in 0..8 {
            let want = if [0, 3, 6, 7].contains(&l) {
                GgmlType::Q6_K
            } else {
                GgmlType::Q4_K
            };
            assert_eq!(ty(&format!("blk.{l}.attn_v.weight")), want, "layer {l}");
            assert_eq!(ty(&format!("blk.{l}.ffn_down.weight")), want, "layer {l}");
            assert_eq!(ty(&format!("blk.{l}.attn_q.weight")), GgmlType::Q4_K);
        }
        assert!(ModelConfig::from_gguf(&file).is_ok());
    }

    #[test]
    fn the_7b_shape_has_7b_parameters() {
        let n = LlamaShape::LLAMA2_7B.parameters();
        assert_eq!(n, 6_738_415_616);
    }
}
