//! Writes the fuzz targets' seed inputs into `fuzz/corpus/<target>/seed-*`: small, valid
//! examples of each input (a tiny GGUF model with a vocabulary and a chat template, a block
//! of every GGML type, a safetensors file, an MLC index and chat config, a tokenizer.json,
//! real chat templates, request bodies), so fuzzing starts from inputs that reach deep.
//! Run once by hand (`cargo run -p glim-fuzz --bin make-seeds`); the seeds are committed.

use std::path::{Path, PathBuf};

use glim::formats::ggml::{self, GgmlType};
use glim::formats::gguf::{Array, GgufFile, Value};
use glim::formats::gguf_writer::{GgufWriter, TensorSpec};
use glim::formats::mlc::TensorCache;
use glim::text::Tokenizer;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// A one-layer Llama of width 32 with a SentencePiece vocabulary and ChatML's template.
fn tiny_gguf() -> Vec<u8> {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    let mut types = vec![2, 3, 3, 3, 3];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    types.extend([6; 256]);
    for piece in [
        "\u{2581}",
        "\u{2581}Hello",
        "\u{2581}world",
        "l",
        "o",
        "He",
        "!",
    ] {
        tokens.push(piece.into());
        types.push(1);
    }
    let n = tokens.len();
    let scores: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
    let template = glim::text::CHATML_TEMPLATE;
    let metadata = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(1)),
        ("llama.embedding_length", Value::U32(32)),
        ("llama.feed_forward_length", Value::U32(64)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.context_length", Value::U32(32)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", Value::Array(Array::String(tokens))),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(4)),
        ("tokenizer.chat_template", Value::String(template.into())),
    ];
    let tensors = [
        ("token_embd.weight", vec![32, n as u64], GgmlType::Q8_0),
        ("blk.0.attn_q.weight", vec![32, 32], GgmlType::Q4_0),
        ("output_norm.weight", vec![32], GgmlType::F32),
    ];
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, dims, ty)| TensorSpec {
            name: name.to_string(),
            dims: dims.clone(),
            ggml_type: *ty,
        })
        .collect();
    let mut writer = GgufWriter::new(Vec::new(), &metadata, &specs).unwrap();
    for (i, spec) in specs.iter().enumerate() {
        let blocks = spec.n_bytes().unwrap() / spec.ggml_type.type_size();
        writer
            .write_tensor(&ggml::synthetic_blocks(spec.ggml_type, blocks, i as u64).unwrap())
            .unwrap();
    }
    writer.finish().unwrap()
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let reference = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/reference");

    let gguf = tiny_gguf();
    let file = GgufFile::from_bytes(gguf.clone()).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    write(&root.join("gguf"), "tiny-llama.gguf", &gguf);

    for (i, ty) in GgmlType::ALL.iter().enumerate() {
        if ty.can_dequantize() {
            let mut data = vec![i as u8];
            data.extend(ggml::synthetic_blocks(*ty, 2, i as u64).unwrap());
            write(&root.join("ggml_blocks"), ty.name(), &data);
        }
    }

    let values: Vec<u8> = [1.0f32, -2.0, 0.5, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &values).unwrap();
    let st = safetensors::serialize([("model.norm.weight", view)], None).unwrap();
    glim::formats::safetensors::read_header(&st).unwrap();
    write(&root.join("safetensors"), "one-tensor.safetensors", &st);

    let index = serde_json::json!({
        "metadata": {"ParamSize": 1, "ParamBytes": 16.0, "BitsPerParam": 32.0},
        "records": [{"dataPath": "params_shard_0.bin", "format": "raw-shard", "nbytes": 16,
            "records": [{"name": "model.norm.weight", "shape": [4], "dtype": "float32",
                "format": "raw", "nbytes": 16, "byteOffset": 0}],
            "md5sum": "00000000000000000000000000000000"}]
    });
    let index = serde_json::to_vec_pretty(&index).unwrap();
    TensorCache::parse(&index, "tensor-cache.json").unwrap();
    write(&root.join("mlc_index"), "tensor-cache.json", &index);

    let chat = serde_json::json!({
        "model_type": "llama", "quantization": "q4f16_1",
        "model_config": {"hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2,
            "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 300,
            "rms_norm_eps": 1e-5, "context_window_size": 32, "position_embedding_base": 10000},
        "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1,
    });
    glim::model::mlc::config_from_chat_config(&chat).unwrap();
    write(
        &root.join("mlc_chat_config"),
        "mlc-chat-config.json",
        &serde_json::to_vec_pretty(&chat).unwrap(),
    );

    let (json, _) = tokenizer.to_hf_files().unwrap();
    write(&root.join("tokenizer_json"), "spm.json", json.as_bytes());

    let dir = root.join("chat_template");
    write(&dir, "chatml.jinja", glim::text::CHATML_TEMPLATE.as_bytes());
    for entry in std::fs::read_dir(reference.join("templates")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jinja") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            write(&dir, &name, &std::fs::read(&path).unwrap());
        }
    }

    let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
        "required": ["city"]}}}]);
    for (name, body) in [
        (
            "chat",
            serde_json::json!({"messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"}], "temperature": 0.5, "top_p": 0.9,
            "max_tokens": 16, "stop": ["\n"], "stream": true,
            "stream_options": {"include_usage": true}, "seed": 7}),
        ),
        (
            "tools",
            serde_json::json!({"messages": [{"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_000000100",
                "type": "function", "function": {"name": "get_weather",
                "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_000000100", "content": "21 C"}],
            "tools": tools, "tool_choice": "auto", "parallel_tool_calls": false}),
        ),
        (
            "schema",
            serde_json::json!({"messages": [{"role": "user", "content": "JSON"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p",
                "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}),
        ),
        (
            "completion",
            serde_json::json!({"prompt": "Once upon a time", "max_tokens": 8,
            "temperature": 0, "repetition_penalty": 1.2}),
        ),
    ] {
        write(
            &root.join("request"),
            &format!("{name}.json"),
            &serde_json::to_vec(&body).unwrap(),
        );
    }
    println!("wrote seeds under {}", root.display());
}
