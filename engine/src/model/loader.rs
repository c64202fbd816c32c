//! One entry point for every model format the front ends accept: a path in, a model on the
//! GPU with its tokenizer and chat template out. Native only: the browser loads from bytes.

use std::path::{Path, PathBuf};

use super::hf::HfModel;
use super::llama::{Llama, LoadOptions};
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
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
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// The model's name from its metadata, or the file name.
    pub name: String,
}

/// Loads the model at `path`: a `.gguf` file, or a Hugging Face folder (`config.json`,
/// `tokenizer.json`, `*.safetensors`). `progress(done, total)` is called per tensor.
pub fn load(
    path: &Path,
    ctx: GpuContext,
    options: &LoadOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel> {
    if path.is_dir() {
        return load_hf(path, ctx, options, progress);
    }
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "no model file at {}",
            path.display()
        )));
    }
    let file = GgufFile::open(path)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let template = ChatTemplate::from_tokenizer(&tokenizer)?;
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
    let model = Llama::from_gguf(ctx, &file, options, progress)?;
    checked(LoadedModel {
        model,
        tokenizer,
        template,
        name,
    })
}

fn load_hf(
    dir: &Path,
    ctx: GpuContext,
    options: &LoadOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel> {
    let tokenizer_json = dir.join("tokenizer.json");
    if !tokenizer_json.exists() {
        return Err(Error::Invalid(format!(
            "{} has no tokenizer.json",
            dir.display()
        )));
    }
    let weights = HfModel::open(dir)?;
    let mut tokenizer = Tokenizer::from_file(&tokenizer_json)?;
    if let Ok(config) = std::fs::read(dir.join("tokenizer_config.json")) {
        tokenizer = tokenizer.with_config_json(&config)?;
    }
    let template = ChatTemplate::from_tokenizer(&tokenizer)?;
    let name = dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let model = Llama::load(ctx, weights.config.clone(), &weights, options, progress)?;
    checked(LoadedModel {
        model,
        tokenizer,
        template,
        name,
    })
}

/// `loaded`, once its tokenizer is known to fit its model.
fn checked(mut loaded: LoadedModel) -> Result<LoadedModel> {
    let (model_vocab, tokens) = (
        loaded.model.config.vocab_size,
        loaded.tokenizer.vocab_size(),
    );
    if model_vocab < tokens {
        return Err(Error::Invalid(format!(
            "the tokenizer has {tokens} tokens but the model only {model_vocab}"
        )));
    }
    // Output rows past the tokenizer's vocabulary are padding: never generate them.
    loaded.model.limit_output_vocab(tokens);
    Ok(loaded)
}
