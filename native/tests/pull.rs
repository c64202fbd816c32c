//! `glim pull`, `glim list` and `glim rm`, driving the built binary against a stand-in for
//! the Hugging Face Hub: an HTTP server on 127.0.0.1 serving the tree API
//! (`/api/models/{repo}/tree/{rev}`, in pages) and `/{repo}/resolve/{rev}/{file}` with
//! ranges, which can be told to hang up midway, serve wrong bytes, answer 404 or ignore
//! ranges. Every run of `glim` has its own GLIM_HOME and a time limit.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

mod common;
use common::{assert_clean_error, text, TimedOutput};

/// A file the server holds.
struct Served {
    path: String,
    bytes: Vec<u8>,
    /// Listed with an `lfs` object (a sha256), as the Hub lists large files.
    lfs: bool,
}

/// How the server misbehaves.
#[derive(Default)]
struct Tricks {
    /// File path → (bytes of body sent before hanging up, times left to do it).
    cut: HashMap<String, (usize, usize)>,
    /// Served with one byte changed.
    wrong: HashSet<String>,
    /// Listed, but answered with 404.
    missing: HashSet<String>,
    /// Answer range requests with the whole file.
    ignore_range: bool,
    /// Wait before answering for a file.
    delay: Duration,
    /// Answer for LFS files with a redirect to `/cdn/{repo}/{file}`, as the Hub does.
    redirect_lfs: bool,
    /// Where those redirects go instead of this server (another origin).
    cdn: Option<String>,
    /// The tree API's `Link` points back at the page it is on.
    loop_pages: bool,
    /// File path → the size the tree API lists for it (less than it is).
    listed_size: HashMap<String, usize>,
    /// A path the tree API lists besides the repo's files.
    extra_listed: Option<String>,
}

#[derive(Clone, Debug)]
struct Request {
    target: String,
    range: Option<String>,
    auth: Option<String>,
}

/// Tree API answers hold at most this many files, then a `Link` to the next page.
const PAGE: usize = 5;

struct Hub {
    port: u16,
    /// Repo id (or `files` for plain URLs under `/files/`) → its files.
    repos: Mutex<HashMap<String, Vec<Served>>>,
    tricks: Mutex<Tricks>,
    log: Mutex<Vec<Request>>,
    busy: AtomicUsize,
    most_busy: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    fn start() -> Arc<Hub> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let hub = Arc::new(Hub {
            port: listener.local_addr().unwrap().port(),
            repos: Mutex::default(),
            tricks: Mutex::default(),
            log: Mutex::default(),
            busy: AtomicUsize::new(0),
            most_busy: AtomicUsize::new(0),
        });
        let server = hub.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let server = server.clone();
                std::thread::spawn(move || {
                    let _ = server.answer(stream);
                });
            }
        });
        hub
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn add(&self, repo: &str, files: Vec<Served>) {
        lock(&self.repos).insert(repo.to_string(), files);
    }

    fn bytes(&self, repo: &str, path: &str) -> Vec<u8> {
        lock(&self.repos)[repo]
            .iter()
            .find(|f| f.path == path)
            .unwrap()
            .bytes
            .clone()
    }

    /// The requests so far whose target contains `part`.
    fn requests(&self, part: &str) -> Vec<Request> {
        lock(&self.log)
            .iter()
            .filter(|r| r.target.contains(part))
            .cloned()
            .collect()
    }

    fn answer(&self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        lock(&self.log).push(Request {
            target: target.clone(),
            range: headers.get("range").cloned(),
            auth: headers.get("authorization").cloned(),
        });
        let mut stream = stream;
        if let Some(rest) = target.strip_prefix("/api/models/") {
            return self.tree(&mut stream, rest);
        }
        let path = target.split('?').next().unwrap_or_default();
        let (repo, file, resolve) = match path.strip_prefix("/files/") {
            Some(file) => ("files".to_string(), file.to_string(), false),
            None => {
                let parts: Vec<&str> = path[1..].splitn(5, '/').collect();
                match parts.as_slice() {
                    [org, name, "resolve", _rev, file] => {
                        (format!("{org}/{name}"), file.to_string(), true)
                    }
                    ["cdn", org, name, file] => (format!("{org}/{name}"), file.to_string(), false),
                    _ => return respond(&mut stream, 404, &[], b"no such page"),
                }
            }
        };
        let (bytes, is_lfs) = lock(&self.repos)
            .get(&repo)
            .and_then(|files| files.iter().find(|f| f.path == file))
            .map_or((None, false), |f| (Some(f.bytes.clone()), f.lfs));
        let (delay, missing, wrong, ignore_range, redirect, cdn) = {
            let t = lock(&self.tricks);
            let redirect = t.redirect_lfs && resolve && is_lfs;
            (
                t.delay,
                t.missing.contains(&file),
                t.wrong.contains(&file),
                t.ignore_range,
                redirect,
                t.cdn.clone(),
            )
        };
        if redirect {
            let origin = cdn.unwrap_or_else(|| self.endpoint());
            let location = format!("{origin}/cdn/{repo}/{file}");
            return respond(&mut stream, 302, &[("Location", location)], b"");
        }
        let Some(mut bytes) = bytes.filter(|_| !missing) else {
            return respond(&mut stream, 404, &[], b"Entry not found");
        };
        if wrong {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
        }
        let start = headers
            .get("range")
            .filter(|_| !ignore_range)
            .and_then(|r| {
                r.strip_prefix("bytes=")?
                    .strip_suffix('-')?
                    .parse::<usize>()
                    .ok()
            });
        let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_busy.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(delay);
        let result = match start {
            Some(start) if start >= bytes.len() => respond(&mut stream, 416, &[], b""),
            Some(start) => {
                let range = format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len());
                self.send_body(
                    &mut stream,
                    &file,
                    206,
                    &[("Content-Range", range)],
                    &bytes[start..],
                )
            }
            None => self.send_body(&mut stream, &file, 200, &[], &bytes),
        };
        self.busy.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Sends `body`, or only its first bytes when told to hang up on `file`.
    fn send_body(
        &self,
        stream: &mut TcpStream,
        file: &str,
        status: u16,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let cut = {
            let mut tricks = lock(&self.tricks);
            match tricks.cut.get_mut(file) {
                Some((after, times)) if *times > 0 => {
                    *times -= 1;
                    Some(*after)
                }
                _ => None,
            }
        };
        match cut {
            Some(after) => {
                write_head(stream, status, headers, body.len())?;
                stream.write_all(&body[..after.min(body.len())])?;
                stream.flush()?;
                stream.shutdown(Shutdown::Both)
            }
            None => respond(stream, status, headers, body),
        }
    }

    /// The tree API: the repo's files as the Hub lists them, PAGE at a time.
    fn tree(&self, stream: &mut TcpStream, rest: &str) -> std::io::Result<()> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let Some((repo, _rev)) = path.split_once("/tree/") else {
            return respond(stream, 404, &[], b"{}");
        };
        let repos = lock(&self.repos);
        let Some(files) = repos.get(repo) else {
            return respond(stream, 404, &[], br#"{"error":"Repository not found"}"#);
        };
        let tricks = lock(&self.tricks);
        let from: usize = query
            .split('&')
            .find_map(|p| p.strip_prefix("cursor="))
            .map_or(0, |c| c.parse().unwrap());
        let page: Vec<String> = files
            .iter()
            .skip(from)
            .take(PAGE)
            .map(|f| {
                let lfs = if f.lfs {
                    format!(
                        r#","lfs":{{"oid":"{}","size":{},"pointerSize":134}}"#,
                        sha256(&f.bytes),
                        f.bytes.len()
                    )
                } else {
                    String::new()
                };
                let size = tricks.listed_size.get(&f.path).copied();
                let lfs = match size {
                    Some(size) => lfs.replace(
                        &format!("\"size\":{}", f.bytes.len()),
                        &format!("\"size\":{size}"),
                    ),
                    None => lfs,
                };
                format!(
                    r#"{{"type":"file","oid":"0123abcd","size":{},"path":"{}"{lfs}}}"#,
                    size.unwrap_or(f.bytes.len()),
                    f.path
                )
            })
            .chain(tricks.extra_listed.iter().map(|p| {
                format!(
                    r#"{{"type":"file","oid":"0","size":1,"path":{}}}"#,
                    serde_json::to_string(p).unwrap()
                )
            }))
            .collect();
        let mut headers = Vec::new();
        if from + PAGE < files.len() || tricks.loop_pages {
            let cursor = if tricks.loop_pages { from } else { from + PAGE };
            let next = format!(
                "<{}/api/models/{path}?recursive=true&cursor={cursor}>; rel=\"next\"",
                self.endpoint(),
            );
            headers.push(("Link", next));
        }
        let json = format!("[{}]", page.join(","));
        respond(stream, 200, &headers, json.as_bytes())
    }
}

fn write_head(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    length: usize,
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status} X\r\nContent-Length: {length}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    write_head(stream, status, headers, body.len())?;
    stream.write_all(body)?;
    stream.flush()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes of noise, the same for the same seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn lfs(path: &str, seed: u64, len: usize) -> Served {
    Served {
        path: path.into(),
        bytes: noise(seed, len),
        lfs: true,
    }
}

fn small(path: &str, text: &str) -> Served {
    Served {
        path: path.into(),
        bytes: text.as_bytes().to_vec(),
        lfs: false,
    }
}

/// A GGUF repo with three quantizations, like the ones llama.cpp users publish.
fn gguf_repo(hub: &Hub) {
    hub.add(
        "test-org/tiny-GGUF",
        vec![
            small(
                ".gitattributes",
                "*.gguf filter=lfs diff=lfs merge=lfs -text\n",
            ),
            small("README.md", "# tiny\n"),
            lfs("tiny-Q8_0.gguf", 1, 120_000),
            lfs("tiny-Q4_K_M.gguf", 2, 90_000),
            lfs("tiny-IQ2_XS.gguf", 3, 40_000),
        ],
    );
}

/// A fresh GLIM_HOME for one test.
fn home(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glim-pull-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `glim ARGS` with GLIM_HOME `home` and the Hub at `endpoint`, killed after a minute.
fn glim_with(home: &Path, endpoint: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_glim"));
    command
        .args(args)
        .env("GLIM_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_TOKEN")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output_within(Duration::from_secs(60)).unwrap()
}

fn glim(home: &Path, hub: &Hub, args: &[&str]) -> Output {
    glim_with(home, &hub.endpoint(), &[], args)
}

/// Exit status 0; stdout.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn pull_chooses_a_gguf_file_and_run_finds_it_by_name() {
    let hub = Hub::start();
    gguf_repo(&hub);
    let home = home("choose");
    let out = glim(&home, &hub, &["pull", "test-org/tiny-GGUF"]);
    let stdout = ok(&out);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("tiny-Q4_K_M.gguf") && stderr.contains("glim pull test-org/tiny-GGUF:"),
        "{stderr}"
    );
    assert!(stdout.contains("glim run tiny-Q4_K_M"), "{stdout}");
    let models = home.join("models");
    assert_eq!(
        read(models.join("tiny-Q4_K_M/tiny-Q4_K_M.gguf")),
        hub.bytes("test-org/tiny-GGUF", "tiny-Q4_K_M.gguf")
    );
    assert_eq!(hub.requests("/resolve/").len(), 1, "only the chosen file");
    assert_eq!(
        files_under(&models),
        [
            "tiny-Q4_K_M/.glim-pull.json",
            "tiny-Q4_K_M/tiny-Q4_K_M.gguf"
        ]
    );

    let list = ok(&glim(&home, &hub, &["list"]));
    let row = list
        .lines()
        .find(|l| l.starts_with("tiny-Q4_K_M "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains(" gguf ") && row.contains("KiB"), "{row}");
    assert!(
        row.contains(
            &models
                .join("tiny-Q4_K_M/tiny-Q4_K_M.gguf")
                .display()
                .to_string()
        ),
        "{row}"
    );

    // The name (or the repo) resolves to the cached file: ppl gets as far as its text file.
    for name in ["tiny-Q4_K_M", "test-org/tiny-GGUF"] {
        let err = assert_clean_error(&glim(
            &home,
            &hub,
            &["ppl", name, "/nonexistent/glim-text.txt"],
        ));
        assert!(
            err.contains("cannot read /nonexistent/glim-text.txt"),
            "{err}"
        );
    }
    let err = assert_clean_error(&glim(&home, &hub, &["run", "no-such-model", "-p", "hi"]));
    assert!(
        err.contains("no-such-model") && err.contains("glim list") && err.contains("glim pull"),
        "{err}"
    );

    // Pulled already: nothing is fetched again.
    let stdout = ok(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF"]));
    assert!(stdout.contains("already pulled"), "{stdout}");
    assert_eq!(hub.requests("/resolve/").len(), 1);

    let stdout = ok(&glim(&home, &hub, &["rm", "test-org/tiny-GGUF"]));
    assert!(stdout.contains("removed tiny-Q4_K_M"), "{stdout}");
    assert!(files_under(&models).is_empty());
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn pull_a_named_file_or_quantization_at_a_revision_with_a_token() {
    let hub = Hub::start();
    gguf_repo(&hub);
    let home = home("named");
    let token = [("HF_TOKEN", "hf_secret")];
    let source = "test-org/tiny-GGUF@v1.0:tiny-Q8_0.gguf";
    ok(&glim_with(
        &home,
        &hub.endpoint(),
        &token,
        &["pull", source],
    ));
    assert_eq!(
        read(home.join("models/tiny-Q8_0/tiny-Q8_0.gguf")),
        hub.bytes("test-org/tiny-GGUF", "tiny-Q8_0.gguf")
    );
    let tree = hub.requests("/api/models/test-org/tiny-GGUF/tree/v1.0");
    let file = hub.requests("/test-org/tiny-GGUF/resolve/v1.0/tiny-Q8_0.gguf");
    assert_eq!((tree.len(), file.len()), (1, 1), "{:?}", hub.requests(""));
    for request in [&tree[0], &file[0]] {
        assert_eq!(
            request.auth.as_deref(),
            Some("Bearer hf_secret"),
            "{request:?}"
        );
    }

    // A quantization names a file too; one that is not there lists what is.
    ok(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF:iq2_xs"]));
    assert!(home.join("models/tiny-IQ2_XS/tiny-IQ2_XS.gguf").is_file());
    let err = assert_clean_error(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF:Q5_K_M"]));
    assert!(
        err.contains("Q5_K_M")
            && err.contains("tiny-Q8_0.gguf, tiny-Q4_K_M.gguf, tiny-IQ2_XS.gguf"),
        "{err}"
    );
    assert!(hub
        .requests("/resolve/")
        .iter()
        .all(|r| r.auth.is_none() || r.target.contains("Q8_0")));

    // Two models from one repo: the repo id alone is ambiguous.
    let err = assert_clean_error(&glim(
        &home,
        &hub,
        &["run", "test-org/tiny-GGUF", "-p", "hi"],
    ));
    assert!(err.contains("tiny-IQ2_XS, tiny-Q8_0"), "{err}");
    std::fs::remove_dir_all(&home).unwrap();
}

/// An MLC model folder repo: config, index, tokenizer files and six shards.
fn mlc_repo(hub: &Hub) {
    let mut files = vec![
        small(".gitattributes", "*.bin filter=lfs\n"),
        small("README.md", "# tiny MLC\n"),
        small("mlc-chat-config.json", r#"{"model_type":"llama"}"#),
        small("tensor-cache.json", r#"{"records":[]}"#),
        small("tokenizer.json", r#"{"model":{}}"#),
        small("tokenizer_config.json", "{}"),
    ];
    for shard in 0..6 {
        files.push(lfs(
            &format!("params_shard_{shard}.bin"),
            10 + shard,
            30_000 + 1000 * shard as usize,
        ));
    }
    hub.add("mlc-ai/tiny-q4f16_1-MLC", files);
}

#[test]
fn pull_an_mlc_folder_several_files_at_once() {
    let hub = Hub::start();
    mlc_repo(&hub);
    lock(&hub.tricks).delay = Duration::from_millis(300);
    let home = home("mlc");
    let stdout = ok(&glim(&home, &hub, &["pull", "mlc-ai/tiny-q4f16_1-MLC"]));
    assert!(
        stdout.contains("pulled tiny-q4f16_1-MLC: 11 files"),
        "{stdout}"
    );

    // The tree came in pages; every file but .gitattributes arrived, byte for byte.
    assert_eq!(hub.requests("/api/models/").len(), 3);
    let dir = home.join("models/tiny-q4f16_1-MLC");
    let repos = lock(&hub.repos);
    for file in &repos["mlc-ai/tiny-q4f16_1-MLC"] {
        let local = dir.join(&file.path);
        if file.path == ".gitattributes" {
            assert!(!local.exists());
        } else {
            assert_eq!(read(local), file.bytes, "{}", file.path);
        }
    }
    drop(repos);
    let most = hub.most_busy.load(Ordering::SeqCst);
    assert!(
        most >= 2,
        "downloads ran one at a time (at most {most} at once)"
    );

    let list = ok(&glim(&home, &hub, &["list"]));
    let row = list
        .lines()
        .find(|l| l.starts_with("tiny-q4f16_1-MLC "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains(" mlc ") && row.ends_with(&dir.display().to_string()),
        "{row}"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_rerun_fetches_only_what_an_earlier_run_left_unfinished() {
    let hub = Hub::start();
    mlc_repo(&hub);
    // The smallest file goes last; when it fails, the others are whole or nearly.
    lock(&hub.tricks)
        .missing
        .insert("tokenizer_config.json".into());
    let home = home("partial");
    let err = assert_clean_error(&glim(&home, &hub, &["pull", "mlc-ai/tiny-q4f16_1-MLC"]));
    assert!(
        err.contains("tokenizer_config.json") && err.contains("404"),
        "{err}"
    );
    assert!(ok(&glim(&home, &hub, &["list"])).starts_with("no models"));
    lock(&hub.tricks).missing.clear();
    let before = hub.requests("/resolve/").len();
    ok(&glim(&home, &hub, &["pull", "mlc-ai/tiny-q4f16_1-MLC"]));
    let again = &hub.requests("/resolve/")[before..];
    // At most the failed file and the three downloading beside it when it failed.
    assert!(!again.is_empty() && again.len() <= 4, "{again:?}");
    assert!(again
        .iter()
        .any(|r| r.target.ends_with("/tokenizer_config.json")));
    let dir = home.join("models/tiny-q4f16_1-MLC");
    for file in lock(&hub.repos)["mlc-ai/tiny-q4f16_1-MLC"].iter().skip(1) {
        assert_eq!(read(dir.join(&file.path)), file.bytes, "{}", file.path);
    }
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn pull_a_safetensors_model_takes_what_glim_reads() {
    let hub = Hub::start();
    hub.add(
        "test-org/tiny-hf",
        vec![
            small("README.md", "# tiny\n"),
            small("config.json", r#"{"architectures":["LlamaForCausalLM"]}"#),
            small("generation_config.json", "{}"),
            lfs("model.safetensors", 20, 50_000),
            lfs("original/consolidated.00.pth", 21, 50_000),
            small("tokenizer.json", r#"{"model":{}}"#),
            small("tokenizer_config.json", "{}"),
        ],
    );
    let home = home("hf");
    ok(&glim(&home, &hub, &["pull", "test-org/tiny-hf"]));
    assert_eq!(
        files_under(&home.join("models")),
        [
            "tiny-hf/.glim-pull.json",
            "tiny-hf/config.json",
            "tiny-hf/generation_config.json",
            "tiny-hf/model.safetensors",
            "tiny-hf/tokenizer.json",
            "tiny-hf/tokenizer_config.json",
        ]
    );
    let list = ok(&glim(&home, &hub, &["list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("tiny-hf ") && l.contains(" hf ")),
        "{list}"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_broken_transfer_continues_where_it_stopped() {
    let hub = Hub::start();
    gguf_repo(&hub);
    lock(&hub.tricks)
        .cut
        .insert("tiny-Q4_K_M.gguf".into(), (30_000, 1));
    let home = home("continue");
    ok(&glim(
        &home,
        &hub,
        &["pull", "test-org/tiny-GGUF:tiny-Q4_K_M.gguf"],
    ));
    let requests = hub.requests("/resolve/main/tiny-Q4_K_M.gguf");
    let ranges: Vec<Option<&str>> = requests.iter().map(|r| r.range.as_deref()).collect();
    assert_eq!(ranges, [None, Some("bytes=30000-")]);
    assert_eq!(
        read(home.join("models/tiny-Q4_K_M/tiny-Q4_K_M.gguf")),
        hub.bytes("test-org/tiny-GGUF", "tiny-Q4_K_M.gguf")
    );
    std::fs::remove_dir_all(&home).unwrap();
}

/// Makes a pull of tiny-Q4_K_M fail with its connection broken every time; returns the
/// bytes it got.
fn fail_midway(hub: &Hub, home: &Path) -> usize {
    lock(&hub.tricks)
        .cut
        .insert("tiny-Q4_K_M.gguf".into(), (20_000, 1000));
    let err = assert_clean_error(&glim(home, hub, &["pull", "test-org/tiny-GGUF"]));
    assert!(
        err.contains("tiny-Q4_K_M.gguf") && err.contains("again"),
        "{err}"
    );
    lock(&hub.tricks).cut.clear();
    // Nothing shows as a model, but the part is kept.
    let list = ok(&glim(home, hub, &["list"]));
    assert!(list.starts_with("no models"), "{list}");
    assert!(!home.join("models/tiny-Q4_K_M").exists());
    let parts: Vec<String> = files_under(&home.join("models"))
        .into_iter()
        .filter(|f| f.ends_with("tiny-Q4_K_M.gguf.part"))
        .collect();
    assert_eq!(parts.len(), 1, "{parts:?}");
    hub.requests("/resolve/main/tiny-Q4_K_M.gguf").len() * 20_000
}

#[test]
fn a_failed_pull_resumes_when_run_again() {
    let hub = Hub::start();
    gguf_repo(&hub);
    // As on the Hub, the weights come from elsewhere: the range must survive the redirect.
    lock(&hub.tricks).redirect_lfs = true;
    let home = home("resume");
    let got = fail_midway(&hub, &home);
    let before = hub.requests("/tiny-Q4_K_M.gguf").len();
    ok(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF"]));
    let again = &hub.requests("/tiny-Q4_K_M.gguf")[before..];
    let targets: Vec<&str> = again.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/test-org/tiny-GGUF/resolve/main/tiny-Q4_K_M.gguf",
            "/cdn/test-org/tiny-GGUF/tiny-Q4_K_M.gguf"
        ]
    );
    for request in again {
        assert_eq!(request.range, Some(format!("bytes={got}-")));
    }
    assert_eq!(
        read(home.join("models/tiny-Q4_K_M/tiny-Q4_K_M.gguf")),
        hub.bytes("test-org/tiny-GGUF", "tiny-Q4_K_M.gguf")
    );
    assert!(!home.join("models/.pull").exists());
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_server_ignoring_ranges_sends_the_file_anew() {
    let hub = Hub::start();
    gguf_repo(&hub);
    let home = home("norange");
    fail_midway(&hub, &home);
    lock(&hub.tricks).ignore_range = true;
    let before = hub.requests("/resolve/").len();
    ok(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF"]));
    assert!(hub.requests("/resolve/")[before].range.is_some());
    assert_eq!(
        read(home.join("models/tiny-Q4_K_M/tiny-Q4_K_M.gguf")),
        hub.bytes("test-org/tiny-GGUF", "tiny-Q4_K_M.gguf")
    );
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_file_failing_its_checksum_is_not_kept() {
    let hub = Hub::start();
    gguf_repo(&hub);
    lock(&hub.tricks).wrong.insert("tiny-Q4_K_M.gguf".into());
    let home = home("checksum");
    let err = assert_clean_error(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF"]));
    assert!(
        err.contains("tiny-Q4_K_M.gguf") && err.contains("checksum") && err.contains("sha256"),
        "{err}"
    );
    let left = files_under(&home);
    assert!(
        left.iter().all(|f| !f.contains("tiny-Q4_K_M.gguf")),
        "{left:?}"
    );
    let list = ok(&glim(&home, &hub, &["list"]));
    assert!(list.starts_with("no models"), "{list}");
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn missing_files_and_repos_are_clear_errors() {
    let hub = Hub::start();
    gguf_repo(&hub);
    lock(&hub.tricks).missing.insert("tiny-Q4_K_M.gguf".into());
    let home = home("missing");
    let err = assert_clean_error(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF"]));
    let url = format!(
        "{}/test-org/tiny-GGUF/resolve/main/tiny-Q4_K_M.gguf",
        hub.endpoint()
    );
    assert!(
        err.contains("tiny-Q4_K_M.gguf") && err.contains("404") && err.contains(&url),
        "{err}"
    );
    assert!(ok(&glim(&home, &hub, &["list"])).starts_with("no models"));

    let err = assert_clean_error(&glim(&home, &hub, &["pull", "test-org/no-such-repo"]));
    assert!(
        err.contains("test-org/no-such-repo") && err.contains("404") && err.contains("HF_TOKEN"),
        "{err}"
    );
    let err = assert_clean_error(&glim(&home, &hub, &["pull", "not-a-repo"]));
    assert!(err.contains("ORG/NAME"), "{err}");

    hub.add(
        "test-org/docs",
        vec![small("README.md", "hi"), small("notes.txt", "x")],
    );
    let err = assert_clean_error(&glim(&home, &hub, &["pull", "test-org/docs"]));
    assert!(
        err.contains("holds no model") && err.contains("notes.txt"),
        "{err}"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

/// What a hostile or broken hub can try: a redirect to another port of the same host gets
/// no token; a page list that loops, a file longer than listed, a listed path with `..`
/// or a terminal escape, and a FILE with `..` are clear errors, with nothing past the
/// listed size written and no request for the `..` path made.
#[test]
fn pull_keeps_the_token_home_and_refuses_hostile_listings() {
    let hub = Hub::start();
    gguf_repo(&hub);
    let cdn = Hub::start();
    gguf_repo(&cdn);
    {
        let mut t = lock(&hub.tricks);
        t.redirect_lfs = true;
        t.cdn = Some(cdn.endpoint());
    }
    let home = home("hostile");
    let token = [("HF_TOKEN", "hf_secret")];
    ok(&glim_with(
        &home,
        &hub.endpoint(),
        &token,
        &["pull", "test-org/tiny-GGUF"],
    ));
    let fetched = cdn.requests("/cdn/");
    assert_eq!(fetched.len(), 1, "{:?}", cdn.requests(""));
    assert!(fetched[0].auth.is_none(), "{fetched:?}");
    assert!(hub.requests("/resolve/").iter().all(|r| r.auth.is_some()));

    lock(&hub.tricks).loop_pages = true;
    let err = assert_clean_error(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF:Q8_0"]));
    assert!(err.contains("leads back"), "{err}");
    lock(&hub.tricks).loop_pages = false;

    lock(&hub.tricks).redirect_lfs = false;
    lock(&hub.tricks)
        .listed_size
        .insert("tiny-Q8_0.gguf".into(), 10);
    let err = assert_clean_error(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF:Q8_0"]));
    assert!(err.contains("more than the 10 bytes"), "{err}");
    let parts = files_under(&home.join("models"));
    for part in parts.iter().filter(|p| p.ends_with(".part")) {
        assert!(read(home.join("models").join(part)).len() <= 10, "{part}");
    }
    lock(&hub.tricks).listed_size.clear();

    for listed in ["../escape.gguf", "evil\u{1b}[31m.gguf"] {
        lock(&hub.tricks).extra_listed = Some(listed.into());
        let err = assert_clean_error(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF"]));
        assert!(
            err.contains("refuses") && !err.contains('\u{1b}'),
            "{err:?}"
        );
    }
    let before = hub.requests("").len();
    let err = assert_clean_error(&glim(
        &home,
        &hub,
        &["pull", "test-org/tiny-GGUF:../../x.gguf"],
    ));
    assert!(err.contains("ORG/NAME"), "{err}");
    assert_eq!(hub.requests("").len(), before, "a request went out");
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_url_pull_fetches_one_gguf_file_without_the_token() {
    let hub = Hub::start();
    hub.add("files", vec![lfs("direct.Q4_0.gguf", 30, 70_000)]);
    lock(&hub.tricks)
        .cut
        .insert("direct.Q4_0.gguf".into(), (25_000, 1));
    let home = home("url");
    let url = format!("{}/files/direct.Q4_0.gguf?download=true", hub.endpoint());
    // The token is for the Hub (elsewhere here), not for any URL.
    let env = [("HF_TOKEN", "hf_secret")];
    let stdout = ok(&glim_with(
        &home,
        "http://127.0.0.1:9",
        &env,
        &["pull", &url],
    ));
    assert!(stdout.contains("glim run direct.Q4_0"), "{stdout}");
    assert_eq!(
        read(home.join("models/direct.Q4_0/direct.Q4_0.gguf")),
        hub.bytes("files", "direct.Q4_0.gguf")
    );
    let requests = hub.requests("/files/");
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].range.as_deref(), Some("bytes=25000-"));
    assert!(requests.iter().all(|r| r.auth.is_none()), "{requests:?}");
    let list = ok(&glim(&home, &hub, &["list"]));
    assert!(
        list.lines().any(|l| l.starts_with("direct.Q4_0 ")),
        "{list}"
    );

    let err = assert_clean_error(&glim(
        &home,
        &hub,
        &["pull", &format!("{}/files/model.bin", hub.endpoint())],
    ));
    assert!(err.contains(".gguf"), "{err}");
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn list_and_rm_the_cache() {
    let hub = Hub::start();
    let home = home("rm");
    let models = home.join("models");
    let mlc = models.join("SmolLM2-135M-Instruct-q4f16_1");
    std::fs::create_dir_all(&mlc).unwrap();
    std::fs::write(
        models.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        noise(40, 5000),
    )
    .unwrap();
    std::fs::write(mlc.join("mlc-chat-config.json"), "{}").unwrap();
    std::fs::write(mlc.join("tensor-cache.json"), "{}").unwrap();
    std::fs::write(mlc.join("params_shard_0.bin"), noise(41, 3 * 1024 * 1024)).unwrap();
    std::fs::write(home.join("outside.gguf"), b"keep me").unwrap();

    let list = ok(&glim(&home, &hub, &["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("SIZE"),
        "{list}"
    );
    assert!(
        lines[1].starts_with("SmolLM2-135M-Instruct-q4f16_1 ")
            && lines[1].contains("3.0 MiB")
            && lines[1].contains(" mlc "),
        "{list}"
    );
    assert!(
        lines[2].starts_with("SmolLM2-135M-Instruct.Q4_1 ")
            && lines[2].contains("4.9 KiB")
            && lines[2].contains(" gguf "),
        "{list}"
    );

    let err = assert_clean_error(&glim(&home, &hub, &["rm", "no-such-model"]));
    assert!(
        err.contains("no model named no-such-model") && err.contains("glim list"),
        "{err}"
    );
    for path in ["../outside", "../outside.gguf", "/etc/passwd", "..", "."] {
        let err = assert_clean_error(&glim(&home, &hub, &["rm", path]));
        assert!(err.contains("refusing"), "{path}: {err}");
    }
    assert!(home.join("outside.gguf").is_file());

    let stdout = ok(&glim(&home, &hub, &["rm", "SmolLM2-135M-Instruct-q4f16_1"]));
    assert!(
        stdout.contains("removed SmolLM2-135M-Instruct-q4f16_1"),
        "{stdout}"
    );
    assert!(!mlc.exists());
    ok(&glim(
        &home,
        &hub,
        &["rm", "SmolLM2-135M-Instruct.Q4_1.gguf"],
    ));
    assert!(files_under(&models).is_empty());
    assert!(ok(&glim(&home, &hub, &["list"])).starts_with("no models"));
    assert!(home.join("outside.gguf").is_file());
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn a_second_pull_of_the_same_model_is_refused_while_the_first_runs() {
    let hub = Hub::start();
    gguf_repo(&hub);
    let home = home("locked");
    let staging = home.join("models/.pull");
    std::fs::create_dir_all(&staging).unwrap();
    // The lock a running `glim pull test-org/tiny-GGUF` holds.
    let held = std::fs::File::create(staging.join(".tiny-Q4_K_M.lock")).unwrap();
    held.lock().unwrap();
    let err = assert_clean_error(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF"]));
    assert!(
        err.contains("another `glim pull` is downloading tiny-Q4_K_M"),
        "{err}"
    );
    assert!(hub.requests("/resolve/").is_empty(), "nothing downloaded");
    // Another model pulls meanwhile, and the refused one once the first pull is gone.
    ok(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF:Q8_0"]));
    drop(held);
    ok(&glim(&home, &hub, &["pull", "test-org/tiny-GGUF"]));
    assert_eq!(
        files_under(&home.join("models")),
        [
            "tiny-Q4_K_M/.glim-pull.json",
            "tiny-Q4_K_M/tiny-Q4_K_M.gguf",
            "tiny-Q8_0/.glim-pull.json",
            "tiny-Q8_0/tiny-Q8_0.gguf"
        ],
        "no lock files left"
    );
    std::fs::remove_dir_all(&home).unwrap();
}
