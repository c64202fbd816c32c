//! Safetensors files (Hugging Face checkpoints): every `*.safetensors` file of a folder,
//! memory-mapped and indexed by tensor name, read as f32 from f32, f16 or bf16.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::error::{Error, Result};

/// Where one tensor's bytes are.
struct Entry {
    file: usize,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    range: std::ops::Range<usize>,
}

/// The `*.safetensors` files of one folder (a checkpoint split into shards), as one set of
/// named tensors.
pub struct SafetensorsFiles {
    files: Vec<memmap2::Mmap>,
    index: HashMap<String, Entry>,
}

/// A tensor a safetensors header lists: its name, type, shape and byte range in the file.
pub type HeaderEntry = (
    String,
    safetensors::Dtype,
    Vec<usize>,
    std::ops::Range<usize>,
);

/// The tensors the header of the safetensors file `bytes` lists, each checked to lie
/// within the file.
pub fn read_header(bytes: &[u8]) -> Result<Vec<HeaderEntry>> {
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::Invalid(format!("not a valid safetensors file: {e}")))?;
    let data_start = 8 + header_len;
    metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (begin, end) = info.data_offsets;
            let range = data_start + begin..data_start + end;
            if range.end > bytes.len() {
                return Err(Error::Invalid(format!(
                    "tensor {name} runs past the end of the file"
                )));
            }
            Ok((name, info.dtype, info.shape.clone(), range))
        })
        .collect()
}

impl SafetensorsFiles {
    /// Maps every `*.safetensors` file in `dir`, checking each header against its file.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::Invalid(format!("cannot list {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::Invalid(format!(
                "{} holds no .safetensors files",
                dir.display()
            )));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in &paths {
            let file = super::files::open_regular(path)
                .map_err(|e| Error::Invalid(format!("cannot open {}: {e}", path.display())))?;
            // SAFETY: read-only private map; like any mmap loader, glim assumes the file is
            // not truncated while the model loads.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| Error::Invalid(format!("cannot map {}: {e}", path.display())))?;
            let tensors = read_header(&map).map_err(|e| match e {
                Error::Invalid(m) => Error::Invalid(format!("{}: {m}", path.display())),
                other => other,
            })?;
            for (name, dtype, shape, range) in tensors {
                let entry = Entry {
                    file: files.len(),
                    dtype,
                    shape,
                    range,
                };
                index.insert(name, entry);
            }
            files.push(map);
        }
        Ok(Self { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The tensor's shape as the file gives it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|e| e.shape.as_slice())
    }

    /// The tensor's values as f32, row-major.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let entry = self
            .index
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("model has no tensor {name}")))?;
        let bytes = &self.files[entry.file][entry.range.clone()];
        let n: usize = entry.shape.iter().product();
        let width = match entry.dtype {
            safetensors::Dtype::F32 => 4,
            safetensors::Dtype::F16 | safetensors::Dtype::BF16 => 2,
            other => {
                return Err(Error::Unsupported(format!(
                    "tensor {name} has dtype {other:?} (glim reads f32, f16, bf16)"
                )))
            }
        };
        if bytes.len() != n * width {
            return Err(Error::Invalid(format!(
                "tensor {name} holds {} bytes, its shape needs {}",
                bytes.len(),
                n * width
            )));
        }
        let values = match entry.dtype {
            safetensors::Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            safetensors::Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        };
        Ok(values)
    }
}
