//! The graph's parameters: their names, shapes, and how each one is made from a
//! [`WeightSource`]: as stored ([`stored_matrix`]: GGUF blocks and MLC's packed weights,
//! every value kept) or converted ([`packed_matrix`]: decoded and quantized, what `--quant`
//! asks for). Loading with a conversion and writing a model folder both go through
//! [`packed_matrix`] and [`vector`], so a folder `glim quantize` writes holds exactly the
//! bytes glim would upload from its source converted the same way.
//!
//! Names are llama.cpp's (`blk.N.attn_output.weight`), plus the fused matrices the graph
//! runs: `blk.N.attn_qkv.weight` (rows: Q, then K, then V) and `blk.N.ffn_gate_up.weight`
//! (rows: gate, then up), as MLC folders store them, and the fused vectors
//! `blk.N.attn_qkv.bias` (Q, K, V biases) and `blk.N.attn_qk_norm.weight` (Q, then K norm
//! weights). Sources that keep the parts apart (GGUF, Hugging Face) are fused here, at load.

use half::f16;

use super::config::ModelConfig;
use super::source::WeightSource;
use crate::error::{Error, Result};
use crate::quant::{PackedWeight, QuantOptions, WeightFormat};

/// A parameter's shape: a matrix of `rows` output features by `cols` inputs, or a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Matrix { rows: usize, cols: usize },
    Vector(usize),
}

/// One named parameter of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub shape: Shape,
    /// For a fused matrix, the parts in row order, for sources that store them apart.
    pub parts: Vec<Param>,
}

impl Param {
    fn matrix(name: impl Into<String>, rows: usize, cols: usize) -> Self {
        Self {
            name: name.into(),
            shape: Shape::Matrix { rows, cols },
            parts: Vec::new(),
        }
    }

    fn vector(name: impl Into<String>, len: usize) -> Self {
        Self {
            name: name.into(),
            shape: Shape::Vector(len),
            parts: Vec::new(),
        }
    }

    /// A vector made of `parts` end to end.
    fn fused_vector(name: impl Into<String>, parts: Vec<Param>) -> Self {
        let len = parts
            .iter()
            .map(|p| match p.shape {
                Shape::Vector(n) => n,
                Shape::Matrix { .. } => 0,
            })
            .sum();
        Self {
            parts,
            ..Self::vector(name, len)
        }
    }

    /// A matrix made of `parts` stacked by rows.
    fn fused(name: impl Into<String>, parts: Vec<Param>) -> Self {
        let cols = parts
            .first()
            .map_or(0, |p| matrix_shape(p).map_or(0, |s| s.1));
        let rows = parts
            .iter()
            .map(|p| matrix_shape(p).map_or(0, |s| s.0))
            .sum();
        Self {
            parts,
            ..Self::matrix(name, rows, cols)
        }
    }
}

/// One decoder layer's parameters; the optional ones where its [`super::config::LayerSpec`] asks.
#[derive(Clone, Debug)]
pub struct LayerParams {
    pub attn_norm: Param,
    pub qkv: Param,
    pub qkv_bias: Option<Param>,
    pub qk_norm: Option<Param>,
    pub attn_output: Param,
    pub post_attn_norm: Option<Param>,
    pub ffn_norm: Param,
    pub gate_up: Param,
    pub down: Param,
    pub post_ffn_norm: Option<Param>,
}

/// Every parameter of a model.
#[derive(Clone, Debug)]
pub struct ModelParams {
    pub embed: Param,
    pub layers: Vec<LayerParams>,
    pub final_norm: Param,
    /// The output head, absent when it is the embedding table (tied).
    pub output: Option<Param>,
}

impl ModelParams {
    pub fn new(c: &ModelConfig) -> Self {
        let (dim, ffn) = (c.dim, c.ffn_dim);
        let layers = c
            .layers
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let name = |t: &str| format!("blk.{i}.{t}.weight");
                let bias = |t: &str| format!("blk.{i}.{t}.bias");
                let (q, kv) = (c.q_dim(), c.kv_dim());
                let hd = c.head_dim;
                LayerParams {
                    attn_norm: Param::vector(name("attn_norm"), dim),
                    qkv_bias: spec.qkv_bias.then(|| {
                        Param::fused_vector(
                            bias("attn_qkv"),
                            vec![
                                Param::vector(bias("attn_q"), q),
                                Param::vector(bias("attn_k"), kv),
                                Param::vector(bias("attn_v"), kv),
                            ],
                        )
                    }),
                    qk_norm: spec.qk_norm.then(|| {
                        Param::fused_vector(
                            name("attn_qk_norm"),
                            vec![
                                Param::vector(name("attn_q_norm"), hd),
                                Param::vector(name("attn_k_norm"), hd),
                            ],
                        )
                    }),
                    post_attn_norm: spec
                        .post_norms
                        .then(|| Param::vector(name("post_attention_norm"), dim)),
                    post_ffn_norm: spec
                        .post_norms
                        .then(|| Param::vector(name("post_ffw_norm"), dim)),
                    qkv: Param::fused(
                        name("attn_qkv"),
                        vec![
                            Param::matrix(name("attn_q"), q, dim),
                            Param::matrix(name("attn_k"), kv, dim),
                            Param::matrix(name("attn_v"), kv, dim),
                        ],
                    ),
                    attn_output: Param::matrix(name("attn_output"), dim, q),
                    ffn_norm: Param::vector(name("ffn_norm"), dim),
                    gate_up: Param::fused(
                        name("ffn_gate_up"),
                        vec![
                            Param::matrix(name("ffn_gate"), ffn, dim),
                            Param::matrix(name("ffn_up"), ffn, dim),
                        ],
                    ),
                    down: Param::matrix(name("ffn_down"), dim, ffn),
                }
            })
            .collect();
        Self {
            embed: Param::matrix("token_embd.weight", c.vocab_size, dim),
            layers,
            final_norm: Param::vector("output_norm.weight", dim),
            output: (!c.tied_embeddings).then(|| Param::matrix("output.weight", c.vocab_size, dim)),
        }
    }

    /// All parameters in the order MLC-LLM writes a Llama folder (`named_parameters` of its
    /// `LlamaForCausalLM`): the embedding; per layer QKV, O, gate/up, down, then the two
    /// norms (and the other architectures' extras); the final norm; the output head.
    pub fn in_mlc_order(&self) -> Vec<&Param> {
        let mut all = vec![&self.embed];
        for l in &self.layers {
            all.extend([
                &l.qkv,
                &l.attn_output,
                &l.gate_up,
                &l.down,
                &l.attn_norm,
                &l.ffn_norm,
            ]);
            all.extend(
                [&l.qkv_bias, &l.qk_norm, &l.post_attn_norm, &l.post_ffn_norm]
                    .into_iter()
                    .flatten(),
            );
        }
        all.push(&self.final_norm);
        all.extend(&self.output);
        all
    }
}

fn matrix_shape(param: &Param) -> Result<(usize, usize)> {
    match param.shape {
        Shape::Matrix { rows, cols } => Ok((rows, cols)),
        Shape::Vector(_) => Err(Error::Invalid(format!("{} is not a matrix", param.name))),
    }
}

/// The matrix `param` as the source stores it, in row ranges of one format each (a fused
/// matrix whose parts the source stores in different formats keeps each part's), or `None`
/// when the source stores it in no format the kernels run (Hugging Face tensors are
/// quantized instead). Neighbouring parts of one format become one matrix.
pub fn stored_matrix(
    source: &dyn WeightSource,
    param: &Param,
) -> Result<Option<Vec<PackedWeight>>> {
    let (rows, cols) = matrix_shape(param)?;
    if param.parts.is_empty() || source.has(&param.name) {
        return Ok(source.packed(&param.name, rows, cols)?.map(|p| vec![p]));
    }
    // Runs of neighbouring parts in one format, each stacked once.
    let mut runs: Vec<Vec<PackedWeight>> = Vec::new();
    for part in &param.parts {
        let (part_rows, _) = matrix_shape(part)?;
        let Some(packed) = source.packed(&part.name, part_rows, cols)? else {
            return Ok(None);
        };
        match runs.last_mut() {
            Some(run) if run[0].format == packed.format => run.push(packed),
            _ => runs.push(vec![packed]),
        }
    }
    runs.into_iter()
        .map(|mut run| match run.len() {
            1 => Ok(run.remove(0)),
            _ => PackedWeight::stack(&run),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The matrix `param` in `format`: as the source stores it when the source holds only
/// packed weights (an MLC folder, which must be in `format`), otherwise decoded — its parts
/// fused when the source keeps them apart — and quantized with glim's default options.
pub fn packed_matrix(
    source: &dyn WeightSource,
    param: &Param,
    format: WeightFormat,
) -> Result<PackedWeight> {
    packed_matrix_with(source, param, format, QuantOptions::default())
}

/// [`packed_matrix`], quantizing with `options` where the source is not packed.
pub fn packed_matrix_with(
    source: &dyn WeightSource,
    param: &Param,
    format: WeightFormat,
    options: QuantOptions,
) -> Result<PackedWeight> {
    let (rows, cols) = matrix_shape(param)?;
    let stored = if source.packed_only() {
        stored_matrix(source, param)?
    } else {
        None
    };
    if let Some(mut parts) = stored {
        if let Some(other) = parts.iter().find(|p| p.format != format) {
            return Err(Error::Unsupported(format!(
                "{} is packed as {}; glim does not re-quantize packed weights to {} (quantize the original model instead)",
                param.name,
                other.format.name(),
                format.name()
            )));
        }
        return match parts.len() {
            1 => Ok(parts.remove(0)),
            _ => PackedWeight::stack(&parts),
        };
    }
    let values = dense_matrix(source, param)?;
    PackedWeight::quantize_with(format, &values, rows, cols, options)
}

/// The matrix `param` as f32, fused from its parts when the source keeps them apart.
pub fn dense_matrix(source: &dyn WeightSource, param: &Param) -> Result<Vec<f32>> {
    let (rows, cols) = matrix_shape(param)?;
    if param.parts.is_empty() || source.has(&param.name) {
        return source.tensor_f32(&param.name, &[rows, cols]);
    }
    let mut values = Vec::with_capacity(rows * cols);
    for part in &param.parts {
        let (part_rows, _) = matrix_shape(part)?;
        values.extend(source.tensor_f32(&part.name, &[part_rows, cols])?);
    }
    Ok(values)
}

/// The vector `param` as f32, rounded to f16 values with `round_to_f16`. Norm weights go
/// to the GPU in f32; a model converted to MLC's formats holds them at f16 values (the
/// formats are f16-dtype models in MLC's sense, and a folder stores them as f16), so the
/// model and the folder written from it compute the same numbers. A model run as stored
/// keeps them as stored.
pub fn vector(source: &dyn WeightSource, param: &Param, round_to_f16: bool) -> Result<Vec<f32>> {
    let Shape::Vector(len) = param.shape else {
        return Err(Error::Invalid(format!("{} is not a vector", param.name)));
    };
    let values = if param.parts.is_empty() || source.has(&param.name) {
        source.tensor_f32(&param.name, &[len])?
    } else {
        let mut values = Vec::with_capacity(len);
        for part in &param.parts {
            values.extend(vector(source, part, false)?);
        }
        values
    };
    if !round_to_f16 {
        return Ok(values);
    }
    Ok(values
        .into_iter()
        .map(|v| f16::from_f32(v).to_f32())
        .collect())
}
