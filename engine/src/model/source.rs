//! Where a model's weights come from. Every format answers in llama.cpp's tensor names
//! (`token_embd.weight`, `blk.N.attn_q.weight`, ...), so one graph loads them all.

use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;

/// A provider of named weights, decoded to f32.
pub trait WeightSource {
    /// Whether the model has this tensor.
    fn has(&self, name: &str) -> bool;

    /// The tensor's values, row-major with `shape` (`[rows, cols]` for a matrix whose rows
    /// are output features; `[len]` for a vector). A different shape is an error.
    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
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

impl WeightSource for GgufFile {
    fn has(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }

    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let info = self
            .tensor(name)
            .ok_or_else(|| Error::Invalid(format!("model has no tensor {name}")))?;
        // GGUF lists dims fastest-first: [cols, rows].
        let found: Vec<usize> = info.dims().iter().rev().map(|&d| d as usize).collect();
        check_shape(name, &found, shape)?;
        GgufFile::tensor_f32(self, name)
    }
}
