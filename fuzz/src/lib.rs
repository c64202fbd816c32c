//! Fuzz targets: each takes arbitrary bytes to one of glim's parsers of untrusted input (a
//! model file's pieces, a chat template, a request body) and must return, with a value or
//! an error, never panic, hang or allocate without bound. `fuzz/corpus/<target>/` holds the
//! seeds and every input a fuzzer found a fault with (kept as regression tests:
//! `fuzz/tests/corpus.rs` replays them all, and mutations of them, in `cargo test`).

use glim::api::{Request, Tools, UnknownFields};
use glim::formats::ggml::{self, GgmlType};
use glim::formats::gguf::GgufFile;
use glim::formats::mlc::TensorCache;
use glim::model::config::ModelConfig;
use glim::text::{ChatTemplate, Message, Tokenizer};

/// A target: its name (the corpus folder) and the function.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: [Target; 8] = [
    ("gguf", gguf),
    ("ggml_blocks", ggml_blocks),
    ("safetensors", safetensors_header),
    ("mlc_index", mlc_index),
    ("mlc_chat_config", mlc_chat_config),
    ("tokenizer_json", tokenizer_json),
    ("chat_template", chat_template),
    ("request", request),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// A GGUF file: its header and metadata, then what the loader reads of them (the model
/// config through the architecture's adapter, the tokenizer from the vocabulary), and the
/// first elements of every tensor decoded.
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = ModelConfig::from_gguf(&file);
    if let Ok(tokenizer) = Tokenizer::from_gguf(&file) {
        let _ = tokenizer.encode("Hello, world! <|im_start|>", true);
        let _ = ChatTemplate::from_tokenizer(&tokenizer);
    }
    for tensor in file.tensors() {
        let ty = tensor.ggml_type();
        let n = (ty.block_size() * 4).min(tensor.n_elements() as usize);
        let bytes = file.tensor_bytes(tensor);
        if let Ok(len) = ty.row_bytes(n) {
            if len <= bytes.len() {
                let _ = ggml::dequantize(ty, &bytes[..len], n);
            }
        }
    }
}

/// A block-quantized tensor: the first byte picks the GGML type, the rest are its blocks.
pub fn ggml_blocks(data: &[u8]) {
    let Some((&pick, blocks)) = data.split_first() else {
        return;
    };
    let ty = GgmlType::ALL[pick as usize % GgmlType::ALL.len()];
    if !ty.can_dequantize() {
        return;
    }
    let n_blocks = blocks.len() / ty.type_size().max(1);
    let n = n_blocks * ty.block_size();
    let _ = ggml::dequantize(ty, &blocks[..n_blocks * ty.type_size()], n);
}

/// A safetensors file's header, checked against the file's length.
pub fn safetensors_header(data: &[u8]) {
    let _ = glim::formats::safetensors::read_header(data);
}

/// An MLC folder's shard index (`tensor-cache.json`).
pub fn mlc_index(data: &[u8]) {
    let _ = TensorCache::parse(data, "tensor-cache.json");
}

/// An MLC folder's `mlc-chat-config.json`: the model config and sampling defaults.
pub fn mlc_chat_config(data: &[u8]) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = glim::model::mlc::config_from_chat_config(&json);
    let _ = glim::api::Defaults::from_chat_config(&json);
}

/// A `tokenizer.json`, then a text through it both ways.
pub fn tokenizer_json(data: &[u8]) {
    if let Ok(tokenizer) = Tokenizer::from_json_bytes(data) {
        if let Ok(ids) = tokenizer.encode("Hello, world! <s> 123 é", true) {
            let _ = tokenizer.decode(&ids);
        }
    }
}

/// A chat template (the text before the first NUL; what follows is the conversation's
/// first message), rendered over a short conversation with and without tools.
pub fn chat_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (source, said) = text.split_once('\0').unwrap_or((&text, "Hello"));
    let Ok(template) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let messages = [
        Message::system("Be brief."),
        Message::user(said),
        Message::assistant("Hi."),
        Message::user("Bye"),
    ];
    let _ = template.render(&messages, true);
    let tools = serde_json::json!([{"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}]);
    let _ = template.render_with_tools(&messages, Some(&tools), true);
}

/// A request body for `/v1/chat/completions` and `/v1/completions`.
pub fn request(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = Request::chat(&body, UnknownFields::Ignore);
    let _ = Request::chat(&body, UnknownFields::Reject);
    let _ = Request::completion(&body, UnknownFields::Ignore);
    if let Some(obj) = body.as_object() {
        let _ = Tools::from_request(obj);
    }
}
