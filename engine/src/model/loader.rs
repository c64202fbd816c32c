//! One entry point for every model format the front ends accept: a path in, a model on the
//! GPU with its tokenizer and chat template out. Native only: the browser loads from bytes.

use std::path::{Path, PathBuf};

use super::config::ModelConfig;
use super::graph::{LoadOptions, Model};
use super::hf::HfModel;
use super::mlc::{mlc_text, MlcModel};
use super::source::{GgufWeights, WeightSource};
use crate::error::{Error, Result};
use crate::formats::files::{read_capped, read_json_file};
use crate::formats::gguf::GgufFile;
use crate::formats::mlc::{MlcFolder, INDEX_FILE, LEGACY_INDEX_FILE};
use crate::formats::MAX_JSON_BYTES;
use crate::gpu::GpuContext;
use crate::text::{ChatTemplate, Tokenizer};

/// The file `scripts/fetch-model.sh` fetches.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// An environment variable's value, unless unset or empty (as the shell's `${VAR:-...}`).
fn var_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// glim's data folder: `$GLIM_HOME`, else `$XDG_CACHE_HOME/glim`, else `~/.cache/glim`
/// (the rule `scripts/fetch-model.sh` follows).
pub fn glim_home() -> Option<PathBuf> {
    var_path("GLIM_HOME").or_else(|| {
        var_path("XDG_CACHE_HOME")
            .or_else(|| var_path("HOME").map(|home| home.join(".cache")))
            .map(|cache| cache.join("glim"))
    })
}

/// Where `scripts/fetch-model.sh` puts the default model.
pub fn default_model_path() -> Option<PathBuf> {
    glim_home().map(|home| home.join("models").join(DEFAULT_MODEL_FILE))
}

/// A model ready to generate with.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// The model's name from its metadata, or the file name.
    pub name: String,
    /// An MLC folder's `mlc-chat-config.json` (its sampling defaults, among others).
    pub chat_config: Option<serde_json::Value>,
}

/// Whether `dir` is an MLC model folder (it has a shard index).
pub fn is_mlc_folder(dir: &Path) -> bool {
    [INDEX_FILE, LEGACY_INDEX_FILE]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// The file or folder a model was opened from.
pub enum ModelFile {
    Gguf(GgufFile),
    Hf(HfModel),
    Mlc(MlcModel<MlcFolder>),
}

/// A model opened from disk but not on the GPU yet: what loading it and `glim quantize`
/// both start from.
pub struct OpenedModel {
    pub file: ModelFile,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// The model's name from its metadata, or the file or folder name.
    pub name: String,
}

impl OpenedModel {
    /// The model's weights, in glim's names and Hugging Face row order.
    pub fn weights(&self) -> Box<dyn WeightSource + '_> {
        match &self.file {
            ModelFile::Gguf(file) => Box::new(GgufWeights::new(file, &self.config)),
            ModelFile::Hf(hf) => Box::new(hf),
            ModelFile::Mlc(mlc) => Box::new(mlc),
        }
    }
}

/// Opens the model at `path`: a `.gguf` file, an MLC model folder (`tensor-cache.json` or
/// `ndarray-cache.json`, `params_shard_*.bin`, `mlc-chat-config.json`, `tokenizer.json`) or
/// a Hugging Face folder (`config.json`, `tokenizer.json`, `*.safetensors`).
pub fn open(path: &Path) -> Result<OpenedModel> {
    if path.is_dir() && is_mlc_folder(path) {
        return open_mlc(path);
    }
    if path.is_dir() {
        // A missing tokenizer first (the quickest to tell), then the weights' errors.
        tokenizer_path(path)?;
        let hf = HfModel::open(path)?;
        let tokenizer = folder_tokenizer(path)?;
        return Ok(OpenedModel {
            config: hf.config.clone(),
            template: ChatTemplate::from_tokenizer(&tokenizer)?,
            tokenizer,
            name: folder_name(path),
            file: ModelFile::Hf(hf),
        });
    }
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "no model file at {}",
            path.display()
        )));
    }
    let file = GgufFile::open(path)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let name = file
        .metadata("general.name")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            path.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        });
    Ok(OpenedModel {
        config: ModelConfig::from_gguf(&file)?,
        template: ChatTemplate::from_tokenizer(&tokenizer)?,
        tokenizer,
        name,
        file: ModelFile::Gguf(file),
    })
}

/// Loads the model at `path` (see [`open`]) onto `ctx`. `progress(done, total)` is called
/// per tensor.
pub fn load(
    path: &Path,
    ctx: GpuContext,
    options: &LoadOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel> {
    let opened = open(path)?;
    let model = Model::load(
        ctx,
        opened.config.clone(),
        &*opened.weights(),
        options,
        progress,
    )?;
    let chat_config = match opened.file {
        ModelFile::Mlc(mlc) => Some(mlc.chat_config),
        ModelFile::Gguf(_) | ModelFile::Hf(_) => None,
    };
    checked(LoadedModel {
        model,
        tokenizer: opened.tokenizer,
        template: opened.template,
        name: opened.name,
        chat_config,
    })
}

/// A folder's `tokenizer.json`, or an error when it has none.
fn tokenizer_path(dir: &Path) -> Result<PathBuf> {
    let tokenizer_json = dir.join("tokenizer.json");
    if !tokenizer_json.exists() {
        return Err(Error::Invalid(format!(
            "{} has no tokenizer.json",
            dir.display()
        )));
    }
    Ok(tokenizer_json)
}

/// A folder's tokenizer: `tokenizer.json`, with `tokenizer_config.json` when present.
fn folder_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let tokenizer_json = tokenizer_path(dir)?;
    let mut tokenizer = Tokenizer::from_file(&tokenizer_json)?;
    let config_path = dir.join("tokenizer_config.json");
    if let Some(config) = read_capped(&config_path, MAX_JSON_BYTES)? {
        tokenizer = tokenizer
            .with_config_json(&config)
            .map_err(|e| Error::Invalid(format!("{}: {e}", config_path.display())))?;
    }
    Ok(tokenizer)
}

fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn open_mlc(dir: &Path) -> Result<OpenedModel> {
    let mlc = MlcModel::open(dir)?;
    let tokenizer_json = read_json_file(&tokenizer_path(dir)?)?;
    let tokenizer_config = read_capped(&dir.join("tokenizer_config.json"), MAX_JSON_BYTES)?;
    let (tokenizer, template) = mlc_text(
        &tokenizer_json,
        tokenizer_config.as_deref(),
        &mlc.chat_config,
    )
    .map_err(|e| match e {
        Error::Invalid(m) => Error::Invalid(format!("{}: {m}", dir.display())),
        other => other,
    })?;
    Ok(OpenedModel {
        config: mlc.config.clone(),
        tokenizer,
        template,
        name: folder_name(dir),
        file: ModelFile::Mlc(mlc),
    })
}

/// `loaded`, once its tokenizer is known to fit its model.
fn checked(mut loaded: LoadedModel) -> Result<LoadedModel> {
    loaded.model.fit_tokenizer(&loaded.tokenizer)?;
    Ok(loaded)
}
