//! `glim pull SOURCE`: download a model from the Hugging Face Hub (or any http(s) URL) into
//! glim's cache, where `glim run NAME` finds it.
//!
//! SOURCE is `ORG/NAME[@REVISION][:FILE]` or an `http://` / `https://` URL of a `.gguf`
//! file. FILE is a `.gguf` file of the repo, a quantization tag naming one (`Q8_0`), or the
//! folder of an MLC model in the repo. Files come from the Hub's layout,
//! `{HF_ENDPOINT}/{ORG/NAME}/resolve/{REVISION}/{FILE}`, the list of them from
//! `{HF_ENDPOINT}/api/models/{ORG/NAME}/tree/{REVISION}?recursive=true`.
//!
//! Downloads land in `models/.pull/NAME/` as `.part` files, a few at a time under one
//! progress bar; an interrupted one continues where it stopped (an HTTP range request), on
//! the spot or when the pull is run again. Each file's size, and its sha256 where the Hub
//! gives one (LFS files), is checked; only when every file is whole does the folder move to
//! `models/NAME/`, so `glim list` never shows half a model.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::cache::{self, human_size, MANIFEST, STAGING};
use crate::{bail, CliError, CliResult, PullArgs};

/// The Hub when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Files downloaded at once.
const THREADS: usize = 4;

/// Tries per file before a broken connection fails the pull (each continues the last).
const ATTEMPTS: u32 = 3;

/// Most redirects one request follows.
const MAX_REDIRECTS: usize = 10;
/// Most files a repo's listing may hold (real ones hold hundreds).
const MAX_LISTED_FILES: usize = 100_000;

/// GGUF quantizations glim decodes, in the order `glim pull` prefers them (llama.cpp's
/// `-hf` default first).
const GGUF_PREFERENCE: [&str; 22] = [
    "Q4_K_M", "Q4_K_S", "Q4_K", "Q4_0", "Q4_1", "IQ4_XS", "IQ4_NL", "Q5_K_M", "Q5_K_S", "Q5_K",
    "Q5_0", "Q5_1", "Q6_K", "Q8_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q3_K", "Q2_K", "F16", "BF16",
    "F32",
];

/// What to pull.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Repo {
        repo: String,
        revision: String,
        file: Option<String>,
    },
    Url(String),
}

/// Reads SOURCE: `ORG/NAME[@REVISION][:FILE]` or an http(s) URL.
fn parse_source(source: &str) -> CliResult<Source> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return Ok(Source::Url(source.to_string()));
    }
    let bad = || {
        CliError(format!(
            "{source} is not a Hugging Face repo (ORG/NAME[@REVISION][:FILE]) or an http(s) URL"
        ))
    };
    // A git revision holds no ':', so the first one starts FILE.
    let (repo_rev, file) = match source.split_once(':') {
        Some((repo_rev, file)) if !file.is_empty() => (repo_rev, Some(file.to_string())),
        Some(_) => return Err(bad()),
        None => (source, None),
    };
    let (repo, revision) = match repo_rev.split_once('@') {
        Some((repo, rev)) if !rev.is_empty() => (repo, rev),
        Some(_) => return Err(bad()),
        None => (repo_rev, "main"),
    };
    // Checked before any request: no `..` reaches the Hub to be resolved there.
    if !plain_path(revision) || file.as_deref().is_some_and(|f| !plain_path(f)) {
        return Err(bad());
    }
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    match repo.split_once('/') {
        Some((org, name)) if part_ok(org) && part_ok(name) => Ok(Source::Repo {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file,
        }),
        _ => Err(bad()),
    }
}

/// Whether `path` is a plain relative path: `/`-separated names, none empty, `.` or `..`,
/// and no control characters or backslashes.
fn plain_path(path: &str) -> bool {
    path.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && !part.chars().any(|c| c.is_control() || c == '\\')
    })
}

/// `text` percent-encoded for a URL path, keeping `/` when `keep_slash`.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` with `%XX` escapes decoded (invalid ones kept as they are).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A file of a repo, as the Hub's tree API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RemoteFile {
    path: String,
    size: u64,
    /// LFS files only: the Hub gives no checksum for the others.
    sha256: Option<String>,
}

/// The files in the Hub's tree API answer (a JSON array); folders are skipped.
fn parse_tree(json: &str) -> CliResult<Vec<RemoteFile>> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| CliError(format!("the Hub's file list is not JSON: {e}")))?;
    let Some(items) = value.as_array() else {
        bail!("the Hub's file list is not a JSON array");
    };
    let mut files = Vec::new();
    for item in items {
        if item.get("type").and_then(|t| t.as_str()) != Some("file") {
            continue;
        }
        let Some(path) = item.get("path").and_then(|p| p.as_str()) else {
            bail!("the Hub's file list has a file without a path");
        };
        if !plain_path(path) {
            bail!(
                "the Hub's file list has a file path glim refuses: \"{}\"",
                crate::shown(path)
            );
        }
        let lfs = item.get("lfs");
        let size = lfs
            .and_then(|l| l.get("size"))
            .or_else(|| item.get("size"))
            .and_then(|s| s.as_u64())
            .ok_or_else(|| CliError(format!("the Hub's file list gives no size for {path}")))?;
        let sha256 = lfs
            .and_then(|l| l.get("oid"))
            .and_then(|o| o.as_str())
            .map(|o| o.trim_start_matches("sha256:").to_ascii_lowercase())
            .filter(|o| o.len() == 64 && o.bytes().all(|b| b.is_ascii_hexdigit()));
        files.push(RemoteFile {
            path: path.to_string(),
            size,
            sha256,
        });
    }
    Ok(files)
}

/// The `rel="next"` address of a `Link` header (how the Hub pages long file lists).
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// Whether `file_name` holds `tag` as a word of its own (case aside): `x-Q4_K_M.gguf`
/// holds `Q4_K_M` but not `Q4_K`.
fn has_tag(file_name: &str, tag: &str) -> bool {
    let name = file_name.to_ascii_uppercase();
    let tag = tag.to_ascii_uppercase();
    name.match_indices(&tag).any(|(at, _)| {
        let before = name[..at].chars().next_back();
        let after = name[at + tag.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_gguf(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".gguf")
}

/// A GGUF file glim could load alone: not a vision projector, not one part of a split model.
fn whole_gguf(path: &str) -> bool {
    let name = base_name(path).to_ascii_lowercase();
    let split = name
        .strip_suffix(".gguf")
        .and_then(|stem| stem.rsplit_once("-of-"))
        .is_some_and(|(first, count)| {
            count.len() == 5
                && count.bytes().all(|b| b.is_ascii_digit())
                && first.len() > 6
                && first[first.len() - 6..].starts_with('-')
                && first[first.len() - 5..].bytes().all(|b| b.is_ascii_digit())
        });
    is_gguf(path) && !split && !name.starts_with("mmproj")
}

/// What a pull fetches: the entry's name, the files (repo path, path in the entry) and a
/// note for the user.
#[derive(Debug)]
struct Choice {
    name: String,
    kind: cache::Kind,
    files: Vec<(RemoteFile, String)>,
    note: Option<String>,
}

/// The folders of `files` holding an MLC model (`mlc-chat-config.json` and a shard index),
/// as path prefixes (`""` for the top).
fn mlc_folders(files: &[RemoteFile]) -> Vec<String> {
    let paths: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let mut folders: Vec<String> = files
        .iter()
        .filter_map(|f| f.path.strip_suffix("mlc-chat-config.json"))
        .filter(|prefix| prefix.is_empty() || prefix.ends_with('/'))
        .filter(|prefix| {
            ["tensor-cache.json", "ndarray-cache.json"]
                .iter()
                .any(|index| paths.contains(format!("{prefix}{index}").as_str()))
        })
        .map(str::to_string)
        .collect();
    folders.sort();
    folders
}

/// Every file of the MLC model in `folder` (a prefix), dotfiles aside.
fn mlc_choice(repo_name: &str, files: &[RemoteFile], folder: &str) -> Choice {
    let name = match folder.trim_end_matches('/') {
        "" => repo_name.to_string(),
        sub => base_name(sub).to_string(),
    };
    let files = files
        .iter()
        .filter_map(|f| {
            let rel = f.path.strip_prefix(folder)?;
            (!rel.split('/').any(|c| c.starts_with('.'))).then(|| (f.clone(), rel.to_string()))
        })
        .collect();
    Choice {
        name,
        kind: cache::Kind::Mlc,
        files,
        note: None,
    }
}

fn gguf_choice(file: &RemoteFile, note: Option<String>) -> Choice {
    let name = base_name(&file.path);
    Choice {
        name: name[..name.len() - ".gguf".len()].to_string(),
        kind: cache::Kind::Gguf,
        files: vec![(file.clone(), name.to_string())],
        note,
    }
}

fn listing(files: &[&RemoteFile]) -> String {
    files
        .iter()
        .map(|f| f.path.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to fetch of `repo` (whose files are `files`) when `wanted` names a file, a
/// quantization or a folder, or nothing: an MLC model, else a GGUF file (the first of
/// [`GGUF_PREFERENCE`] there is), else a Hugging Face safetensors model.
fn choose(repo: &str, files: &[RemoteFile], wanted: Option<&str>) -> CliResult<Choice> {
    let repo_name = base_name(repo);
    let ggufs: Vec<&RemoteFile> = files.iter().filter(|f| is_gguf(&f.path)).collect();
    let folders = mlc_folders(files);
    if let Some(wanted) = wanted {
        if let Some(file) = files.iter().find(|f| f.path == wanted) {
            if !is_gguf(&file.path) {
                bail!(
                    "{repo}:{wanted} is not a .gguf file: glim pulls one .gguf file, an MLC model folder or a whole safetensors model"
                );
            }
            return Ok(gguf_choice(file, None));
        }
        let folder = format!("{}/", wanted.trim_end_matches('/'));
        if folders.contains(&folder) {
            return Ok(mlc_choice(repo_name, files, &folder));
        }
        let tagged: Vec<&RemoteFile> = ggufs
            .iter()
            .copied()
            .filter(|f| whole_gguf(&f.path) && has_tag(base_name(&f.path), wanted))
            .collect();
        return match tagged.as_slice() {
            [one] => Ok(gguf_choice(one, None)),
            [] if ggufs.is_empty() => bail!("{repo} has no file {wanted} (and no .gguf files)"),
            [] => bail!(
                "{repo} has no file or quantization {wanted}; its GGUF files: {}",
                listing(&ggufs)
            ),
            several => bail!(
                "{wanted} matches {} files of {repo}: {}; name one with {repo}:FILE",
                several.len(),
                listing(several)
            ),
        };
    }
    match folders.as_slice() {
        [one] => return Ok(mlc_choice(repo_name, files, one)),
        [] => {}
        several => bail!(
            "{repo} holds {} MLC models ({}); name one with {repo}:FOLDER",
            several.len(),
            several.join(", ")
        ),
    }
    if !ggufs.is_empty() {
        let whole: Vec<&RemoteFile> = ggufs
            .iter()
            .copied()
            .filter(|f| whole_gguf(&f.path))
            .collect();
        let best = GGUF_PREFERENCE.iter().find_map(|tag| {
            whole
                .iter()
                .find(|f| has_tag(base_name(&f.path), tag))
                .map(|f| (*f, *tag))
        });
        return match (best, whole.as_slice()) {
            (Some((file, tag)), _) if whole.len() > 1 => {
                let other = whole.iter().find(|f| f.path != file.path).map_or("", |f| f.path.as_str());
                let note = format!(
                    "{repo} has {} GGUF files; pulling {} ({tag}). Pick another with `glim pull {repo}:FILE` (e.g. {repo}:{other})",
                    whole.len(),
                    file.path
                );
                Ok(gguf_choice(file, Some(note)))
            }
            (Some((file, _)), _) | (None, &[file]) => Ok(gguf_choice(file, None)),
            (None, []) => bail!(
                "{repo}'s GGUF files are split into parts or are vision projectors, which glim does not load: {}",
                listing(&ggufs)
            ),
            (None, _) => bail!(
                "none of {repo}'s GGUF files is in a format glim decodes ({}): {}; name one with {repo}:FILE to try it anyway",
                GGUF_PREFERENCE.join(", "),
                listing(&whole)
            ),
        };
    }
    let top = |f: &&RemoteFile| !f.path.contains('/');
    let has = |name: &str| files.iter().any(|f| f.path == name);
    let safetensors = files
        .iter()
        .filter(top)
        .any(|f| f.path.ends_with(".safetensors"));
    if safetensors && has("config.json") {
        if !has("tokenizer.json") {
            bail!("{repo} has safetensors weights but no tokenizer.json, which glim needs");
        }
        let wanted = [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ];
        let files = files
            .iter()
            .filter(top)
            .filter(|f| {
                wanted.contains(&f.path.as_str())
                    || f.path.ends_with(".safetensors")
                    || f.path.ends_with(".safetensors.index.json")
            })
            .map(|f| (f.clone(), f.path.clone()))
            .collect();
        return Ok(Choice {
            name: repo_name.to_string(),
            kind: cache::Kind::Hf,
            files,
            note: None,
        });
    }
    let shown: Vec<&RemoteFile> = files.iter().take(12).collect();
    bail!(
        "{repo} holds no model glim can pull: no .gguf file, no MLC model (mlc-chat-config.json and tensor-cache.json), no safetensors model (config.json and *.safetensors); its files: {}{}",
        if shown.is_empty() { "none".to_string() } else { listing(&shown) },
        if files.len() > shown.len() { ", ..." } else { "" }
    )
}

/// HTTP access to the Hub (and to plain URLs).
struct Hub {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
}

/// A failed transfer: worth another try (a broken connection, a server error) or not.
enum Failure {
    Retry(CliError),
    Fatal(CliError),
}

impl Hub {
    fn from_env() -> Hub {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("glim/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            // Redirects are followed by hand, so the token goes to its own origin only.
            .max_redirects(0)
            .build();
        Hub {
            agent: config.into(),
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            token: var("HF_TOKEN").map(|t| t.trim().to_string()),
        }
    }

    /// GET `url`, from byte `from` on when not 0, following redirects. The token goes only
    /// to the endpoint's own origin (scheme, host and port), on every hop.
    fn get(&self, url: &str, from: u64) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let hub = origin(&self.endpoint);
        let mut at = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.get(&at);
            if let Some(token) = &self.token {
                if hub.is_some() && origin(&at) == hub {
                    request = request.header("Authorization", format!("Bearer {token}"));
                }
            }
            if from > 0 {
                request = request.header("Range", format!("bytes={from}-"));
            }
            let response = request.call()?;
            let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
            let next = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| resolve(&at, l));
            match next {
                Some(next) if redirect => at = next,
                _ => return Ok(response),
            }
        }
        Err(ureq::Error::TooManyRedirects)
    }

    fn file_url(&self, repo: &str, revision: &str, path: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            encode(revision, false),
            encode(path, true)
        )
    }

    /// Every file of `repo` at `revision`, following the Hub's pages.
    fn tree(&self, repo: &str, revision: &str) -> CliResult<Vec<RemoteFile>> {
        let mut url = Some(format!(
            "{}/api/models/{repo}/tree/{}?recursive=true",
            self.endpoint,
            encode(revision, false)
        ));
        let mut files = Vec::new();
        let mut pages = HashSet::new();
        while let Some(at) = url.take() {
            if !pages.insert(at.clone()) {
                bail!(
                    "the file list of {repo} leads back to a page it gave before ({at}); giving up"
                );
            }
            let mut response = self
                .get(&at, 0)
                .map_err(|e| CliError(format!("cannot list the files of {repo} at {at}: {e}")))?;
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .map_err(|e| CliError(format!("cannot list the files of {repo} at {at}: {e}")))?;
            if status != 200 {
                let said = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error")?.as_str().map(str::to_string))
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                let hint = match status {
                    401 | 403 | 404 if self.token.is_none() => {
                        "; check the name and revision (a private or gated repo needs HF_TOKEN)"
                    }
                    401 | 403 | 404 => "; check the name, the revision and HF_TOKEN's access",
                    _ => "",
                };
                bail!(
                    "cannot list the files of {repo}@{revision}: HTTP {status}{said} at {at}{hint}"
                );
            }
            files.extend(parse_tree(&body)?);
            if files.len() > MAX_LISTED_FILES {
                bail!(
                    "{repo} lists more than {MAX_LISTED_FILES} files; glim pulls from smaller repos"
                );
            }
            url = response
                .headers()
                .get("link")
                .and_then(|l| l.to_str().ok())
                .and_then(next_link);
        }
        Ok(files)
    }
}

/// One file to download: from `url` to `dest` (relative to the entry's folder).
#[derive(Clone, Debug)]
struct Fetch {
    url: String,
    /// How the user knows the file: its repo path or the URL's file name.
    label: String,
    dest: String,
    size: Option<u64>,
    sha256: Option<String>,
}

/// `rel` as a path under a folder: a [`plain_path`], and on this system only normal
/// components (no root, no prefix).
fn relative(rel: &str) -> CliResult<PathBuf> {
    let path = Path::new(rel);
    if !plain_path(rel) || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("refusing the file path {rel:?}: not a plain relative path");
    }
    Ok(path.to_path_buf())
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError(format!("cannot {what} {}: {e}", path.display()))
}

/// The first byte a `Content-Range: bytes FIRST-LAST/TOTAL` header gives.
fn range_start(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

/// One try at getting `fetch` whole into `part`, continuing what is there.
fn transfer(
    hub: &Hub,
    fetch: &Fetch,
    part: &Path,
    bar: &ProgressBar,
    abort: &AtomicBool,
) -> Result<(), Failure> {
    let fatal = Failure::Fatal;
    let mut have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if fetch.size.is_some_and(|size| have > size) {
        bar.dec(have);
        have = 0;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .map_err(|e| fatal(io_error("write", part, e)))?;
    if have == 0 {
        file.set_len(0)
            .map_err(|e| fatal(io_error("write", part, e)))?;
    }
    if fetch.size == Some(have) {
        return Ok(());
    }
    let response = hub.get(&fetch.url, have).map_err(|e| {
        Failure::Retry(CliError(format!(
            "cannot fetch {} from {}: {e}",
            fetch.label, fetch.url
        )))
    })?;
    let status = response.status().as_u16();
    match status {
        206 if range_start(&response) == Some(have) => {}
        200 | 206 => {
            // The server sent the whole file (it ignores ranges) or the wrong part: start over.
            bar.dec(have);
            have = 0;
            file.set_len(0).map_err(|e| fatal(io_error("write", part, e)))?;
            if status == 206 {
                return Err(Failure::Retry(CliError(format!(
                    "{} answered a range request for {} with another range",
                    fetch.url, fetch.label
                ))));
            }
        }
        416 => {
            bar.dec(have);
            file.set_len(0).map_err(|e| fatal(io_error("write", part, e)))?;
            return Err(Failure::Retry(CliError(format!(
                "{} refused to continue {} from byte {have}",
                fetch.url, fetch.label
            ))));
        }
        404 => {
            return Err(fatal(CliError(format!(
                "{} is missing: HTTP 404 Not Found at {}",
                fetch.label, fetch.url
            ))))
        }
        401 | 403 => {
            return Err(fatal(CliError(format!(
                "access to {} denied: HTTP {status} at {} (a private or gated repo needs HF_TOKEN with access)",
                fetch.label, fetch.url
            ))))
        }
        429 | 500..=599 => {
            return Err(Failure::Retry(CliError(format!(
                "cannot fetch {}: HTTP {status} at {}",
                fetch.label, fetch.url
            ))))
        }
        _ => {
            return Err(fatal(CliError(format!(
                "cannot fetch {}: HTTP {status} at {}",
                fetch.label, fetch.url
            ))))
        }
    }
    let sent = response.body().content_length();
    match fetch.size {
        // A plain URL (pulled alone): the length the server gives is all there is to go by.
        None => {
            if let Some(length) = sent {
                bar.set_length(have + length);
            }
        }
        Some(size) if sent.is_some_and(|n| have + n > size) => {
            return Err(fatal(overflow(fetch, size)));
        }
        Some(_) => {}
    }
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0; 256 << 10];
    let mut got = have;
    loop {
        if abort.load(Ordering::Relaxed) {
            return Err(fatal(CliError("stopped".into())));
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Err(Failure::Retry(CliError(format!(
                    "the connection broke after {} of {} ({e}): run the same `glim pull` again to resume",
                    human_size(got),
                    fetch.label
                ))))
            }
        };
        if let Some(size) = fetch.size.filter(|&size| got + n as u64 > size) {
            // Not one byte past the listed size is kept.
            let _ = file.set_len(0);
            return Err(fatal(overflow(fetch, size)));
        }
        file.write_all(&buf[..n])
            .map_err(|e| fatal(io_error("write", part, e)))?;
        got += n as u64;
        bar.inc(n as u64);
    }
    file.flush()
        .map_err(|e| fatal(io_error("write", part, e)))?;
    Ok(())
}

/// The error for a server sending more of `fetch` than its listed `size`.
fn overflow(fetch: &Fetch, size: u64) -> CliError {
    CliError(format!(
        "{} sent more than the {size} bytes its listing gives for {}: refused",
        fetch.url, fetch.label
    ))
}

/// `(scheme, host, port)` of an absolute http(s) URL, the port made explicit.
fn origin(url: &str) -> Option<(String, String, u16)> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let default = if scheme == "https" { 443 } else { 80 };
    Some((scheme, host, uri.port_u16().unwrap_or(default)))
}

/// Where a redirect from `from` to `location` leads: an absolute URL, or one relative to
/// `from`'s origin or folder.
fn resolve(from: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_string());
    }
    let uri: ureq::http::Uri = from.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    let root = format!("{scheme}://{}", uri.authority()?);
    if location.starts_with('/') {
        return Some(format!("{root}{location}"));
    }
    let path = uri.path();
    Some(format!("{root}{}{location}", &path[..=path.rfind('/')?]))
}

/// Downloads `fetch` into `dir`, trying again (and continuing) when a connection breaks,
/// then checks its size and sha256. A file already whole in `dir` is kept.
fn fetch_file(
    hub: &Hub,
    fetch: &Fetch,
    dir: &Path,
    bar: &ProgressBar,
    abort: &AtomicBool,
) -> CliResult<()> {
    let dest = dir.join(relative(&fetch.dest)?);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
    }
    let part = part_path(&dest);
    if dest.is_file() {
        // Finished by an earlier run: keep it if it still checks out.
        fs::rename(&dest, &part).map_err(|e| io_error("move", &dest, e))?;
    }
    bar.inc(fs::metadata(&part).map(|m| m.len()).unwrap_or(0));
    let mut attempt = 1;
    loop {
        match transfer(hub, fetch, &part, bar, abort) {
            Ok(()) => break,
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) if attempt >= ATTEMPTS || abort.load(Ordering::Relaxed) => {
                return Err(e)
            }
            Err(Failure::Retry(_)) => {
                std::thread::sleep(Duration::from_millis(300 * u64::from(attempt)));
                attempt += 1;
            }
        }
    }
    let len = fs::metadata(&part)
        .map_err(|e| io_error("read", &part, e))?
        .len();
    if let Some(size) = fetch.size.filter(|&size| size != len) {
        let _ = fs::remove_file(&part);
        bail!(
            "{} came as {len} bytes where the Hub lists {size}; it was deleted: run `glim pull` again",
            fetch.label
        );
    }
    if let Some(expected) = &fetch.sha256 {
        let actual = sha256_file(&part).map_err(|e| io_error("read", &part, e))?;
        if &actual != expected {
            let _ = fs::remove_file(&part);
            bail!(
                "{} failed its checksum (sha256 {actual}, expected {expected}); nothing of it was kept",
                fetch.label
            );
        }
    }
    fs::rename(&part, &dest).map_err(|e| io_error("move", &part, e))?;
    Ok(())
}

/// Downloads every file of `fetches` into `dir`, [`THREADS`] at a time, under one progress
/// bar. The first failure stops the others (their `.part` files stay, to resume).
fn fetch_all(hub: &Hub, fetches: &[Fetch], dir: &Path, name: &str) -> CliResult<()> {
    let total: u64 = fetches.iter().filter_map(|f| f.size).sum();
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(format!("pulling {name}"));
    // The largest first, so the last to finish is a small one.
    let mut queue: Vec<&Fetch> = fetches.iter().collect();
    queue.sort_by_key(|f| f.size.unwrap_or(u64::MAX));
    let queue = Mutex::new(queue);
    let abort = AtomicBool::new(false);
    let failure: Mutex<Option<CliError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..THREADS.min(fetches.len()) {
            scope.spawn(|| loop {
                if abort.load(Ordering::Relaxed) {
                    break;
                }
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(fetch) = next else { break };
                if let Err(e) = fetch_file(hub, fetch, dir, &bar, &abort) {
                    let mut failure = failure.lock().unwrap_or_else(|p| p.into_inner());
                    if failure.is_none() {
                        *failure = Some(e);
                    }
                    abort.store(true, Ordering::Relaxed);
                    break;
                }
            });
        }
    });
    bar.finish_and_clear();
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Removes what a previous, different pull left in `dir`: files not in `keep`, and empty
/// folders.
fn prune(dir: &Path, keep: &HashSet<PathBuf>, root: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            prune(&path, keep, root);
            let _ = fs::remove_dir(&path);
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let rel_done = rel
                .to_str()
                .and_then(|r| r.strip_suffix(".part"))
                .map(PathBuf::from);
            if !keep.contains(&rel) && !rel_done.is_some_and(|r| keep.contains(&r)) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// The name a URL's file gets in the cache: its file name without `.gguf`.
fn url_file(url: &str) -> CliResult<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = decode(base_name(path));
    if !is_gguf(&file) || file.contains(['/', '\\']) || file.starts_with('.') {
        bail!(
            "{url} is not a .gguf file: a URL pull fetches one GGUF file (for a model folder, pull its Hugging Face repo)"
        );
    }
    Ok(file)
}

/// The lock one pull of NAME holds on `.pull/.NAME.lock`: a second `glim pull` of the same
/// model (from another terminal) would otherwise write into the same `.part` files. The
/// lock goes with the process however it ends.
struct PullLock {
    _file: File,
    path: PathBuf,
}

impl PullLock {
    /// Removes the lock file once the model is in place. Safe while locked: a pull that
    /// opened the old file and locks it after this process ends finds the model in the
    /// cache (it checks under the lock) and downloads nothing. The `.pull` folder goes
    /// too when nothing else is in it.
    fn model_in_place(self) {
        let _ = fs::remove_file(&self.path);
        if let Some(staging) = self.path.parent() {
            let _ = fs::remove_dir(staging);
        }
    }
}

fn lock_pull(models: &Path, name: &str) -> CliResult<PullLock> {
    let staging = models.join(STAGING);
    fs::create_dir_all(&staging).map_err(|e| io_error("create", &staging, e))?;
    let path = staging.join(format!(".{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(PullLock { _file: file, path }),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another `glim pull` is downloading {name} right now: let it finish (or stop it) and run this again"
        ),
        Err(fs::TryLockError::Error(e)) => Err(io_error("lock", &path, e)),
    }
}

/// `glim pull SOURCE`.
pub fn pull(args: PullArgs) -> CliResult<()> {
    let source = parse_source(&args.source)?;
    let hub = Hub::from_env();
    let models = cache::models_dir()?;
    let (name, kind, fetches, repo, revision) = match &source {
        Source::Url(url) => {
            let file = url_file(url)?;
            let fetch = Fetch {
                url: url.clone(),
                label: file.clone(),
                dest: file.clone(),
                size: None,
                sha256: None,
            };
            let name = file[..file.len() - ".gguf".len()].to_string();
            (name, cache::Kind::Gguf, vec![fetch], None, None)
        }
        Source::Repo {
            repo,
            revision,
            file,
        } => {
            let files = hub.tree(repo, revision)?;
            let choice = choose(repo, &files, file.as_deref())?;
            if let Some(note) = &choice.note {
                eprintln!("{note}");
            }
            let fetches = choice
                .files
                .iter()
                .map(|(remote, dest)| Fetch {
                    url: hub.file_url(repo, revision, &remote.path),
                    label: remote.path.clone(),
                    dest: dest.clone(),
                    size: Some(remote.size),
                    sha256: remote.sha256.clone(),
                })
                .collect();
            (
                choice.name,
                choice.kind,
                fetches,
                Some(repo.clone()),
                Some(revision.clone()),
            )
        }
    };
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        bail!("cannot store a model named {name:?}");
    }
    let dest = models.join(&name);
    // Held to the end: the checks below and the download happen under it.
    let lock = lock_pull(&models, &name)?;
    if let Some(existing) = cache::list(&models).into_iter().find(|e| e.name == name) {
        let same = match (&existing.repo, &repo) {
            (Some(had), Some(repo)) => had.eq_ignore_ascii_case(repo),
            (None, None) => existing.source.as_deref() == Some(args.source.as_str()),
            _ => false,
        };
        if !same {
            bail!(
                "a model named {name} is already in the cache ({}, from {}): remove it with `glim rm {name}` first",
                existing.path.display(),
                existing.source.as_deref().unwrap_or("elsewhere")
            );
        }
        println!(
            "{name} is already pulled ({}, {}); `glim rm {name}` and pull again to refresh it",
            human_size(existing.size),
            existing.model.display()
        );
        lock.model_in_place();
        return Ok(());
    }
    if dest.exists() {
        bail!(
            "{} is in the way (it is not a model): move it to pull {name}",
            dest.display()
        );
    }
    let staging = models.join(STAGING).join(&name);
    fs::create_dir_all(&staging).map_err(|e| io_error("create", &staging, e))?;
    let keep: HashSet<PathBuf> = fetches
        .iter()
        .map(|f| relative(&f.dest))
        .collect::<CliResult<_>>()?;
    prune(&staging, &keep, &staging);

    fetch_all(&hub, &fetches, &staging, &name)?;

    let manifest = serde_json::json!({
        "source": args.source,
        "repo": repo,
        "revision": revision,
        "files": fetches.iter().map(|f| serde_json::json!({
            "path": f.dest,
            "url": f.url,
            "size": f.size,
            "sha256": f.sha256,
        })).collect::<Vec<_>>(),
    });
    let manifest_path = staging.join(MANIFEST);
    fs::write(&manifest_path, format!("{manifest:#}\n"))
        .map_err(|e| io_error("write", &manifest_path, e))?;
    fs::rename(&staging, &dest).map_err(|e| io_error("move the finished download to", &dest, e))?;
    lock.model_in_place();
    let size = cache::disk_size(&dest);
    println!(
        "pulled {name}: {} file{}, {} ({}) in {}",
        fetches.len(),
        if fetches.len() == 1 { "" } else { "s" },
        human_size(size),
        kind.label(),
        dest.display()
    );
    println!("run it with: glim run {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> RemoteFile {
        RemoteFile {
            path: path.into(),
            size,
            sha256: None,
        }
    }

    fn repo(repo: &str, revision: &str, file: Option<&str>) -> Source {
        Source::Repo {
            repo: repo.into(),
            revision: revision.into(),
            file: file.map(Into::into),
        }
    }

    #[test]
    fn sources_parse() {
        let parsed = |s: &str| parse_source(s).unwrap();
        assert_eq!(parsed("org/name"), repo("org/name", "main", None));
        assert_eq!(
            parsed("org/name:m.Q8_0.gguf"),
            repo("org/name", "main", Some("m.Q8_0.gguf"))
        );
        assert_eq!(
            parsed("org/name@v1.0:sub/m.gguf"),
            repo("org/name", "v1.0", Some("sub/m.gguf"))
        );
        assert_eq!(
            parsed("org/name@refs/pr/3"),
            repo("org/name", "refs/pr/3", None)
        );
        assert_eq!(
            parsed("org/name:Q4_0"),
            repo("org/name", "main", Some("Q4_0"))
        );
        assert_eq!(
            parsed("https://example.com/m.gguf?download=1"),
            Source::Url("https://example.com/m.gguf?download=1".into())
        );
        for bad in [
            "name",
            "org/",
            "/name",
            "org/name:",
            "org/name@",
            "a/b/c",
            "../x",
            "org/na me",
            "./x",
        ] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_encoded_and_decoded() {
        assert_eq!(encode("refs/pr/3", false), "refs%2Fpr%2F3");
        assert_eq!(encode("sub dir/m+1.gguf", true), "sub%20dir/m%2B1.gguf");
        assert_eq!(decode("a%20b%2Bc%zz"), "a b+c%zz");
        assert_eq!(
            url_file("http://h/x/My%20Model.Q4_0.gguf?download=true").unwrap(),
            "My Model.Q4_0.gguf"
        );
        assert!(url_file("http://h/x/model.bin").is_err());
        assert!(url_file("http://h/x/..%2F..%2Fevil.gguf").is_err());
    }

    #[test]
    fn tree_lists_files_with_lfs_checksums() {
        let sha = "ab".repeat(32);
        let json = format!(
            r#"[{{"type":"directory","path":"sub","size":0}},
                {{"type":"file","path":"config.json","size":12,"oid":"123"}},
                {{"type":"file","path":"m.gguf","size":134,"oid":"9f","lfs":{{"oid":"{sha}","size":100,"pointerSize":134}}}}]"#
        );
        let files = parse_tree(&json).unwrap();
        assert_eq!(
            files,
            [
                file("config.json", 12),
                RemoteFile {
                    path: "m.gguf".into(),
                    size: 100,
                    sha256: Some(sha)
                }
            ]
        );
        assert!(parse_tree("{}").is_err());
        assert!(parse_tree(r#"[{"type":"file","path":"x"}]"#).is_err());
    }

    #[test]
    fn next_page_links() {
        assert_eq!(
            next_link(r#"<https://hf.co/api/models/a/b/tree/main?cursor=xyz>; rel="next""#)
                .as_deref(),
            Some("https://hf.co/api/models/a/b/tree/main?cursor=xyz")
        );
        assert_eq!(next_link(r#"<https://x>; rel="prev""#), None);
    }

    #[test]
    fn quantization_tags_are_whole_words() {
        assert!(has_tag("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"));
        assert!(has_tag("model.q4_k_m.gguf", "Q4_K_M"));
        assert!(!has_tag("model-Q4_K_M.gguf", "Q4_K"));
        assert!(!has_tag("model-BF16.gguf", "F16"));
        assert!(has_tag("model-BF16.gguf", "BF16"));
        assert!(has_tag("ggml-model-f16.gguf", "F16"));
        assert!(!has_tag("model-IQ4_XS.gguf", "Q4_0"));
    }

    #[test]
    fn split_and_projector_ggufs_are_not_whole() {
        assert!(whole_gguf("m-Q4_K_M.gguf"));
        assert!(!whole_gguf("Q8_0/m-Q8_0-00001-of-00002.gguf"));
        assert!(!whole_gguf("mmproj-m-f16.gguf"));
        assert!(!whole_gguf("m.safetensors"));
    }

    #[test]
    fn gguf_choice_prefers_q4_k_m_and_says_so() {
        let files = [
            file("README.md", 5),
            file("m-Q8_0.gguf", 8),
            file("m-Q4_K_M.gguf", 4),
            file("m-IQ2_XS.gguf", 2),
            file("mmproj-m-f16.gguf", 1),
        ];
        let choice = choose("org/m-GGUF", &files, None).unwrap();
        assert_eq!(choice.name, "m-Q4_K_M");
        assert_eq!(choice.files[0].1, "m-Q4_K_M.gguf");
        let note = choice.note.unwrap();
        assert!(
            note.contains("m-Q4_K_M.gguf") && note.contains("glim pull org/m-GGUF:"),
            "{note}"
        );

        let named = choose("org/m-GGUF", &files, Some("m-IQ2_XS.gguf")).unwrap();
        assert_eq!(named.name, "m-IQ2_XS");
        let tagged = choose("org/m-GGUF", &files, Some("q8_0")).unwrap();
        assert_eq!(tagged.files[0].0.path, "m-Q8_0.gguf");
        let err = choose("org/m-GGUF", &files, Some("Q5_K_M")).unwrap_err().0;
        assert!(err.contains("m-Q8_0.gguf, m-Q4_K_M.gguf"), "{err}");

        let unfit = [file("m-IQ2_XS.gguf", 2), file("m-IQ3_M.gguf", 3)];
        let err = choose("org/m", &unfit, None).unwrap_err().0;
        assert!(
            err.contains("m-IQ2_XS.gguf, m-IQ3_M.gguf") && err.contains("Q4_K_M"),
            "{err}"
        );
        // The 3- and 2-bit k-quants run too, after every 4-bit and larger one.
        let small = [file("m-Q2_K.gguf", 2), file("m-Q3_K_M.gguf", 3)];
        assert_eq!(choose("org/m", &small, None).unwrap().name, "m-Q3_K_M");
        // A lone GGUF file is taken whatever its name.
        assert_eq!(
            choose("org/m", &[file("model.gguf", 1)], None)
                .unwrap()
                .name,
            "model"
        );
    }

    #[test]
    fn mlc_and_safetensors_choices() {
        let mlc = [
            file(".gitattributes", 1),
            file("README.md", 1),
            file("mlc-chat-config.json", 1),
            file("tensor-cache.json", 1),
            file("params_shard_0.bin", 1),
            file("tokenizer.json", 1),
        ];
        let choice = choose("mlc-ai/M-q4f16_1-MLC", &mlc, None).unwrap();
        assert_eq!(choice.name, "M-q4f16_1-MLC");
        assert_eq!(choice.kind, cache::Kind::Mlc);
        assert_eq!(choice.files.len(), 5);

        let nested = [
            file("a/mlc-chat-config.json", 1),
            file("a/ndarray-cache.json", 1),
            file("b/mlc-chat-config.json", 1),
            file("b/ndarray-cache.json", 1),
            file("b/params_shard_0.bin", 1),
        ];
        assert!(choose("org/m", &nested, None)
            .unwrap_err()
            .0
            .contains("a/, b/"));
        let b = choose("org/m", &nested, Some("b")).unwrap();
        assert_eq!(b.name, "b");
        let dests: Vec<&str> = b.files.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(
            dests,
            [
                "mlc-chat-config.json",
                "ndarray-cache.json",
                "params_shard_0.bin"
            ]
        );

        let hf = [
            file("config.json", 1),
            file("model-00001-of-00002.safetensors", 1),
            file("model-00002-of-00002.safetensors", 1),
            file("model.safetensors.index.json", 1),
            file("tokenizer.json", 1),
            file("tokenizer_config.json", 1),
            file("original/consolidated.00.pth", 1),
            file("onnx/model.onnx", 1),
            file("README.md", 1),
        ];
        let choice = choose("org/M", &hf, None).unwrap();
        assert_eq!(choice.kind, cache::Kind::Hf);
        assert_eq!(choice.files.len(), 6);
        assert!(choose("org/M", &hf[..4], None)
            .unwrap_err()
            .0
            .contains("tokenizer.json"));

        let err = choose(
            "org/x",
            &[file("README.md", 1), file("model.onnx", 1)],
            None,
        )
        .unwrap_err()
        .0;
        assert!(
            err.contains("holds no model") && err.contains("model.onnx"),
            "{err}"
        );
    }

    #[test]
    fn paths_stay_inside() {
        assert!(relative("a/b.bin").is_ok());
        for bad in ["", "../x", "/etc/passwd", "a/../../x", "./x"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }
}
