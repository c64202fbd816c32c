//! Model loading end to end: the same weights as a Hugging Face folder give the same
//! tokens as the GGUF, and every kind of bad input is a one-line error, never a panic.

use std::path::{Path, PathBuf};

use glim::formats::gguf::GgufFile;
use glim::generate::{GenerationParams, Session};
use glim::model::config::ModelConfig;
use glim::model::graph::LoadOptions;
use glim::model::loader::{self, load, LoadedModel};
use glim::model::mlc::MlcQuant;
use glim::model::mlc_writer::write_folder;
use glim::model::weights::{self, ModelParams};
use glim::quant::WeightFormat;
use glim::text::Tokenizer;
use glim::Error;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(format: WeightFormat) -> LoadOptions {
    LoadOptions {
        format: Some(format),
        context: 64,
        max_batch: 64,
        precision: None,
        slots: 1,
    }
}

fn try_load(path: &Path) -> Result<LoadedModel, Error> {
    let ctx = glim_tests::open_gpu().expect("adapter");
    load(path, ctx, &options(WeightFormat::Q4F16), &mut |_, _| {})
}

/// Asserts loading `path` fails with a one-line message containing `needle`.
fn assert_load_error(path: &Path, needle: &str) {
    let err = match try_load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    };
    eprintln!("{}: error: {err}", path.display());
    assert!(!err.contains('\n'), "multi-line error: {err}");
    assert!(
        err.contains(needle),
        "error {err:?} does not mention {needle:?}"
    );
}

/// llama.cpp's converter interleaves each head's Q/K rows (pairs rotated by RoPE made
/// adjacent); Hugging Face keeps the two halves apart. Undo it: HF row `h*d + j*d/2 + i`
/// is GGUF row `h*d + 2i + j`.
fn unpermute(rows: &[f32], n_heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows.len()];
    for h in 0..n_heads {
        for j in 0..2 {
            for i in 0..head_dim / 2 {
                let hf = h * head_dim + j * head_dim / 2 + i;
                let gguf = h * head_dim + 2 * i + j;
                out[hf * cols..(hf + 1) * cols]
                    .copy_from_slice(&rows[gguf * cols..(gguf + 1) * cols]);
            }
        }
    }
    out
}

/// Writes the GGUF model as an HF folder in two safetensors shards (f32 weights).
fn write_hf_folder(file: &GgufFile, dir: &Path) {
    let c = ModelConfig::from_gguf(file).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "num_hidden_layers": c.n_layers, "hidden_size": c.dim,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "intermediate_size": c.ffn_dim, "vocab_size": c.vocab_size, "rope_theta": c.layers[0].rope.base,
        "rms_norm_eps": c.rms_eps, "max_position_embeddings": c.context_length, "tie_word_embeddings": true,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let tokenizer = Tokenizer::from_gguf(file).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        tokenizer.inner().to_string(false).unwrap(),
    )
    .unwrap();
    let tokenizer_config = serde_json::json!({
        "chat_template": file.get_str("tokenizer.chat_template").unwrap(),
        "bos_token": tokenizer.bos_token(), "eos_token": tokenizer.eos_token(),
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        tokenizer_config.to_string(),
    )
    .unwrap();

    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, values: Vec<f32>| {
        tensors.push((
            name,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    };
    let (d, q, kv, f) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim);
    add(
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size, d],
        file.tensor_f32("token_embd.weight").unwrap(),
    );
    add(
        "model.norm.weight".into(),
        vec![d],
        file.tensor_f32("output_norm.weight").unwrap(),
    );
    for l in 0..c.n_layers {
        let get = |t: &str, shape: &[usize]| {
            let values = file.tensor_f32(&format!("blk.{l}.{t}.weight")).unwrap();
            assert_eq!(values.len(), shape.iter().product::<usize>(), "{t}");
            values
        };
        let p = |t: &str| format!("model.layers.{l}.{t}.weight");
        add(
            p("self_attn.q_proj"),
            vec![q, d],
            unpermute(&get("attn_q", &[q, d]), c.n_heads, c.head_dim, d),
        );
        add(
            p("self_attn.k_proj"),
            vec![kv, d],
            unpermute(&get("attn_k", &[kv, d]), c.n_kv_heads, c.head_dim, d),
        );
        add(p("self_attn.v_proj"), vec![kv, d], get("attn_v", &[kv, d]));
        add(
            p("self_attn.o_proj"),
            vec![d, q],
            get("attn_output", &[d, q]),
        );
        add(p("mlp.gate_proj"), vec![f, d], get("ffn_gate", &[f, d]));
        add(p("mlp.up_proj"), vec![f, d], get("ffn_up", &[f, d]));
        add(p("mlp.down_proj"), vec![d, f], get("ffn_down", &[d, f]));
        add(p("input_layernorm"), vec![d], get("attn_norm", &[d]));
        add(
            p("post_attention_layernorm"),
            vec![d],
            get("ffn_norm", &[d]),
        );
    }
    let half = tensors.len() / 2;
    for (i, shard) in [&tensors[..half], &tensors[half..]].into_iter().enumerate() {
        let views = shard.iter().map(|(name, shape, bytes)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap(),
            )
        });
        let path = dir.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        safetensors::serialize_to_file(views, None, &path).unwrap();
    }
}

#[test]
fn hf_folder_gives_the_gguf_tokens() {
    let Some(gguf) = glim_tests::test_model() else {
        return;
    };
    let Some(ctx) = glim_tests::open_gpu() else {
        return;
    };
    let file = GgufFile::open(&gguf).unwrap();
    let dir = scratch_dir("hf");
    write_hf_folder(&file, &dir);

    let loaded = load(&dir, ctx, &options(WeightFormat::F16), &mut |_, _| {}).unwrap();
    assert_eq!(
        loaded.model.config.rope_mode,
        glim::kernels::rope::RopeMode::Halves
    );
    let gguf_tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let prompt = "The capital of France is";
    let ids = loaded.tokenizer.encode(prompt, true).unwrap();
    assert_eq!(ids, gguf_tokenizer.encode(prompt, true).unwrap());
    assert!(!loaded.template.is_fallback());

    let mut session = Session::new(loaded.model, loaded.tokenizer);
    let params = GenerationParams {
        max_tokens: 6,
        ..Default::default()
    };
    let (text, stats) = session
        .generate_blocking(&ids, &params, &mut |_| true)
        .unwrap();
    eprintln!("HF folder, greedy: {text:?} ({stats:?})");
    // The same continuation as the GGUF in tests/model.rs (and llama.cpp's Vulkan backend).
    assert_eq!(text, " Paris.\n\nThe answer");
    // A second call with a longer prompt reuses the cached prefix, and continues exactly as
    // a fresh session would.
    let mut longer = ids.clone();
    longer.extend(
        session
            .tokenizer
            .encode(" Paris. It is also", false)
            .unwrap(),
    );
    let three = GenerationParams {
        max_tokens: 4,
        ..Default::default()
    };
    let (reusing, stats) = session
        .generate_blocking(&longer, &three, &mut |_| true)
        .unwrap();
    // The prompt and the generated " Paris." (fed back during decoding) are both cached.
    assert_eq!(stats.reused_tokens, ids.len() + 2);
    session.reset();
    let (fresh, stats) = session
        .generate_blocking(&longer, &three, &mut |_| true)
        .unwrap();
    assert_eq!(stats.reused_tokens, 0);
    assert_eq!(reusing, fresh);

    // `glim quantize` from the HF folder writes what it writes from the GGUF: the sources
    // pack to identical bytes (Q/K rows already in HF order here, un-permuted there).
    let out = scratch_dir("hf-mlc");
    std::fs::remove_dir_all(&out).unwrap();
    let from_hf = loader::open(&dir).unwrap();
    write_folder(&from_hf, MlcQuant::Q4F16, &out, &mut |_, _| {}).unwrap();
    let folder = loader::open(&out).unwrap();
    let from_gguf = loader::open(&gguf).unwrap();
    let params = ModelParams::new(&from_gguf.config);
    for param in [
        &params.embed,
        &params.layers[7].qkv,
        &params.layers[7].gate_up,
    ] {
        let want =
            weights::packed_matrix(&*from_gguf.weights(), param, WeightFormat::Q4F16).unwrap();
        assert!(
            want == weights::packed_matrix(&*from_hf.weights(), param, WeightFormat::Q4F16)
                .unwrap()
                && want
                    == weights::packed_matrix(&*folder.weights(), param, WeightFormat::Q4F16)
                        .unwrap(),
            "{} differs",
            param.name
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_model_files_are_one_line_errors() {
    let Some(gguf) = glim_tests::test_model() else {
        return;
    };
    if glim_tests::gpu().is_none() {
        return;
    }
    let dir = scratch_dir("bad");
    let bytes = std::fs::read(&gguf).unwrap();

    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() * 3 / 5]).unwrap();
    assert_load_error(&truncated, "past the end");
    let header_only = dir.join("header.gguf");
    std::fs::write(&header_only, &bytes[..1000]).unwrap();
    assert_load_error(&header_only, "GGUF");

    let not_gguf = dir.join("notes.gguf");
    std::fs::write(&not_gguf, "these are not weights\n").unwrap();
    assert_load_error(&not_gguf, "GGUF");
    assert_load_error(&dir.join("missing.gguf"), "no model file");

    // Same file, architecture renamed to one glim does not run (same length, so the
    // rest of the file stays valid).
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let mut renamed = bytes.clone();
    let value = at + 4 + 8; // value type (u32), string length (u64)
    assert_eq!(&renamed[value..value + 5], b"llama");
    renamed[value..value + 5].copy_from_slice(b"gemma");
    let unknown = dir.join("gemma.gguf");
    std::fs::write(&unknown, &renamed).unwrap();
    assert_load_error(&unknown, "architecture `gemma`");

    // HF folders: no tokenizer, corrupt weights, truncated weights, unknown architecture.
    let config = r#"{"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2,
        "intermediate_size": 16, "vocab_size": 10}"#;
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    std::fs::write(hf.join("config.json"), config).unwrap();
    assert_load_error(&hf, "no tokenizer.json");
    std::fs::write(hf.join("tokenizer.json"), b"{}").unwrap();
    std::fs::write(
        hf.join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
    )
    .unwrap();
    assert_load_error(&hf, "");
    let weights =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![10, 8], &[0u8; 320])
            .unwrap();
    safetensors::serialize_to_file(
        [("model.embed_tokens.weight", weights)],
        None,
        &hf.join("model.safetensors"),
    )
    .unwrap();
    let whole = std::fs::read(hf.join("model.safetensors")).unwrap();
    std::fs::write(hf.join("model.safetensors"), &whole[..whole.len() - 100]).unwrap();
    assert_load_error(&hf, "safetensors");
    std::fs::write(
        hf.join("config.json"),
        config.replace("\"llama\"", "\"gpt_neox\""),
    )
    .unwrap();
    assert_load_error(&hf, "architecture `gpt_neox`");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Hyper-parameters that would make every answer garbage (a RoPE base of NaN, 0 or
/// infinity, a negative norm epsilon) are refused when the config is read, from a GGUF, a
/// Hugging Face config and an MLC chat config alike. No GPU.
#[test]
fn unusable_hyper_parameters_are_refused() {
    let Some(gguf) = glim_tests::test_model() else {
        return;
    };
    let bytes = std::fs::read(&gguf).unwrap();
    // The f32 after a key: its value type (u32) comes first.
    let patched = |key: &str, value: f32| {
        let at = bytes
            .windows(key.len())
            .position(|w| w == key.as_bytes())
            .unwrap()
            + key.len()
            + 4;
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        ModelConfig::from_gguf(&GgufFile::from_bytes(b).unwrap())
    };
    assert!(patched("llama.rope.freq_base", 10_000.0).is_ok());
    for base in [f32::NAN, 0.0, f32::INFINITY, -1.0] {
        let e = patched("llama.rope.freq_base", base)
            .unwrap_err()
            .to_string();
        assert!(e.contains("RoPE base"), "{base}: {e}");
    }
    for eps in [-1e-5, f32::NAN, 0.0] {
        let e = patched("llama.attention.layer_norm_rms_epsilon", eps)
            .unwrap_err()
            .to_string();
        assert!(e.contains("epsilon"), "{eps}: {e}");
    }
    let hf = |theta: f64| {
        ModelConfig::from_hf_json(&serde_json::json!({"model_type": "llama",
            "num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2,
            "intermediate_size": 16, "vocab_size": 10, "rope_theta": theta}))
    };
    assert!(hf(10_000.0).is_ok());
    assert!(hf(0.0).unwrap_err().to_string().contains("RoPE base"));
    let mlc = serde_json::json!({"model_type": "llama", "quantization": "q4f16_1",
        "model_config": {"num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2,
            "intermediate_size": 16, "vocab_size": 10, "position_embedding_base": 0}});
    let e = glim::model::mlc::config_from_chat_config(&mlc)
        .unwrap_err()
        .to_string();
    assert!(e.contains("RoPE base"), "{e}");
}

#[test]
fn prompts_past_the_context_are_errors() {
    let Some(gguf) = glim_tests::test_model() else {
        return;
    };
    let Some(ctx) = glim_tests::open_gpu() else {
        return;
    };
    let loaded = load(&gguf, ctx, &options(WeightFormat::Q4F16), &mut |_, _| {}).unwrap();
    let mut session = Session::new(loaded.model, loaded.tokenizer);
    let prompt = session.tokenizer.encode(&"word ".repeat(60), true).unwrap();
    let params = GenerationParams {
        max_tokens: 10,
        ..Default::default()
    };
    let err = session
        .generate_blocking(&prompt, &params, &mut |_| true)
        .unwrap_err()
        .to_string();
    eprintln!("error: {err}");
    assert!(
        err.contains("exceed the context of 64 tokens") && !err.contains('\n'),
        "{err}"
    );
    // The session still works afterwards.
    let short = session.tokenizer.encode("Hello", true).unwrap();
    assert!(session
        .generate_blocking(&short, &params, &mut |_| true)
        .is_ok());
}

/// The browser's GGUF path, natively: the file in 256 KiB chunks (the header spans several,
/// tensors straddle them), a few fetched at a time, one that comes back short fetched again
/// fresh. The model answers exactly as the file loaded whole, and memory never holds the
/// file. The Phi-3-layout model reads its LongRoPE divisors before the weights; the default
/// model split in three parts (`glim split`) streams part by part.
#[test]
fn streamed_gguf_gives_the_files_tokens() {
    use glim::formats::gguf_chunks::Chunk;
    use glim::model::graph::ModelLoader;
    use glim::model::streamed::{load_streamed_gguf, open_streamed_gguf};

    let Some(default) = glim_tests::test_model() else {
        return;
    };
    if glim_tests::gpu().is_none() {
        return;
    }
    let phi3 = glim_tests::derived_model(glim::model::arch::Family::Phi3).unwrap();
    let options = LoadOptions {
        format: None,
        ..options(WeightFormat::Q4F16)
    };
    let greedy = |session: &mut Session, prompt: &str| {
        let ids = session.tokenizer.encode(prompt, true).unwrap();
        let params = GenerationParams {
            max_tokens: 8,
            ..Default::default()
        };
        let answer = session.generate_blocking(&ids, &params, &mut |_| true);
        answer.unwrap().0
    };
    let whole = GgufFile::open(&default).unwrap();
    let split = glim::formats::gguf_writer::write_split(&whole, 3, |_| Ok(Vec::new())).unwrap();
    let cases = [
        (default.as_path(), vec![std::fs::read(&default).unwrap()]),
        (phi3.0.as_path(), vec![std::fs::read(&phi3.0).unwrap()]),
        (default.as_path(), split),
    ];
    for (path, files) in &cases {
        let path = *path;
        let lens: Vec<u64> = files.iter().map(|f| f.len() as u64).collect();
        let len: u64 = lens.iter().sum();
        let chunk_bytes = 256 << 10;
        let mut asked = Vec::new();
        let mut fetch = |c: Chunk| {
            asked.push((c.index, c.fresh));
            let mut bytes = files[c.part][c.start as usize..c.end as usize].to_vec();
            if c.index == 9 && !c.fresh {
                bytes.truncate(1000);
            }
            std::future::ready(Ok(bytes))
        };
        let (mut gguf, config) = pollster::block_on(open_streamed_gguf(
            "test://m.gguf",
            &lens,
            chunk_bytes,
            &mut fetch,
        ))
        .unwrap();
        let tokenizer = Tokenizer::from_gguf(gguf.header()).unwrap();
        let ctx = glim_tests::open_gpu().unwrap();
        let loader = ModelLoader::new(ctx, config, &options).unwrap();
        let mut reports = Vec::new();
        let streamed = pollster::block_on(load_streamed_gguf(
            loader,
            &mut gguf,
            &mut fetch,
            3,
            &mut |p| reports.push(p),
        ))
        .unwrap();
        let chunks: usize = lens.iter().map(|l| l.div_ceil(chunk_bytes) as usize).sum();
        let mut once: Vec<usize> = asked.iter().filter(|a| !a.1).map(|a| a.0).collect();
        once.sort_unstable();
        assert_eq!(once, (0..chunks).collect::<Vec<_>>(), "{path:?}");
        assert_eq!(
            asked.iter().filter(|a| a.1).collect::<Vec<_>>(),
            [&(9, true)]
        );
        let last = reports.last().unwrap();
        assert_eq!((last.bytes_done, last.bytes_total), (len, len));
        // The largest tensor (the embedding table) waits whole for its upload; apart from
        // it, a few chunks.
        let peak = reports.iter().map(|p| p.resident_bytes).max().unwrap() as u64;
        let largest = gguf.header().tensors().iter().map(|t| t.n_bytes()).max();
        eprintln!(
            "{path:?} in {} parts: {chunks} chunks, at most {peak} of {len} bytes held",
            files.len()
        );
        assert!(
            peak <= largest.unwrap() as u64 + 4 * chunk_bytes,
            "{peak} of {len} held"
        );

        let prompt = "The capital of France is";
        let mut session = Session::new(streamed, tokenizer);
        let ctx = glim_tests::open_gpu().unwrap();
        let whole = load(path, ctx, &options, &mut |_, _| {}).unwrap();
        let mut reference = Session::new(whole.model, whole.tokenizer);
        assert_eq!(
            greedy(&mut session, prompt),
            greedy(&mut reference, prompt),
            "{path:?}"
        );
    }
}
