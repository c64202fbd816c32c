//! Finding, loading and prompting a model: what `run` and `ppl` share.

use std::path::{Path, PathBuf};

use glim::gpu::{GpuContext, Precision};
use glim::model::graph::LoadOptions;
use glim::model::loader::{self, LoadedModel, DEFAULT_MODEL_FILE};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{bail, cache, CliResult};

/// The model to load: `given` (a path, else the name of a model in glim's cache, as
/// `glim list` shows it), else the default model; an error when it is not there.
pub fn resolve(given: Option<PathBuf>) -> CliResult<PathBuf> {
    resolve_in(given, cache::models_dir().ok().as_deref())
}

/// [`resolve`] with the models folder `models` (`None` when there is no home folder).
fn resolve_in(given: Option<PathBuf>, models: Option<&Path>) -> CliResult<PathBuf> {
    match given {
        // A folder holding one .gguf file (as `glim pull` leaves one) loads as that file.
        Some(path) if path.exists() => Ok(cache::loadable(&path).map_or(path, |(file, _)| file)),
        Some(path) => {
            let found = match (models, path.to_str()) {
                (Some(models), Some(name)) => cache::find(models, name)?,
                _ => None,
            };
            match (found, models) {
                (Some(entry), _) => Ok(entry.model),
                (None, Some(models)) => bail!(
                    "no model file at {} and no model of that name in {}: `glim list` shows the models there, `glim pull ORG/NAME` fetches one",
                    path.display(),
                    models.display()
                ),
                (None, None) => bail!("no model file at {}", path.display()),
            }
        }
        None => match models.map(|m| m.join(DEFAULT_MODEL_FILE)) {
            Some(path) if path.exists() => Ok(path),
            Some(path) => bail!(
                "no model at {}: run scripts/fetch-model.sh to fetch the default model, or pass a MODEL path or name (`glim list`, `glim pull`)",
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
    if let (Some(format), true) = (
        options.format,
        path.extension().is_some_and(|e| e == "gguf"),
    ) {
        eprintln!(
            "{}: converted to {format} as asked: every GGUF block decoded and rounded a second time, which costs accuracy (README: Accuracy); without --quant it runs as stored",
            loaded.name
        );
    }
    eprintln!(
        "{}: {} weights, {:.1} MiB, {precision} activations, context {} tokens, on {} ({})",
        loaded.name,
        model.weight_formats(),
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

    #[test]
    fn names_resolve_in_the_cache() {
        let models = std::env::temp_dir().join(format!("glim-resolve-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&models);
        let pulled = models.join("tiny-Q4_K_M");
        std::fs::create_dir_all(&pulled).unwrap();
        std::fs::write(pulled.join("tiny-Q4_K_M.gguf"), b"GGUF").unwrap();
        std::fs::write(
            pulled.join(cache::MANIFEST),
            br#"{"source":"org/tiny-GGUF","repo":"org/tiny-GGUF"}"#,
        )
        .unwrap();
        std::fs::write(models.join(DEFAULT_MODEL_FILE), b"GGUF").unwrap();
        let at = |given: Option<&str>| resolve_in(given.map(PathBuf::from), Some(&models));

        let file = pulled.join("tiny-Q4_K_M.gguf");
        assert_eq!(at(Some("tiny-Q4_K_M")).unwrap(), file);
        assert_eq!(at(Some("org/tiny-GGUF")).unwrap(), file);
        // An existing folder holding one .gguf file is that file.
        assert_eq!(at(pulled.to_str()).unwrap(), file);
        assert_eq!(at(None).unwrap(), models.join(DEFAULT_MODEL_FILE));
        assert_eq!(
            at(Some("SmolLM2-135M-Instruct.Q4_1")).unwrap(),
            models.join(DEFAULT_MODEL_FILE)
        );
        let err = at(Some("nosuch")).unwrap_err().0;
        assert!(
            err.contains("glim list") && err.contains("glim pull"),
            "{err}"
        );
        std::fs::remove_dir_all(&models).unwrap();
    }
}
