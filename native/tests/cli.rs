//! Drives the built `glim` binary. Tests that need the model use `GLIM_TEST_GGUF` or the
//! default model path; they skip without it, except under CI (`CI` set), where they fail.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod common;
use common::{assert_clean_error, test_model, text, TimedOutput};

fn glim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glim"))
}

/// A path in the temp folder unique to this test process.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("glim-cli-test-{}-{name}", std::process::id()))
}

/// One model test at a time: the GPU here is a software rasterizer on few cores.
fn gpu_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts the stats lines `glim run` prints after each answer.
fn answers(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("| generated: "))
        .count()
}

#[test]
fn help_reads_well() {
    let out = glim().arg("--help").timed_output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["run", "devices", "ppl", "GLIM_ADAPTER", "fetch-model.sh"] {
        assert!(help.contains(word), "{help}");
    }
    let out = glim().args(["run", "--help"]).timed_output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--prompt",
        "--raw",
        "--system",
        "--temperature",
        "--top-k",
        "--top-p",
        "--min-p",
    ] {
        assert!(help.contains(flag), "{help}");
    }
    for flag in [
        "--repeat-penalty",
        "--seed",
        "--max-tokens",
        "--ctx",
        "--quant",
        "--stop",
        "q3f16",
    ] {
        assert!(help.contains(flag), "{help}");
    }
    let out = glim().args(["ppl", "--help"]).timed_output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("TEXTFILE"));
}

#[test]
fn devices_lists_adapters_or_fails_cleanly() {
    let out = glim().arg("devices").timed_output().unwrap();
    if out.status.success() {
        let list = text(&out.stdout);
        assert!(
            list.lines().any(|l| l.starts_with('*')),
            "no adapter marked: {list}"
        );
        assert!(list.contains("shader-f16"), "{list}");
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs a GPU adapter: {}",
            text(&out.stderr)
        );
        assert_clean_error(&out);
    }
    let out = glim()
        .arg("devices")
        .env("GLIM_BACKEND", "nonsense")
        .timed_output()
        .unwrap();
    let error = assert_clean_error(&out);
    assert!(error.contains("GLIM_BACKEND"), "{error}");
}

#[test]
fn missing_model_file_is_a_clean_error() {
    let missing = temp_path("missing.gguf");
    let out = glim()
        .arg("run")
        .arg(&missing)
        .args(["-p", "hi"])
        .timed_output()
        .unwrap();
    let error = assert_clean_error(&out);
    assert!(error.contains(&*missing.to_string_lossy()), "{error}");

    // No MODEL and no default model: say how to get one.
    let home = temp_path("empty-home");
    let out = glim()
        .args(["run", "-p", "hi"])
        .env("GLIM_HOME", &home)
        .timed_output()
        .unwrap();
    let error = assert_clean_error(&out);
    assert!(error.contains("scripts/fetch-model.sh"), "{error}");
}

#[test]
fn bad_options_are_clean_errors() {
    let out = glim()
        .args(["run", "-p", "hi", "--temperature", "-1"])
        .timed_output()
        .unwrap();
    let error = assert_clean_error(&out);
    assert!(error.contains("--temperature"), "{error}");
    let out = glim()
        .args(["run", "-p", "hi", "-n", "300", "--ctx", "256"])
        .timed_output()
        .unwrap();
    let error = assert_clean_error(&out);
    assert!(error.contains("--ctx"), "{error}");
    // Usage errors are clap's (exit status 2), still without a panic.
    let out = glim()
        .args(["run", "--quant", "q9"])
        .timed_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error:"));
}

#[test]
fn non_gguf_file_is_a_clean_error() {
    let path = temp_path("garbage.gguf");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, garbage).unwrap();
    let out = glim()
        .arg("run")
        .arg(&path)
        .args(["-p", "hi"])
        .timed_output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_clean_error(&out);
}

#[test]
fn ppl_with_a_too_short_text_is_a_clean_error() {
    let text_path = temp_path("short.txt");
    std::fs::write(&text_path, "Hello world.").unwrap();
    let model = test_model();
    let _gpu = gpu_lock();
    let model_arg = model.clone().unwrap_or_else(|| temp_path("missing.gguf"));
    let out = glim()
        .arg("ppl")
        .arg(&model_arg)
        .arg(&text_path)
        .timed_output()
        .unwrap();
    let _ = std::fs::remove_file(&text_path);
    let error = assert_clean_error(&out);
    if model.is_some() {
        assert!(error.contains("fewer than two chunks"), "{error}");
    }
    // A text file that is not there fails before the model loads.
    let out = glim()
        .arg("ppl")
        .arg(&model_arg)
        .arg(temp_path("absent.txt"))
        .timed_output()
        .unwrap();
    assert_clean_error(&out);
}

#[test]
fn run_answers_a_prompt() {
    let Some(model) = test_model() else { return };
    let _gpu = gpu_lock();
    let out = glim()
        .arg("run")
        .arg(&model)
        .args([
            "-p",
            "What is the capital of France?",
            "-n",
            "8",
            "--ctx",
            "256",
            "--temperature",
            "0",
        ])
        .timed_output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let answer = text(&out.stdout);
    // What the answer says, not only that there is one (greedy: the same every run).
    assert!(
        answer.contains("Paris"),
        "answer: {answer:?}\nstderr: {stderr}"
    );
    assert_eq!(answers(&stderr), 1, "{stderr}");
    // The GGUF runs as stored: its Q4_1 matrices and Q8_0 embedding, no conversion.
    assert!(stderr.contains("q4_1 + q8_0 weights"), "{stderr}");
    assert!(!stderr.contains("rounded a second time"), "{stderr}");
}

/// `--json-schema` holds the answer to the schema (benches/person.schema.json: its answer
/// parses and keeps every rule); a schema that does not compile or a file that is not
/// JSON is a clean error.
#[test]
fn run_answers_in_json_a_schema_allows() {
    let schema_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/person.schema.json");
    let bad_json = temp_path("not-json.json");
    std::fs::write(&bad_json, "{ not json").unwrap();
    let out = glim()
        .args(["run", "/nonexistent.gguf", "-p", "hi", "--json-schema"])
        .arg(&bad_json)
        .timed_output()
        .unwrap();
    assert!(assert_clean_error(&out).contains("not JSON"));
    let Some(model) = test_model() else { return };
    let _gpu = gpu_lock();
    let run = |schema: &PathBuf| {
        glim()
            .arg("run")
            .arg(&model)
            .args([
                "-p",
                "Describe a person who lives in Europe.",
                "-n",
                "80",
                "--ctx",
                "256",
            ])
            .args(["--temperature", "0", "--json-schema"])
            .arg(schema)
            .timed_output()
            .unwrap()
    };
    let out = run(&schema_path);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let answer = text(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}\n{stderr}"));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    let o = v.as_object().unwrap();
    let required = schema["required"].as_array().unwrap();
    assert_eq!(o.len(), required.len(), "{answer}");
    assert!(
        required.iter().all(|k| o.contains_key(k.as_str().unwrap())),
        "{answer}"
    );
    let cities = schema["properties"]["city"]["enum"].as_array().unwrap();
    assert!(cities.contains(&o["city"]), "{answer}");
    assert!((0..=150).contains(&o["age"].as_i64().unwrap()), "{answer}");
    assert!(
        o["name"].as_str().unwrap().chars().count() <= 20,
        "{answer}"
    );

    let uncompilable = temp_path("bad-schema.json");
    std::fs::write(
        &uncompilable,
        r##"{"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}"##,
    )
    .unwrap();
    let out = run(&uncompilable);
    assert!(assert_clean_error(&out).contains("does not compile"));
    let _ = std::fs::remove_file(&uncompilable);
    let _ = std::fs::remove_file(&bad_json);
}

#[test]
fn run_raw_prompt_is_greedy_and_matches_llama_cpp() {
    let Some(model) = test_model() else { return };
    let _gpu = gpu_lock();
    let out = glim()
        .arg("run")
        .arg(&model)
        .args([
            "--raw",
            "-p",
            "The capital of France is",
            "-n",
            "3",
            "--quant",
            "f16",
        ])
        .timed_output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let answer = text(&out.stdout);
    assert!(
        answer.starts_with(" Paris"),
        "answer: {answer:?}\nstderr: {stderr}"
    );
}

/// Runs a chat with `input` on stdin; returns (stdout, stderr).
fn chat(model: &PathBuf, args: &[&str], input: &str) -> (String, String) {
    let mut child = glim()
        .arg("run")
        .arg(model)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "stderr: {stderr}");
    (stdout, stderr)
}

#[test]
fn chat_answers_clears_and_exits() {
    let Some(model) = test_model() else { return };
    let _gpu = gpu_lock();
    let (stdout, stderr) = chat(
        &model,
        &["-n", "8", "--ctx", "256"],
        "Hi\n/clear\nHello\n/exit\n",
    );
    assert_eq!(answers(&stderr), 2, "{stderr}");
    assert!(stderr.contains("(conversation cleared)"), "{stderr}");
    assert!(
        stdout.lines().filter(|l| !l.trim().is_empty()).count() >= 2,
        "{stdout}"
    );
    assert!(!stderr.contains("error:"), "{stderr}");
}

#[test]
fn chat_keeps_going_when_the_conversation_outgrows_the_context() {
    let Some(model) = test_model() else { return };
    let _gpu = gpu_lock();
    // With a 64-token context the third turn no longer fits: the first turn is dropped. A
    // message too long for the context alone is refused, and the chat goes on (EOF quits).
    let long = "word ".repeat(100);
    let input = format!("Hi\nHow are you?\nWhat is 2+2?\n{long}\nThanks\n");
    let (_, stderr) = chat(&model, &["-n", "8", "--ctx", "64"], &input);
    assert!(stderr.contains("dropped the oldest"), "{stderr}");
    assert_eq!(answers(&stderr), 4, "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("exceed the context"), "{stderr}");
}

/// Ctrl-C while an answer streams stops that answer only; at the prompt it quits.
#[cfg(unix)]
#[test]
fn chat_ctrl_c_stops_the_answer_then_quits() {
    let Some(model) = test_model() else { return };
    let _gpu = gpu_lock();
    let mut child = glim()
        .arg("run")
        .arg(&model)
        .args(["-n", "200", "--ctx", "512"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let collect = |mut source: Box<dyn Read + Send>| {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let writer = sink.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = source.read(&mut buf) {
                if n == 0 {
                    break;
                }
                writer.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        sink
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let wait_for = |what: &str, sink: &Arc<Mutex<Vec<u8>>>, found: &dyn Fn(&str) -> bool| {
        let started = Instant::now();
        while !found(&text(&sink.lock().unwrap())) {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let interrupt = |pid: u32| {
        let status = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };

    stdin
        .write_all(b"Write a long story about a dragon who learns to bake bread.\n")
        .unwrap();
    stdin.flush().unwrap();
    wait_for("the answer to start", &stdout, &|s| !s.is_empty());
    interrupt(child.id());
    wait_for("the answer to stop", &stderr, &|s| {
        s.contains("| generated: ")
    });
    let err = text(&stderr.lock().unwrap());
    assert!(err.contains("(stopped)"), "{err}");
    // Back at the prompt (its `> ` after the stopped answer's line): Ctrl-C quits.
    wait_for("the prompt", &stderr, &|s| {
        s.rsplit_once("| generated: ")
            .is_some_and(|(_, after)| after.ends_with("> "))
    });
    interrupt(child.id());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("glim run did not quit on Ctrl-C at the prompt");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = text(&stderr.lock().unwrap());
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(!err.contains("error:"), "{err}");
}

/// `glim quantize` writes a model folder that `glim run` and `glim ppl` take, with the same
/// answer as the GGUF; it refuses to write into a folder that holds something.
#[test]
fn quantize_then_run_the_folder() {
    let Some(model) = test_model() else { return };
    let _gpu = gpu_lock();
    let out_dir = temp_path("q4f16-folder");
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = glim()
        .arg("quantize")
        .arg(&model)
        .arg(&out_dir)
        .args(["--quant", "q4f16"])
        .timed_output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("q4f16_1"), "{stderr}");
    for file in [
        "tensor-cache.json",
        "ndarray-cache.json",
        "params_shard_0.bin",
        "mlc-chat-config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out_dir.join(file).is_file(), "no {file}: {stderr}");
    }

    let answer = |path: &std::path::Path, extra: &[&str]| {
        let out = glim()
            .arg("run")
            .arg(path)
            .args(["-p", "Name a fruit.", "-n", "12", "--ctx", "256"])
            .args(extra)
            .timed_output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "stderr: {stderr}");
        (text(&out.stdout), stderr)
    };
    let (from_folder, stderr) = answer(&out_dir, &[]);
    assert!(stderr.contains("q4f16"), "{stderr}");
    let (from_gguf, converting) = answer(&model, &["--quant", "q4f16"]);
    assert!(converting.contains("rounded a second time"), "{converting}");
    assert_eq!(from_folder, from_gguf);
    assert!(!from_folder.trim().is_empty());

    let text_file = temp_path("ppl.txt");
    std::fs::write(
        &text_file,
        "The quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let out = glim()
        .arg("ppl")
        .arg(&out_dir)
        .arg(&text_file)
        .args(["--ctx", "128"])
        .timed_output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("PPL = "),
        "{}",
        text(&out.stdout)
    );

    // The folder is not empty any more: a second write is refused, the folder untouched.
    let before = std::fs::read(out_dir.join("tensor-cache.json")).unwrap();
    let out = glim()
        .arg("quantize")
        .arg(&model)
        .arg(&out_dir)
        .timed_output()
        .unwrap();
    let error = assert_clean_error(&out);
    assert!(error.contains("not empty"), "{error}");
    assert_eq!(
        std::fs::read(out_dir.join("tensor-cache.json")).unwrap(),
        before
    );
    // Re-quantizing a folder is refused too: the original model is what to quantize.
    let again = temp_path("q3-from-folder");
    let out = glim()
        .arg("quantize")
        .arg(&out_dir)
        .arg(&again)
        .args(["--quant", "q3f16"])
        .timed_output()
        .unwrap();
    let error = assert_clean_error(&out);
    assert!(error.contains("already an MLC model folder"), "{error}");
    assert!(!again.exists());
    let _ = std::fs::remove_dir_all(&out_dir);
    let _ = std::fs::remove_file(&text_file);
}

#[test]
fn bench_reports_memory_speed_and_step_shape() {
    let Some(model) = test_model() else { return };
    let _gpu = gpu_lock();
    let out = glim()
        .arg("bench")
        .arg(&model)
        .args(["--prompt-len", "8", "--gen", "3", "--runs", "2", "--json"])
        .timed_output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let stdout = text(&out.stdout);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    let row = &rows[0];
    assert_eq!(row["format"], "q4_1 + q8_0");
    let bytes = |k: &str| row[k].as_u64().unwrap_or_else(|| panic!("{k}: {row}"));
    // SmolLM2-135M as stored: 106 M Q4_1 weights at 5 bits and a 28 M Q8_0 embedding at
    // 8.5, about 92 MiB; 30 layers x 2 x 8 tokens x 192 values of KV cache.
    let weights = bytes("weight_bytes");
    assert!((85 << 20..100 << 20).contains(&weights), "{row}");
    let bpw = row["bits_per_weight"].as_f64().unwrap();
    assert!(
        (5.6..5.9).contains(&bpw),
        "the file's own bits per weight: {row}"
    );
    assert_eq!(bytes("kv_bytes"), 30 * 2 * 8 * 192 * 2, "{row}");
    assert_eq!(
        bytes("gpu_peak_bytes"),
        weights + bytes("kv_bytes") + bytes("activation_bytes")
    );
    assert!(bytes("running_memory_bytes") >= bytes("gpu_peak_bytes"));
    // Every layer's matrices are read once per token, plus the tied head.
    assert!(bytes("decode_bytes_per_token") > weights * 9 / 10, "{row}");
    let steps = bytes("dispatches_per_token");
    assert!((30..2000).contains(&steps), "{row}");
    for key in ["prefill_tok_s", "decode_tok_s"] {
        let runs = row[key]["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{row}");
        let median = row[key]["median"].as_f64().unwrap();
        assert!(median > 0.0 && median.is_finite(), "{row}");
        assert!(row[key]["min"].as_f64().unwrap() <= median);
    }
}

#[test]
fn bench_refuses_bad_sizes_cleanly() {
    let out = glim()
        .args(["bench", "/nonexistent.gguf", "--runs", "0"])
        .timed_output()
        .unwrap();
    assert!(assert_clean_error(&out).contains("--runs"));
    let Some(model) = test_model() else { return };
    let out = glim()
        .arg("bench")
        .arg(&model)
        .args(["--prompt-len", "64", "--ctx", "32"])
        .timed_output()
        .unwrap();
    assert!(assert_clean_error(&out).contains("--ctx 32"));
}

#[test]
fn synth_writes_a_model_glim_runs_and_never_overwrites() {
    let path = temp_path("synth-tiny.gguf");
    let _ = std::fs::remove_file(&path);
    let out = glim()
        .arg("synth")
        .arg(&path)
        .args(["--shape", "tiny", "--type", "q4_1", "--seed", "3"])
        .timed_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("2 layers, d 128"));
    let first = std::fs::read(&path).unwrap();
    // The file exists now: refused, and left as it was.
    let again = glim().arg("synth").arg(&path).timed_output().unwrap();
    assert!(assert_clean_error(&again).contains("cannot create"));
    assert_eq!(std::fs::read(&path).unwrap(), first);
    let unknown = glim()
        .args(["synth", "/tmp/never-written.gguf", "--shape", "llama9"])
        .timed_output()
        .unwrap();
    assert!(assert_clean_error(&unknown).contains("llama9"));

    let _gpu = gpu_lock();
    let out = glim()
        .arg("bench")
        .arg(&path)
        .args(["--prompt-len", "16", "--gen", "4", "--runs", "1", "--json"])
        .timed_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    // Two layers: 7 dispatches each, the embedding, the head and the argmax.
    assert_eq!(row["dispatches_per_token"], 2 * 7 + 3, "{row}");
    let _ = std::fs::remove_file(&path);
}
