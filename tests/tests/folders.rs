//! MLC-layout model folders end to end: `write_folder` from the default GGUF, read back by
//! the loader. The folder must hold exactly the packed bytes glim uploads from the GGUF and
//! give the same greedy tokens; every kind of broken folder is a one-line error.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use glim::formats::mlc::{
    MlcFolder, ResidentShards, ShardStore, TensorCache, INDEX_FILE, LEGACY_INDEX_FILE,
};
use glim::generate::{GenerationParams, Session};
use glim::model::arch::Family;
use glim::model::graph::{LoadOptions, ModelLoader};
use glim::model::loader::{self, ModelFile, OpenedModel};
use glim::model::mlc::{mlc_text, MlcModel, MlcQuant};
use glim::model::mlc_writer::write_folder;
use glim::model::streamed::load_streamed;
use glim::model::weights::{self, ModelParams, Shape};
use glim::quant::{ScaleType, WeightFormat};
use glim::Error;
use serde_json::Value;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glim-folders-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn write(opened: &OpenedModel, quant: MlcQuant, out: &Path) {
    let report = write_folder(opened, quant, out, &mut |_, _| {}).unwrap();
    eprintln!("{} folder: {report:?}", quant.name());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

/// The default GGUF, opened once, and its q4f16 folder, written once per test binary.
fn q4_folder() -> Option<&'static (OpenedModel, PathBuf)> {
    static FOLDER: OnceLock<Option<(OpenedModel, PathBuf)>> = OnceLock::new();
    FOLDER
        .get_or_init(|| {
            let gguf = glim_tests::test_model()?;
            let opened = loader::open(&gguf).unwrap();
            let dir = scratch_dir("q4f16");
            write(&opened, MlcQuant::Q4F16, &dir);
            Some((opened, dir))
        })
        .as_ref()
}

fn options(format: Option<WeightFormat>) -> LoadOptions {
    LoadOptions {
        format,
        context: 128,
        max_batch: 64,
        precision: None,
        slots: 1,
    }
}

fn greedy(path: &Path, format: Option<WeightFormat>, prompt: &str) -> String {
    let ctx = glim_tests::open_gpu().expect("adapter");
    let loaded = loader::load(path, ctx, &options(format), &mut |_, _| {}).unwrap();
    // A folder brings its mlc-chat-config.json (the server's sampling defaults); a GGUF none.
    assert_eq!(loaded.chat_config.is_some(), path.is_dir(), "{path:?}");
    answer(Session::new(loaded.model, loaded.tokenizer), prompt)
}

/// The session's greedy answer to `prompt`, 16 tokens at most.
fn answer(mut session: Session, prompt: &str) -> String {
    let ids = session.tokenizer.encode(prompt, true).unwrap();
    let params = GenerationParams {
        max_tokens: 16,
        ..Default::default()
    };
    session
        .generate_blocking(&ids, &params, &mut |_| true)
        .unwrap()
        .0
}

/// Every matrix of `folder` is bit for bit what glim packs from `source` at q4f16, and every
/// vector the same values.
fn assert_holds_what_glim_packs(source: &OpenedModel, folder: &OpenedModel, what: &str) {
    let (from_source, from_folder) = (source.weights(), folder.weights());
    for param in ModelParams::new(&source.config).in_mlc_order() {
        match param.shape {
            Shape::Matrix { .. } => {
                let want =
                    weights::packed_matrix(&*from_source, param, WeightFormat::Q4F16).unwrap();
                let got =
                    weights::packed_matrix(&*from_folder, param, WeightFormat::Q4F16).unwrap();
                assert!(want == got, "{what}: {} differs", param.name);
            }
            Shape::Vector(_) => assert_eq!(
                weights::vector(&*from_source, param, true).unwrap(),
                weights::vector(&*from_folder, param, true).unwrap(),
                "{what}: {}",
                param.name
            ),
        }
    }
}

/// Every matrix the folder holds is bit for bit what glim packs from the GGUF at load, and
/// every norm the same values: the folder is the GGUF's GPU image, not a re-encoding.
#[test]
fn folder_holds_the_bytes_glim_uploads() {
    let Some((opened, dir)) = q4_folder() else {
        return;
    };
    let folder = loader::open(dir).unwrap();
    assert!(matches!(folder.file, ModelFile::Mlc(_)));
    assert_eq!(folder.config, opened.config);
    assert_holds_what_glim_packs(opened, &folder, "SmolLM2");
    // MLC's names and shapes for SmolLM2-135M (MLC-FORMAT.md): 30 layers x 10 + 3 tensors.
    let index = MlcFolder::open(dir).unwrap().index;
    assert_eq!(index.tensors.len(), 303);
    let shape = |name: &str| index.get(name).unwrap().shape.clone();
    assert_eq!(shape("model.embed_tokens.q_weight"), [49152, 72]);
    assert_eq!(shape("model.embed_tokens.q_scale"), [49152, 18]);
    assert_eq!(
        shape("model.layers.0.self_attn.qkv_proj.q_weight"),
        [960, 72]
    );
    assert_eq!(
        shape("model.layers.29.mlp.gate_up_proj.q_weight"),
        [3072, 72]
    );
    assert_eq!(shape("model.layers.3.mlp.down_proj.q_scale"), [576, 48]);
    assert_eq!(shape("model.norm.weight"), [576]);
    assert!(
        index.get("lm_head.q_weight").is_none(),
        "SmolLM2 ties its embeddings"
    );
    // Both index names, identical.
    assert_eq!(
        std::fs::read(dir.join(INDEX_FILE)).unwrap(),
        std::fs::read(dir.join(LEGACY_INDEX_FILE)).unwrap()
    );
    // The chat config says what MLC needs to run it, and the tokenizer is the GGUF's.
    let chat: Value =
        serde_json::from_slice(&std::fs::read(dir.join("mlc-chat-config.json")).unwrap()).unwrap();
    assert_eq!(chat["quantization"], "q4f16_1");
    assert_eq!(chat["model_config"]["position_embedding_base"], 100000.0);
    assert_eq!(chat["conv_template"]["roles"]["user"], "<|im_start|>user");
    let prompt = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n";
    assert_eq!(
        folder.tokenizer.encode(prompt, true).unwrap(),
        opened.tokenizer.encode(prompt, true).unwrap()
    );
    assert_eq!(folder.template.source(), opened.template.source());
    assert_eq!(
        folder.tokenizer.end_of_generation(),
        opened.tokenizer.end_of_generation()
    );
}

/// `glim run FOLDER` and `glim run GGUF` run the identical bits: same greedy tokens.
#[test]
fn folder_and_gguf_give_the_same_tokens() {
    let Some((_, dir)) = q4_folder() else {
        return;
    };
    if glim_tests::gpu().is_none() {
        return;
    }
    let gguf = glim_tests::test_model().unwrap();
    let prompt = "The three primary colors are";
    let from_gguf = greedy(&gguf, Some(WeightFormat::Q4F16), prompt);
    let from_folder = greedy(dir, None, prompt);
    eprintln!("q4f16 greedy: {from_folder:?}");
    assert_eq!(from_folder, from_gguf);
    assert!(!from_folder.trim().is_empty());
    // A packed folder is not re-quantized to another format.
    let ctx = glim_tests::open_gpu().unwrap();
    let err = loader::load(
        dir,
        ctx,
        &options(Some(WeightFormat::Q3F16)),
        &mut |_, _| {},
    )
    .err()
    .expect("q4f16 folder loaded as q3f16");
    assert!(err.to_string().contains("packed as q4f16"), "{err}");
}

/// The browser's path, natively: shards handed over one at a time as bytes (a corrupt
/// first copy is fetched again, bypassing caches), parameters uploaded as their shards
/// arrive, shards dropped once used. The model answers exactly as the folder loaded from
/// disk does.
#[test]
fn streamed_load_gives_the_folders_tokens() {
    let Some((_, dir)) = q4_folder() else {
        return;
    };
    if glim_tests::gpu().is_none() {
        return;
    }
    let (mut model, tokenizer, shard_files) = as_streamed(dir);
    let largest = model
        .shards
        .index()
        .shards
        .iter()
        .map(|s| s.nbytes)
        .max()
        .unwrap();

    let stream = |model: &mut MlcModel<ResidentShards>, corrupt: &dyn Fn(usize, bool) -> bool| {
        let ctx = glim_tests::open_gpu().unwrap();
        let loader = ModelLoader::new(ctx, model.config.clone(), &options(None)).unwrap();
        let mut fetched = Vec::new();
        let mut reports = Vec::new();
        let fetch = |n: usize, fresh: bool| {
            fetched.push((n, fresh));
            let mut bytes = std::fs::read(&shard_files[n]).unwrap();
            if corrupt(n, fresh) {
                bytes[100] ^= 1;
            }
            std::future::ready(Ok(bytes))
        };
        let result = pollster::block_on(load_streamed(loader, model, fetch, 2, &mut |p| {
            reports.push(p)
        }));
        (result, fetched, reports)
    };

    // Shard 1's first copy is corrupt: it is fetched again, fresh.
    let (model_result, fetched, reports) = stream(&mut model, &|n, fresh| n == 1 && !fresh);
    let mut llama = model_result.unwrap();
    let shards = shard_files.len();
    assert!(fetched.contains(&(1, true)), "{fetched:?}");
    assert_eq!(fetched.len(), shards + 1);
    assert_eq!(reports.len(), shards);
    let last = reports.last().unwrap();
    assert_eq!(
        (last.bytes_done, last.resident_bytes),
        (last.bytes_total, 0)
    );
    // At most the shard being read and the one a parameter straddles into stay in memory.
    assert!(
        reports.iter().all(|p| p.resident_bytes <= 2 * largest),
        "{reports:?}"
    );

    llama.fit_tokenizer(&tokenizer).unwrap();
    let prompt = "The three primary colors are";
    let text = answer(Session::new(llama, tokenizer), prompt);
    assert_eq!(text, greedy(dir, None, prompt));

    // A shard that stays corrupt is an error naming it, not a model.
    let (result, _, _) = stream(&mut model, &|n, _| n == 0);
    let err = result.err().expect("a corrupt shard loaded").to_string();
    assert!(
        err.contains("test://params_shard_0.bin") && err.contains("md5") && err.contains("twice"),
        "{err}"
    );
}

/// q3f16_1 folders run like the GGUF at q3f16; q4f32_1 folders store bf16-exact scales
/// and run; q0f16 folders run like the GGUF at f16.
#[test]
fn q3f16_q4f32_and_q0f16_folders() {
    let Some((opened, _)) = q4_folder() else {
        return;
    };
    if glim_tests::gpu().is_none() {
        return;
    }
    let gguf = glim_tests::test_model().unwrap();
    let q3 = scratch_dir("q3f16");
    write(opened, MlcQuant::Q3F16, &q3);
    let prompt = "The capital of France is";
    assert_eq!(
        greedy(&q3, None, prompt),
        greedy(&gguf, Some(WeightFormat::Q3F16), prompt)
    );

    let q4f32 = scratch_dir("q4f32");
    write(opened, MlcQuant::Q4F32, &q4f32);
    let folder = MlcFolder::open(&q4f32).unwrap();
    let scale = folder
        .record("model.layers.0.self_attn.o_proj.q_scale")
        .unwrap();
    assert!(
        scale.bf16_on_disk,
        "q4f32_1 scales are float32 stored as bf16"
    );
    // The folder's scales are exactly glim's bf16-typed choice, exact in f16 too.
    let from_folder = loader::open(&q4f32).unwrap();
    let param = &ModelParams::new(&opened.config).layers[0].attn_output;
    let want = weights::packed_matrix_with(
        &*opened.weights(),
        param,
        WeightFormat::Q4F16,
        glim::quant::QuantOptions {
            scale_type: ScaleType::Bf16,
            ..Default::default()
        },
    )
    .unwrap();
    let got = weights::packed_matrix(&*from_folder.weights(), param, WeightFormat::Q4F16).unwrap();
    assert!(want == got, "q4f32 o_proj differs");
    let text = greedy(&q4f32, None, prompt);
    eprintln!("q4f32 greedy: {text:?}");
    assert!(text.contains("Paris"), "{text:?}");

    // q0f16: f16 weights, packed when loaded, exactly as the GGUF's are at --quant f16.
    let q0 = scratch_dir("q0f16");
    write(opened, MlcQuant::Q0F16, &q0);
    assert!(MlcFolder::open(&q0)
        .unwrap()
        .index
        .get("model.layers.0.self_attn.qkv_proj.weight")
        .is_some());
    assert_eq!(
        greedy(&q0, Some(WeightFormat::F16), prompt),
        greedy(&gguf, Some(WeightFormat::F16), prompt)
    );
    for dir in [q3, q4f32, q0] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A copy of the q4f16 folder to break: small files copied, shards linked unless `copy`.
fn broken_copy(name: &str, copy_shards: bool) -> Option<PathBuf> {
    let (_, dir) = q4_folder()?;
    let out = scratch_dir(name);
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let to = out.join(entry.file_name());
        if path.extension().is_some_and(|x| x == "bin") && !copy_shards {
            std::os::unix::fs::symlink(&path, &to).unwrap();
        } else {
            std::fs::copy(&path, &to).unwrap();
        }
    }
    Some(out)
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// Loading `dir` fails with a one-line error containing every needle.
fn assert_error(dir: &Path, needles: &[&str]) {
    let err = match loader::open(dir).and_then(|opened| {
        let ctx = glim_tests::open_gpu().expect("adapter");
        loader::load(dir, ctx, &options(None), &mut |_, _| {}).map(|_| opened)
    }) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    };
    let text = err.to_string();
    eprintln!("{}: error: {text}", dir.display());
    assert!(!text.contains('\n'), "multi-line error: {text}");
    for needle in needles {
        assert!(
            text.contains(needle),
            "{text:?} does not mention {needle:?}"
        );
    }
    assert!(!matches!(err, Error::Gpu(_)), "{text}");
}

#[test]
fn broken_folders_are_one_line_errors() {
    if glim_tests::gpu().is_none() || q4_folder().is_none() {
        return;
    }
    // Missing files.
    let d = broken_copy("no-config", false).unwrap();
    std::fs::remove_file(d.join("mlc-chat-config.json")).unwrap();
    assert_error(&d, &["mlc-chat-config.json"]);
    let d = broken_copy("no-tokenizer", false).unwrap();
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    assert_error(&d, &["tokenizer.json"]);
    let d = broken_copy("no-shard", false).unwrap();
    std::fs::remove_file(d.join("params_shard_1.bin")).unwrap();
    assert_error(&d, &["params_shard_1.bin"]);
    // Only the legacy index name: still a folder, read through ndarray-cache.json.
    let d = broken_copy("legacy", false).unwrap();
    std::fs::remove_file(d.join(INDEX_FILE)).unwrap();
    assert!(loader::open(&d).is_ok());

    // A shard shorter than its index says.
    let d = broken_copy("short-shard", true).unwrap();
    let shard = d.join("params_shard_0.bin");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    assert_error(&d, &["params_shard_0.bin"]);
    // A shard whose bytes changed: its md5 no longer matches.
    let d = broken_copy("bad-md5", true).unwrap();
    let shard = d.join("params_shard_2.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    assert_error(&d, &["params_shard_2.bin", "md5"]);

    // Index entries: an offset past the end of its shard, absurd counts.
    let d = broken_copy("offset", false).unwrap();
    edit_json(&d.join(INDEX_FILE), |v| {
        v["records"][0]["records"][1]["byteOffset"] = (1u64 << 40).into();
    });
    assert_error(&d, &[INDEX_FILE]);
    let d = broken_copy("absurd", false).unwrap();
    edit_json(&d.join(INDEX_FILE), |v| {
        v["records"][0]["records"][0]["shape"] = serde_json::json!([1u64 << 40, 1u64 << 40]);
    });
    assert_error(&d, &[INDEX_FILE]);

    // The config disagrees with the tensors: a wider model than the shards hold.
    let d = broken_copy("shapes", false).unwrap();
    edit_json(&d.join("mlc-chat-config.json"), |v| {
        v["model_config"]["intermediate_size"] = 2048.into();
    });
    assert_error(
        &d,
        &["params_shard_", "gate_up_proj", "mlc-chat-config.json"],
    );
    // Unknown quantization and architecture.
    let d = broken_copy("quant", false).unwrap();
    edit_json(&d.join("mlc-chat-config.json"), |v| {
        v["quantization"] = "q4f16_awq".into();
    });
    assert_error(&d, &["q4f16_awq"]);
    let d = broken_copy("arch", false).unwrap();
    edit_json(&d.join("mlc-chat-config.json"), |v| {
        v["model_type"] = "gpt_neox".into();
    });
    assert_error(&d, &["gpt_neox"]);
    let d = broken_copy("garbage-config", false).unwrap();
    std::fs::write(d.join("mlc-chat-config.json"), b"{ not json").unwrap();
    assert_error(&d, &["mlc-chat-config.json"]);
}

/// `write_folder` refuses a non-empty output folder and leaves it as it was.
#[test]
fn writing_into_a_non_empty_folder_is_refused() {
    let Some((opened, _)) = q4_folder() else {
        return;
    };
    let out = scratch_dir("occupied");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let err = write_folder(opened, MlcQuant::Q4F16, &out, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&out);
}

/// A chat template no conv_template can express (plain ChatML writes no system turn without
/// a system message; MLC always does) still gives a folder: MLC's chatml conv_template, and
/// a warning saying MLC's runtime will format chats differently.
#[test]
fn an_inexpressible_template_gets_chatml_and_a_warning() {
    let Some(gguf) = glim_tests::test_model() else {
        return;
    };
    let mut opened = loader::open(&gguf).unwrap();
    opened.template = glim::text::ChatTemplate::chatml("", "<|im_end|>");
    let out = scratch_dir("chatml");
    let report = write_folder(&opened, MlcQuant::Q0F16, &out, &mut |_, _| {}).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].contains("conv_template"),
        "{:?}",
        report.warnings
    );
    let chat: Value =
        serde_json::from_slice(&std::fs::read(out.join("mlc-chat-config.json")).unwrap()).unwrap();
    assert_eq!(chat["conv_template"]["name"], "chatml");
    assert_eq!(chat["conv_template"]["stop_str"][0], "<|im_end|>");
    let _ = std::fs::remove_dir_all(&out);
}

/// Writes `gguf` (a `family` model) as a q4f16 folder in MLC's own names for the family
/// (`names`: some that MLC-LLM's `python/mlc_llm/model/<arch>/` modules give): the folder
/// reads back as the same spec and holds exactly what glim packs from the GGUF. Returns the
/// folder.
fn family_folder(gguf: &Path, family: Family, names: &[&str]) -> PathBuf {
    let opened = loader::open(gguf).unwrap();
    assert_eq!(opened.config.family, family);
    let dir = scratch_dir(family.gguf_name());
    let report = write_folder(&opened, MlcQuant::Q4F16, &dir, &mut |_, _| {}).unwrap();
    eprintln!("{family:?} q4f16 folder: {report:?}");
    let folder = loader::open(&dir).unwrap();
    assert_eq!(
        folder.config, opened.config,
        "{family:?}: the folder's spec differs"
    );
    assert_holds_what_glim_packs(&opened, &folder, &format!("{family:?}"));
    let index = MlcFolder::open(&dir).unwrap().index;
    for name in names {
        assert!(
            index.get(name).is_some(),
            "{family:?}: no {name} in the folder"
        );
    }
    dir
}

#[test]
fn qwen2_qwen3_and_phi3_folders_in_mlc_names() {
    for (family, names) in [
        (
            Family::Qwen2,
            &[
                "model.layers.0.self_attn.c_attn.q_weight",
                "model.layers.0.self_attn.c_attn.bias",
            ][..],
        ),
        (
            Family::Qwen3,
            &[
                "model.layers.0.self_attn.c_attn.q_weight",
                "model.layers.0.self_attn.q_norm.weight",
            ][..],
        ),
        (
            Family::Phi3,
            &[
                "transformer.embd.q_weight",
                "transformer.h.0.ln.weight",
                "transformer.h.0.mixer.qkv_proj.q_weight",
                "transformer.h.0.mixer.out_proj.q_scale",
                "transformer.h.29.post_attention_layernorm.weight",
                "transformer.norm.weight",
            ][..],
        ),
    ] {
        let Some(model) = glim_tests::derived_model(family) else {
            return;
        };
        let dir = family_folder(&model.0, family, names);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Gemma 3 270M's folder: Q, K and V apart under `language_model.model.`, norms as `w + 1`
/// (as MLC's loader adds 1), the text config nested; and streamed as the browser streams it
/// (a fused parameter gathered from its parts' shards), the same answer as from disk.
#[test]
fn gemma3_folder_in_mlc_names_streams() {
    let Some(gguf) = glim_tests::gemma_q4_k_m() else {
        return;
    };
    let dir = family_folder(
        &gguf,
        Family::Gemma3,
        &[
            "language_model.model.embed_tokens.q_weight",
            "language_model.model.layers.0.self_attn.q_proj.q_weight",
            "language_model.model.layers.0.self_attn.v_proj.q_scale",
            "language_model.model.layers.0.self_attn.k_norm.weight",
            "language_model.model.layers.5.pre_feedforward_layernorm.weight",
            "language_model.model.layers.17.post_feedforward_layernorm.weight",
            "language_model.model.norm.weight",
        ],
    );
    let chat: Value =
        serde_json::from_slice(&std::fs::read(dir.join("mlc-chat-config.json")).unwrap()).unwrap();
    assert_eq!(chat["model_type"], "gemma3_text");
    assert_eq!(
        chat["model_config"]["text_config"]["sliding_window_size"],
        512
    );
    // Gemma's template puts a system message into the first user turn, which no
    // conv_template can: MLC's own Gemma 3 one, which does the rest as Gemma does.
    assert_eq!(chat["conv_template"]["name"], "gemma3_instruction");
    if glim_tests::gpu().is_some() {
        let prompt = "The capital of France is";
        assert_eq!(streamed_greedy(&dir, prompt), greedy(&dir, None, prompt));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The folder at `dir` as the browser opens it: its index and configs read as bytes, the
/// shards left to be handed over (`test://` in errors), and the paths they come from.
fn as_streamed(
    dir: &Path,
) -> (
    MlcModel<ResidentShards>,
    glim::text::Tokenizer,
    Vec<PathBuf>,
) {
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let chat_config: Value = serde_json::from_slice(&read("mlc-chat-config.json")).unwrap();
    let index = TensorCache::parse(&read(INDEX_FILE), INDEX_FILE).unwrap();
    let shard_files: Vec<PathBuf> = index
        .shards
        .iter()
        .map(|s| dir.join(&s.data_path))
        .collect();
    let model = MlcModel::new(ResidentShards::new(index, "test://"), chat_config).unwrap();
    let (tokenizer, _) = mlc_text(
        &read("tokenizer.json"),
        Some(&read("tokenizer_config.json")),
        &model.chat_config,
    )
    .unwrap();
    (model, tokenizer, shard_files)
}

/// The greedy answer of the folder at `dir` loaded as the browser loads it: shards handed
/// over as bytes, two ahead.
fn streamed_greedy(dir: &Path, prompt: &str) -> String {
    let (mut model, tokenizer, shard_files) = as_streamed(dir);
    let ctx = glim_tests::open_gpu().unwrap();
    let loader = ModelLoader::new(ctx, model.config.clone(), &options(None)).unwrap();
    let fetch =
        |n: usize, _fresh: bool| std::future::ready(Ok(std::fs::read(&shard_files[n]).unwrap()));
    let mut loaded =
        pollster::block_on(load_streamed(loader, &mut model, fetch, 2, &mut |_| {})).unwrap();
    loaded.fit_tokenizer(&tokenizer).unwrap();
    answer(Session::new(loaded, tokenizer), prompt)
}
