//! Where a model's weights come from. Every format answers in llama.cpp's tensor names
//! (`token_embd.weight`, `blk.N.attn_q.weight`, ...), so one graph loads them all, and in
//! Hugging Face's row order, so every source runs the same rotate-half RoPE.

use super::arch::Family;
use super::config::ModelConfig;
use crate::error::{Error, Result};
use crate::formats::ggml::GgmlType;
use crate::formats::gguf::GgufData;
use crate::quant::{PackedWeight, WeightFormat};

/// A provider of named weights.
pub trait WeightSource {
    /// Whether the model has this tensor.
    fn has(&self, name: &str) -> bool;

    /// The tensor's values, row-major with `shape` (`[rows, cols]` for a matrix whose rows
    /// are output features; `[len]` for a vector). A different shape is an error.
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;

    /// The matrix as the source stores it, every value kept, when the kernels run its
    /// storage format (MLC folders' packed matrices, GGUF blocks); `None` when it must be
    /// decoded with [`WeightSource::tensor_f32`] and quantized.
    fn packed(&self, _name: &str, _rows: usize, _cols: usize) -> Result<Option<PackedWeight>> {
        Ok(None)
    }

    /// Whether the matrices must run in their stored format (MLC folders: their packed
    /// weights are the model, with no f32 original to quantize again).
    fn packed_only(&self) -> bool {
        false
    }
}

/// The shape check every source shares.
pub(crate) fn check_shape(name: &str, found: &[usize], wanted: &[usize]) -> Result<()> {
    let count = |s: &[usize]| s.iter().product::<usize>();
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if count(found) == count(wanted) && squeeze(found) == squeeze(wanted) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "tensor {name} has shape {found:?}, expected {wanted:?}"
        )))
    }
}

/// A GGUF file's weights, with Q and K rows put back in Hugging Face order where llama.cpp
/// permuted them (Llama-family files; the other families are stored in NeoX order).
///
/// llama.cpp's converter permutes the rows of each Q and K head so that rotated pairs sit
/// side by side (interleaved RoPE). Undoing that here means a GGUF model runs the same
/// rotate-half graph as HF and MLC models, and packs to exactly the bytes an MLC folder
/// written from it holds.
pub struct GgufWeights<'a> {
    pub file: &'a dyn GgufData,
    family: Family,
    n_heads: usize,
    n_kv_heads: usize,
    permuted: bool,
}

impl<'a> GgufWeights<'a> {
    pub fn new(file: &'a dyn GgufData, config: &ModelConfig) -> Self {
        Self {
            file,
            family: config.family,
            n_heads: config.n_heads,
            n_kv_heads: config.n_kv_heads,
            permuted: config.family.gguf_permutes_qk(),
        }
    }

    /// Heads whose rows llama.cpp permuted, for a tensor name.
    fn permuted_heads(&self, name: &str) -> Option<usize> {
        if !self.permuted {
            return None;
        }
        let part = name.strip_prefix("blk.")?.split_once('.')?.1;
        match part {
            "attn_q.weight" => Some(self.n_heads),
            "attn_k.weight" => Some(self.n_kv_heads),
            _ => None,
        }
    }
}

/// Undoes llama.cpp's Q/K permutation of `[heads * head_dim, cols]` rows: GGUF row
/// `2i + s` of a head is Hugging Face row `s * head_dim / 2 + i`.
pub fn unpermute_rows(rows: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let n_rows = rows.len() / cols.max(1);
    unpermuted_order(n_rows, heads)
        .iter()
        .flat_map(|&from| &rows[from * cols..(from + 1) * cols])
        .copied()
        .collect()
}

/// For each Hugging Face row of `heads` permuted heads, the GGUF row it is stored in.
pub fn unpermuted_order(rows: usize, heads: usize) -> Vec<usize> {
    let head_dim = rows / heads.max(1);
    let half = head_dim / 2;
    (0..rows)
        .map(|to| {
            let (h, r) = (to / head_dim.max(1), to % head_dim.max(1));
            let (s, i) = (r / half.max(1), r % half.max(1));
            h * head_dim + 2 * i + s
        })
        .collect()
}

impl GgufWeights<'_> {
    /// The file's tensors glim's parameter is read from: its own, or its parts'.
    pub fn stored_tensors(&self, param: &crate::model::weights::Param) -> Vec<String> {
        let stored = |name: &str| self.info(name).map(|t| t.name().to_string());
        match stored(&param.name) {
            Some(own) => vec![own],
            None => param.parts.iter().filter_map(|p| stored(&p.name)).collect(),
        }
    }

    /// The tensor glim calls `name`, under this family's name for it.
    fn info(&self, name: &str) -> Option<&crate::formats::gguf::TensorInfo> {
        self.file
            .header()
            .tensor(&self.family.gguf_tensor_name(name))
    }
}

impl WeightSource for GgufWeights<'_> {
    fn has(&self, name: &str) -> bool {
        self.info(name).is_some()
    }

    /// The tensor's blocks repacked for the GPU (llama.cpp's Q/K rows put back in Hugging
    /// Face order); an `F32` or `BF16` matrix whose values f16 holds exactly runs as f16.
    fn packed(&self, name: &str, rows: usize, cols: usize) -> Result<Option<PackedWeight>> {
        let info = self
            .info(name)
            .ok_or_else(|| Error::Invalid(format!("model has no tensor {name}")))?;
        let found: Vec<usize> = info.dims().iter().rev().map(|&d| d as usize).collect();
        check_shape(name, &found, &[rows, cols])?;
        let ty = info.ggml_type();
        if WeightFormat::for_ggml(ty).is_none() {
            return Err(Error::Unsupported(format!(
                "tensor {name} is stored as GGML type {ty}, which glim's kernels do not run yet"
            )));
        }
        let bytes = self.file.tensor_data(info)?;
        let mut packed = if matches!(ty, GgmlType::F32 | GgmlType::BF16) {
            let values = crate::formats::ggml::dequantize(ty, bytes, rows * cols)?;
            let exact = crate::quant::float::exact_in_f16(&values);
            let format = if exact {
                WeightFormat::F16
            } else {
                WeightFormat::for_ggml(ty).expect("checked")
            };
            PackedWeight::quantize(format, &values, rows, cols)?
        } else {
            PackedWeight::from_ggml(ty, bytes, rows, cols)
                .map_err(|e| Error::Invalid(format!("tensor {name}: {e}")))?
        };
        if let Some(heads) = self.permuted_heads(name) {
            packed = packed.select_rows(&unpermuted_order(rows, heads));
        }
        Ok(Some(packed))
    }

    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let info = self
            .info(name)
            .ok_or_else(|| Error::Invalid(format!("model has no tensor {name}")))?;
        // GGUF lists dims fastest-first: [cols, rows].
        let found: Vec<usize> = info.dims().iter().rev().map(|&d| d as usize).collect();
        check_shape(name, &found, shape)?;
        let values = self.file.tensor_f32(info.name())?;
        Ok(match self.permuted_heads(name) {
            Some(heads) => unpermute_rows(&values, heads, *shape.last().unwrap_or(&1)),
            None => values,
        })
    }
}

impl<T: WeightSource + ?Sized> WeightSource for &T {
    fn has(&self, name: &str) -> bool {
        (**self).has(name)
    }

    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        (**self).tensor_f32(name, shape)
    }

    fn packed(&self, name: &str, rows: usize, cols: usize) -> Result<Option<PackedWeight>> {
        (**self).packed(name, rows, cols)
    }

    fn packed_only(&self) -> bool {
        (**self).packed_only()
    }
}
