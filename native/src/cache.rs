//! glim's model cache, `<home>/models/` (see `glim::model::loader::glim_home`): what
//! `glim list` shows, what `glim rm` removes and what a model name given to `glim run` means.
//!
//! Every entry is one child of the models folder, named by its file or folder name:
//! - `NAME.gguf`, a GGUF file (where `scripts/fetch-model.sh` puts the default model);
//! - `NAME/` holding one `.gguf` file (what `glim pull` makes of a GGUF file);
//! - `NAME/`, an MLC model folder (`tensor-cache.json` or `ndarray-cache.json`);
//! - `NAME/`, a Hugging Face folder (`config.json` and `*.safetensors`).
//!
//! A pulled entry also holds [`MANIFEST`], saying where it came from, so it can be named by
//! its repo id too (`org/name`). Names starting with `.` are not entries: `glim pull` stages
//! its downloads under [`STAGING`] and moves a model into place only once it is whole.

use std::fs;
use std::path::{Path, PathBuf};

use glim::model::loader::{glim_home, is_mlc_folder};

use crate::{bail, CliError, CliResult};

/// The file in a pulled entry recording its source (JSON: `source`, `repo`, `revision`,
/// `files`).
pub const MANIFEST: &str = ".glim-pull.json";

/// The folder of the models folder where `glim pull` keeps unfinished downloads.
pub const STAGING: &str = ".pull";

/// `<home>/models`.
pub fn models_dir() -> CliResult<PathBuf> {
    match glim_home() {
        Some(home) => Ok(home.join("models")),
        None => bail!("neither GLIM_HOME nor HOME is set, so glim has no model cache"),
    }
}

/// How an entry loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gguf,
    Mlc,
    Hf,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Gguf => "gguf",
            Kind::Mlc => "mlc",
            Kind::Hf => "hf",
        }
    }
}

/// One model in the cache.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The folder's name, or a GGUF file's name without `.gguf`.
    pub name: String,
    /// The child of the models folder: what `glim rm` removes.
    pub path: PathBuf,
    /// What loads: the `.gguf` file or the folder.
    pub model: PathBuf,
    pub kind: Kind,
    /// Bytes on disk, every file counted.
    pub size: u64,
    /// Where `glim pull` got it (`org/name:file@rev` or a URL), from its manifest.
    pub source: Option<String>,
    /// The Hugging Face repo id it was pulled from, from its manifest.
    pub repo: Option<String>,
}

fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The one `.gguf` file directly in `dir`, if it holds exactly one.
fn single_gguf(dir: &Path) -> Option<PathBuf> {
    let mut ggufs = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_gguf(p));
    let first = ggufs.next()?;
    ggufs.next().is_none().then_some(first)
}

/// Whether `dir` is a Hugging Face folder: `config.json` and at least one `*.safetensors`.
fn is_hf_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("safetensors"))
            })
        })
}

/// What loads from `path` and how: a `.gguf` file; an MLC or Hugging Face folder; a folder
/// holding a single `.gguf` file, that file. `None` for anything else.
pub fn loadable(path: &Path) -> Option<(PathBuf, Kind)> {
    if path.is_file() {
        return is_gguf(path).then(|| (path.to_path_buf(), Kind::Gguf));
    }
    if !path.is_dir() {
        return None;
    }
    if is_mlc_folder(path) {
        Some((path.to_path_buf(), Kind::Mlc))
    } else if is_hf_folder(path) {
        Some((path.to_path_buf(), Kind::Hf))
    } else {
        single_gguf(path).map(|file| (file, Kind::Gguf))
    }
}

/// Bytes in `path`, a file or a folder (symbolic links are not followed).
pub fn disk_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_size(&e.path())).sum())
        .unwrap_or(0)
}

/// What a pulled entry's manifest says: (source, repo).
fn read_manifest(dir: &Path) -> (Option<String>, Option<String>) {
    let Ok(bytes) = fs::read(dir.join(MANIFEST)) else {
        return (None, None);
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return (None, None);
    };
    let field = |key: &str| json.get(key).and_then(|v| v.as_str()).map(str::to_string);
    (field("source"), field("repo"))
}

fn entry(path: PathBuf) -> Option<Entry> {
    let file_name = path.file_name()?.to_str()?.to_string();
    if file_name.starts_with('.') || file_name.ends_with(".part") {
        return None;
    }
    let (model, kind) = loadable(&path)?;
    let (name, (source, repo)) = if path.is_dir() {
        (file_name, read_manifest(&path))
    } else {
        let stem = path.file_stem()?.to_str()?.to_string();
        (stem, (None, None))
    };
    Some(Entry {
        name,
        size: disk_size(&path),
        path,
        model,
        kind,
        source,
        repo,
    })
}

/// The models in `models`, by name. A missing folder has none.
pub fn list(models: &Path) -> Vec<Entry> {
    let mut entries: Vec<Entry> = fs::read_dir(models)
        .map(|dir| dir.flatten().filter_map(|e| entry(e.path())).collect())
        .unwrap_or_default();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

/// The entry `name` means: an entry's name, its file or folder name (`X.gguf`), or the repo
/// id or source it was pulled from. An error when a repo id names several entries.
pub fn find(models: &Path, name: &str) -> CliResult<Option<Entry>> {
    let entries = list(models);
    if let Some(e) = entries.iter().find(|e| e.name == name) {
        return Ok(Some(e.clone()));
    }
    if let Some(e) = entries
        .iter()
        .find(|e| e.path.file_name().is_some_and(|f| f == name))
    {
        return Ok(Some(e.clone()));
    }
    let pulled: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            e.source.as_deref() == Some(name)
                || e.repo
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(name))
        })
        .collect();
    match pulled.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        several => bail!(
            "{name} names {} models in the cache: {}; give one of those names",
            several.len(),
            several
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `bytes` for people: `812 B`, `3.4 KiB`, `135.0 MiB`, `4.1 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `glim list`: a table of the cached models on stdout.
pub fn print_list() -> CliResult<()> {
    let models = models_dir()?;
    let entries = list(&models);
    if entries.is_empty() {
        println!(
            "no models in {} yet: fetch one with `glim pull ORG/NAME`",
            models.display()
        );
    } else {
        let width = entries
            .iter()
            .map(|e| e.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        println!("{:width$}  {:>10}  KIND  PATH", "NAME", "SIZE");
        for e in &entries {
            println!(
                "{:width$}  {:>10}  {:4}  {}",
                crate::shown(&e.name),
                human_size(e.size),
                e.kind.label(),
                crate::shown(&e.model.display().to_string())
            );
        }
    }
    // A folder per unfinished pull (beside the pulls' lock files).
    let unfinished = fs::read_dir(models.join(STAGING))
        .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0);
    if unfinished > 0 {
        eprintln!(
            "{unfinished} unfinished pull(s) in {}: rerun `glim pull` to resume",
            models.join(STAGING).display()
        );
    }
    Ok(())
}

/// Whether `name` reads as a path rather than a model name.
fn path_like(name: &str) -> bool {
    name.is_empty()
        || name.contains("..")
        || name.contains('/')
        || name.contains('\\')
        || name.starts_with('.')
        || Path::new(name).is_absolute()
}

/// `glim rm NAME`: removes one entry of the models folder, and its unfinished downloads.
pub fn remove(name: &str) -> CliResult<()> {
    let models = models_dir()?;
    let Some(entry) = find(&models, name)? else {
        if path_like(name) {
            bail!(
                "refusing to remove {name}: `glim rm` takes a model's name as `glim list` shows it, not a path"
            );
        }
        bail!(
            "no model named {name} in {}: `glim list` shows the models there",
            models.display()
        );
    };
    // Only ever a child of the models folder, found by listing it.
    if entry.path.parent() != Some(models.as_path()) {
        bail!(
            "refusing to remove {}: not in {}",
            entry.path.display(),
            models.display()
        );
    }
    let meta = fs::symlink_metadata(&entry.path)
        .map_err(|e| CliError(format!("cannot remove {}: {e}", entry.path.display())))?;
    let removed = if meta.is_dir() {
        fs::remove_dir_all(&entry.path)
    } else {
        fs::remove_file(&entry.path)
    };
    removed.map_err(|e| CliError(format!("cannot remove {}: {e}", entry.path.display())))?;
    let staged = models.join(STAGING).join(&entry.name);
    if staged.is_dir() {
        let _ = fs::remove_dir_all(&staged);
    }
    println!(
        "removed {} ({}, {})",
        entry.name,
        human_size(entry.size),
        entry.path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty folder under the temp folder.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("glim-cache-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn lists_every_layout_and_skips_the_rest() {
        let models = scratch("list");
        write(&models.join("Default.Q4_1.gguf"), &[1; 10]);
        write(&models.join("pulled/pulled.Q8_0.gguf"), &[2; 20]);
        write(
            &models.join("pulled/.glim-pull.json"),
            br#"{"source":"org/pulled-GGUF:pulled.Q8_0.gguf","repo":"org/pulled-GGUF"}"#,
        );
        write(&models.join("mlc/tensor-cache.json"), b"{}");
        write(&models.join("mlc/params_shard_0.bin"), &[0; 30]);
        write(&models.join("hf/config.json"), b"{}");
        write(&models.join("hf/model.safetensors"), &[0; 5]);
        write(&models.join("two/a.gguf"), &[0; 1]);
        write(&models.join("two/b.gguf"), &[0; 1]);
        write(&models.join("notes.txt"), b"x");
        write(&models.join(".pull/half/half.gguf.part"), &[0; 3]);
        write(&models.join("x.gguf.part"), &[0; 3]);

        let entries = list(&models);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["Default.Q4_1", "hf", "mlc", "pulled"]);
        let pulled = &entries[3];
        assert_eq!(pulled.kind, Kind::Gguf);
        assert_eq!(pulled.model, models.join("pulled/pulled.Q8_0.gguf"));
        assert_eq!(pulled.repo.as_deref(), Some("org/pulled-GGUF"));
        assert_eq!(entries[0].size, 10);
        assert_eq!(entries[0].model, models.join("Default.Q4_1.gguf"));
        assert_eq!(entries[2].kind, Kind::Mlc);
        assert_eq!(entries[2].size, 32);
        assert_eq!(entries[1].kind, Kind::Hf);
        assert!(list(&models.join("missing")).is_empty());
        fs::remove_dir_all(&models).unwrap();
    }

    #[test]
    fn finds_by_name_file_name_and_repo() {
        let models = scratch("find");
        write(&models.join("Default.Q4_1.gguf"), &[1; 10]);
        for (dir, repo) in [
            ("a-Q4_K_M", "org/a-GGUF"),
            ("a-Q8_0", "org/a-GGUF"),
            ("b", "org/b"),
        ] {
            write(&models.join(dir).join(format!("{dir}.gguf")), &[0; 4]);
            write(
                &models.join(dir).join(MANIFEST),
                format!(r#"{{"source":"{repo}","repo":"{repo}"}}"#).as_bytes(),
            );
        }
        let found = |name: &str| find(&models, name).unwrap().map(|e| e.name);
        assert_eq!(found("Default.Q4_1").as_deref(), Some("Default.Q4_1"));
        assert_eq!(found("Default.Q4_1.gguf").as_deref(), Some("Default.Q4_1"));
        assert_eq!(found("org/b").as_deref(), Some("b"));
        assert_eq!(found("ORG/B").as_deref(), Some("b"));
        assert_eq!(found("a-Q8_0").as_deref(), Some("a-Q8_0"));
        assert_eq!(found("nothing"), None);
        assert_eq!(found("../Default.Q4_1"), None);
        let err = find(&models, "org/a-GGUF").unwrap_err();
        assert!(err.0.contains("a-Q4_K_M, a-Q8_0"), "{}", err.0);
        fs::remove_dir_all(&models).unwrap();
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(135 * 1024 * 1024), "135.0 MiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn paths_are_not_names() {
        for name in ["", "..", "../x", "a/b", "/etc", ".pull", "a\\b"] {
            assert!(path_like(name), "{name}");
        }
        assert!(!path_like("SmolLM2-135M-Instruct.Q4_1"));
    }
}
