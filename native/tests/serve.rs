//! `glim serve` driven over plain HTTP/1.1: answers equal `glim run`'s, concurrent streams
//! equal their one-at-a-time answers, and bad requests get OpenAI-shaped errors with the
//! right status while the server keeps serving. Needs the default model (skips without it,
//! except under CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{gguf_with, test_model, TimedOutput};

/// A running `glim serve`, killed when dropped; requests go through its [`Client`].
struct Server {
    child: Child,
    client: Client,
}

/// Sends requests to the server on `port`.
#[derive(Clone, Copy)]
struct Client {
    port: u16,
}

impl std::ops::Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts the server on a free port and waits until the model is loaded.
    fn start(model: &PathBuf, extra: &[&str]) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_glim"))
            .arg("serve")
            .arg(model)
            .args(["--port", &port.to_string(), "--ctx", "512"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            client: Client { port },
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((200, _)) = server.try_request("GET", "/health", None, &[]) {
                return server;
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Client {
    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        if let Some(body) = body {
            // A body the server refuses early may not be read whole.
            let _ = stream.write_all(body);
        }
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        }
        let mut body = String::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                body.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        } else {
            reader.read_to_string(&mut body)?;
        }
        Ok((status, body))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, String) {
        self.try_request("POST", path, Some(body.to_string().as_bytes()), &[])
            .unwrap()
    }

    fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.post(path, body);
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        (status, value)
    }
}

/// The content of a chat stream's chunks, checked to be well formed and to end in
/// `data: [DONE]` after a chunk with a finish reason.
fn stream_content(sse: &str) -> String {
    let data: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{sse}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"].is_string()),
        "{sse}"
    );
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn chat_body(prompt: &str, stream: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 24,
        "stream": stream,
    })
}

fn error_status(server: &Server, body: &[u8], path: &str) -> (u16, Value) {
    let (status, text) = server.try_request("POST", path, Some(body), &[]).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value)
}

#[test]
fn serves_openai_requests_and_batches_concurrent_streams() {
    let Some(model) = test_model() else { return };
    let server = Server::start(&model, &["--parallel", "4"]);

    // The greedy answer equals `glim run --temperature 0` on the same prompt.
    let prompt = "What is the capital of France?";
    let (status, response) = server.post_json("/v1/chat/completions", &chat_body(prompt, false));
    assert_eq!(status, 200, "{response}");
    let answer = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(response["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let run = Command::new(env!("CARGO_BIN_EXE_glim"))
        .arg("run")
        .arg(&model)
        .args([
            "-p",
            prompt,
            "-n",
            "24",
            "--ctx",
            "512",
            "--temperature",
            "0",
        ])
        .timed_output()
        .unwrap();
    assert!(run.status.success());
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), answer.trim());

    // Streaming gives the same text, then [DONE].
    let (status, sse) = server.post("/v1/chat/completions", &chat_body(prompt, true));
    assert_eq!(status, 200);
    assert_eq!(stream_content(&sse), answer);

    // Four streams at once, each with its own prompt, equal their one-at-a-time answers.
    let prompts = [
        "Name three colors.",
        "What is 2 plus 2?",
        "Write a haiku about the sea.",
        "Who wrote Hamlet?",
    ];
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| stream_content(&server.post("/v1/chat/completions", &chat_body(p, true)).1))
        .collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                s.spawn(move || {
                    stream_content(&server.post("/v1/chat/completions", &chat_body(p, true)).1)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);

    // Text completions, a stop sequence and the model list.
    let (status, response) = server.post_json(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0,
                "stop": ["."]}),
    );
    assert_eq!(status, 200, "{response}");
    let text = response["choices"][0]["text"].as_str().unwrap();
    assert!(!text.contains('.'), "{text:?}");
    assert_eq!(response["choices"][0]["finish_reason"], "stop");
    let (status, models) = server.try_request("GET", "/v1/models", None, &[]).unwrap();
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    let id = models["data"][0]["id"].as_str().unwrap().to_string();
    let named = json!({"model": id, "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": 2});
    assert_eq!(server.post_json("/v1/chat/completions", &named).0, 200);

    // Bad requests: OpenAI's error shape, the right status, and the server goes on.
    let chat = "/v1/chat/completions";
    for (body, status, says) in [
        (b"{not json".to_vec(), 400, "JSON"),
        (br#"{"messages": "hi"}"#.to_vec(), 400, "messages"),
        (
            br#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#.to_vec(),
            400,
            "temperature",
        ),
        (
            br#"{"messages": [{"role": "user", "content": "hi"}], "n": 2}"#.to_vec(),
            400,
            "`n`",
        ),
        (
            br#"{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}"#.to_vec(),
            404,
            "gpt-9",
        ),
        (
            br#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}"#.to_vec(),
            400,
            "512",
        ),
    ] {
        let (got, error) = error_status(&server, &body, chat);
        assert_eq!(got, status, "{error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message:?} should name {says:?}");
    }
    let long = "word ".repeat(2000);
    let (got, error) = error_status(
        &server,
        chat_body(&long, false).to_string().as_bytes(),
        chat,
    );
    assert_eq!(got, 400, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("context"));
    let huge = vec![b' '; 2 << 20];
    assert_eq!(error_status(&server, &huge, chat).0, 413);
    assert_eq!(error_status(&server, b"{}", "/v1/nothing").0, 404);
    // A wrong method is a 405 in OpenAI's shape too.
    let (got, text) = server.try_request("GET", chat, None, &[]).unwrap();
    assert_eq!(got, 405, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert!(error["error"]["message"].as_str().unwrap().contains("GET"));
    // A body declared past --max-body is refused before any of it is sent.
    let mut declared = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        declared,
        "POST {chat} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 100000000\r\n\r\n"
    )
    .unwrap();
    declared
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut status_line = String::new();
    BufReader::new(&declared)
        .read_line(&mut status_line)
        .unwrap();
    assert!(status_line.contains(" 413 "), "{status_line:?}");
    // Still serving, the same answer.
    let (status, again) = server.post_json(chat, &chat_body(prompt, false));
    assert_eq!(status, 200);
    assert_eq!(again["choices"][0]["message"]["content"], answer.as_str());
}

#[test]
fn api_key_is_required_when_set() {
    let Some(model) = test_model() else { return };
    let server = Server::start(&model, &["--parallel", "1", "--api-key", "sesame"]);
    let body = chat_body("Hi", false).to_string();
    let (status, error) = server
        .try_request("POST", "/v1/chat/completions", Some(body.as_bytes()), &[])
        .unwrap();
    assert_eq!(status, 401, "{error}");
    assert!(error.contains("invalid_api_key"), "{error}");
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(
        server
            .try_request("GET", "/v1/models", None, &wrong)
            .unwrap()
            .0,
        401
    );
    let right = [("Authorization", "Bearer sesame")];
    let (status, _) = server
        .try_request(
            "POST",
            "/v1/chat/completions",
            Some(body.as_bytes()),
            &right,
        )
        .unwrap();
    assert_eq!(status, 200);
}

/// Whether the server closes `stream` within `wait` (whatever it sends first, such as a
/// 408, is read and skipped).
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true, // reset
        }
    }
}

/// Connections that never send a request, one that stops halfway through its headers, a
/// flood past the server's connection cap and a client that stops reading its stream: the
/// server drops the silent ones and keeps answering everybody else, with the same answer.
#[test]
fn silent_floods_and_stalled_readers_do_not_stop_service() {
    let Some(model) = test_model() else { return };
    let server = Server::start(&model, &["--parallel", "2"]);
    let chat = "/v1/chat/completions";
    let body = chat_body("Who wrote Hamlet?", false);
    let (status, reference) = server.post_json(chat, &body);
    assert_eq!(status, 200, "{reference}");
    let answer = &reference["choices"][0]["message"]["content"];
    let connect = || TcpStream::connect(("127.0.0.1", server.port)).unwrap();

    // Asks for a long stream and never reads it.
    let mut stalled = connect();
    let long = json!({"messages": [{"role": "user", "content": "Tell me a long story."}],
                      "max_tokens": 400, "stream": true})
    .to_string();
    write!(
        stalled,
        "POST {chat} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{long}",
        long.len()
    )
    .unwrap();
    // Silent connections, and one that never finishes its headers.
    let mut silent: Vec<TcpStream> = (0..100).map(|_| connect()).collect();
    let mut halfway = connect();
    halfway
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    // Whole headers and a body that never comes (the slow-body attack).
    let mut bodiless: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = connect();
            write!(
                s,
                "POST {chat} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"messages\": "
            )
            .unwrap();
            s
        })
        .collect();
    let (status, again) = server.post_json(chat, &body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(&again["choices"][0]["message"]["content"], answer);
    // The server closes them once its header timeout (10 s), and for a body the time it
    // takes at the slowest rate served, have passed.
    for stream in silent
        .iter_mut()
        .chain([&mut halfway])
        .chain(bodiless.iter_mut())
    {
        assert!(closed_within(stream, Duration::from_secs(60)));
    }

    // A flood past the cap of 512 open connections: the ones past it are closed at once,
    // while those within it wait for the header timeout (counted, not timed: when all the
    // ones past the cap are closed, those within it are still open).
    let mut flood: Vec<TcpStream> = (0..600).map(|_| connect()).collect();
    let past_cap = flood.len() - 512;
    let mut open = vec![true; flood.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while open.iter().filter(|&&o| !o).count() < past_cap {
        for (stream, open) in flood.iter_mut().zip(open.iter_mut()) {
            *open = *open && !closed_within(stream, Duration::from_millis(1));
        }
        assert!(
            Instant::now() < deadline,
            "the connections past the cap stay open"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed = open.iter().filter(|&&o| !o).count();
    assert!(
        closed < past_cap + 50,
        "{closed} closed: the cap, not the header timeout, should close them"
    );
    // Once the flood's silent connections time out, requests are answered again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match server.try_request("POST", chat, Some(body.to_string().as_bytes()), &[]) {
            Ok((200, text)) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(&value["choices"][0]["message"]["content"], answer);
                break;
            }
            other => {
                assert!(Instant::now() < deadline, "never served again: {other:?}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    drop(flood);
    drop(stalled);
}

/// A model whose chat template never finishes (two nested loops of 100 000): chat requests
/// get a 400 that blames the template, at once, while `/health` and raw completions, which
/// need no template, keep being answered.
#[test]
fn a_looping_chat_template_is_refused_and_the_server_keeps_serving() {
    let Some(model) = test_model() else { return };
    let looping =
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let hostile = gguf_with(&model, "tokenizer.chat_template", looping);
    let server = Server::start(&hostile.0, &["--parallel", "1"]);
    let chats: Vec<_> = (0..4)
        .map(|_| {
            let client = server.client;
            std::thread::spawn(move || {
                client.post_json("/v1/chat/completions", &chat_body("Hi", false))
            })
        })
        .collect();
    for chat in chats {
        let (status, error) = chat.join().unwrap();
        assert_eq!(status, 400, "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("chat template") && message.contains("at fault"),
            "{message}"
        );
    }
    assert_eq!(
        server.try_request("GET", "/health", None, &[]).unwrap().0,
        200
    );
    let (status, completion) = server.post_json(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(status, 200, "{completion}");
}
