//! Hugging Face model folders: `config.json`, `tokenizer.json` (+ `tokenizer_config.json`)
//! and one or more `*.safetensors` files holding f32, f16 or bf16 weights.
//!
//! Weights keep HF's layout (`[out_features, in_features]`, Q/K rows unpermuted), so these
//! models rotate with [`RopeMode::Halves`], unlike GGUF files.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::ModelConfig;
use super::source::{check_shape, WeightSource};
use crate::error::{Error, Result};
use crate::formats::safetensors::SafetensorsFiles;

/// An opened HF folder: its config and memory-mapped weight files.
pub struct HfModel {
    pub dir: PathBuf,
    pub config: ModelConfig,
    /// `config.json` as parsed, for callers that need more of it.
    pub config_json: Value,
    files: SafetensorsFiles,
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = crate::formats::files::read_json_file(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Invalid(format!("{} is not valid JSON: {e}", path.display())))
}

impl HfModel {
    /// Opens a folder, checking every safetensors header against its file.
    pub fn open(dir: &Path) -> Result<Self> {
        let config_json = read_json(&dir.join("config.json"))?;
        let mut config = ModelConfig::from_hf_json(&config_json)?;
        let files = SafetensorsFiles::open_dir(dir)?;
        // Some checkpoints tie embeddings without saying so: no lm_head means tied.
        if !files.contains("lm_head.weight") {
            config.tied_embeddings = true;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            config_json,
            files,
        })
    }
}

impl WeightSource for HfModel {
    fn has(&self, name: &str) -> bool {
        self.config
            .family
            .hf_name(name)
            .is_some_and(|n| self.files.contains(&n))
    }

    fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let hf = self
            .config
            .family
            .hf_name(name)
            .ok_or_else(|| Error::Invalid(format!("no HF name for tensor {name}")))?;
        let found = self
            .files
            .shape(&hf)
            .ok_or_else(|| Error::Invalid(format!("model has no tensor {hf}")))?;
        check_shape(&hf, found, shape)?;
        let mut values = self.files.tensor_f32(&hf)?;
        // Norms the model applies as `1 + w` (Gemma) run as `x * w`.
        let offset = self.config.family.hf_norm_offset();
        if offset != 0.0 && hf.ends_with("norm.weight") {
            values.iter_mut().for_each(|v| *v += offset);
        }
        Ok(values)
    }
}
