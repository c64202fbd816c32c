//! Helpers the binary's integration tests share (each test file uses some of them).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit status 1, one `error: ...` line as the last thing on stderr, no panic; that line.
pub fn assert_clean_error(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "stderr: {stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "stderr: {stderr}");
    errors[0].to_string()
}

/// The default model: `GLIM_TEST_GGUF`, else where `scripts/fetch-model.sh` puts it. `None`
/// (the test skips) without it, except under CI (`CI` set), where it fails.
pub fn test_model() -> Option<PathBuf> {
    let path = std::env::var_os("GLIM_TEST_GGUF")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(glim::model::loader::default_model_path);
    match path {
        Some(path) if path.exists() => Some(path),
        path => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs the test model at {path:?}: run scripts/fetch-model.sh"
            );
            eprintln!("SKIPPED: no model at {path:?} (run scripts/fetch-model.sh)");
            None
        }
    }
}

/// A file removed when this is dropped.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A copy of the GGUF at `src` whose metadata `key` holds the string `value` (a model file
/// as a stranger might hand one out), in the temporary directory.
pub fn gguf_with(src: &std::path::Path, key: &str, value: &str) -> TempFile {
    use glim::formats::gguf::{GgufFile, Value};
    use glim::formats::gguf_writer::{GgufWriter, TensorSpec};
    let file = GgufFile::open(src).unwrap();
    let mut metadata: Vec<(&str, Value)> = file
        .metadata_entries()
        .filter(|(k, _)| *k != key)
        .map(|(k, v)| (k, v.clone()))
        .collect();
    metadata.push((key, Value::String(value.into())));
    let specs: Vec<TensorSpec> = file.tensors().iter().map(TensorSpec::of).collect();
    let path = std::env::temp_dir().join(format!(
        "glim-test-{}-{}.gguf",
        key.replace('.', "-"),
        std::process::id()
    ));
    let out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut writer = GgufWriter::new(out, &metadata, &specs).unwrap();
    for t in file.tensors() {
        writer.write_tensor(file.tensor_bytes(t)).unwrap();
    }
    writer.finish().unwrap();
    TempFile(path)
}

/// `Command::output` with a time limit: a child still running after it (five minutes for
/// `timed_output`) is killed and the test fails, rather than hanging the run.
pub trait TimedOutput {
    fn output_within(&mut self, limit: std::time::Duration) -> std::io::Result<Output>;

    fn timed_output(&mut self) -> std::io::Result<Output> {
        self.output_within(std::time::Duration::from_secs(300))
    }
}

impl TimedOutput for std::process::Command {
    fn output_within(&mut self, limit: std::time::Duration) -> std::io::Result<Output> {
        use std::io::Read;
        use std::process::Stdio;
        use std::time::{Duration, Instant};
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let drain = |mut source: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = source.read_to_end(&mut buf);
                buf
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("piped")));
        let err = drain(Box::new(child.stderr.take().expect("piped")));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{self:?} ran past {} s", limit.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    }
}
