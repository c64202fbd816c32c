//! Finding, loading and prompting a model: what `run` and `ppl` share.

use std::path::{Path, PathBuf};

use glim::gpu::{GpuContext, Precision};
use glim::model::llama::LoadOptions;
use glim::model::loader::{self, default_model_path, LoadedModel};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{bail, CliResult};

/// The model to load: `given`, else the default model; an error when it is not there.
pub fn resolve(given: Option<PathBuf>) -> CliResult<PathBuf> {
    match given {
        Some(path) if path.exists() => Ok(path),
        Some(path) => bail!("no model file at {}", path.display()),
        None => match default_model_path() {
            Some(path) if path.exists() => Ok(path),
            Some(path) => bail!(
                "no model at {}: run scripts/fetch-model.sh to fetch the default model, or pass a MODEL path",
                path.display()
            ),
            None => bail!("neither GLIM_HOME nor HOME is set: pass a MODEL path"),
        },
    }
}

/// A progress bar on stderr counting tensors.
pub fn tensor_bar(message: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} tensors")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(message);
    bar
}

/// Opens the GPU the environment selects and loads `path` onto it, with a progress bar on
/// stderr, then prints one line about what was loaded.
pub fn load(path: &Path, options: &LoadOptions) -> CliResult<LoadedModel> {
    let gpu = GpuContext::from_env_blocking()?;
    let file_name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    let bar = tensor_bar(format!("loading {file_name}"));
    let loaded = loader::load(path, gpu, options, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let loaded = loaded?;
    let model = &loaded.model;
    let summary = &model.gpu().summary;
    let precision = match model.precision {
        Precision::F16 => "f16",
        Precision::F32 => "f32",
    };
    eprintln!(
        "{}: {} weights, {:.1} MiB, {precision} activations, context {} tokens, on {} ({})",
        loaded.name,
        model.format.name(),
        model.weight_bytes() as f64 / (1024.0 * 1024.0),
        model.context,
        summary.name,
        summary.backend,
    );
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_explicit_model_is_an_error() {
        let err = resolve(Some(PathBuf::from("/nonexistent/glim/model.gguf"))).unwrap_err();
        assert!(err.0.contains("/nonexistent/glim/model.gguf"), "{}", err.0);
    }
}
