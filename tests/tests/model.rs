//! The whole Llama forward pass on SmolLM2-135M-Instruct (the default model, fetched by
//! `scripts/fetch-model.sh`), prefill and decode, on a real adapter.
//!
//! A quick end-to-end check (tests/goldens.rs holds the full comparison): the f16 greedy
//! continuation of "The capital of France is" equals llama.cpp's Vulkan-backend output on
//! the same GGUF, " Paris.\n\nThe answer is" (its CPU backend parts ways at a near-tie
//! after four tokens: see goldens.json's margins).

use glim::formats::gguf::GgufFile;
use glim::model::llama::{Llama, LoadOptions, Logits};
use glim::quant::WeightFormat;

/// Token ids of whole vocabulary entries (each word below is one token in SmolLM2's BPE).
fn ids(vocab: &[String], words: &[&str]) -> Vec<u32> {
    words
        .iter()
        .map(|w| {
            vocab
                .iter()
                .position(|v| v == w)
                .unwrap_or_else(|| panic!("{w} not in vocab")) as u32
        })
        .collect()
}

#[test]
fn smollm2_f16_greedy_matches_llama_cpp() {
    let Some(path) = glim_tests::test_model() else {
        return;
    };
    let Some(ctx) = glim_tests::open_gpu() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let vocab = file
        .get_str_array("tokenizer.ggml.tokens")
        .unwrap()
        .to_vec();
    let options = LoadOptions {
        format: Some(WeightFormat::F16),
        context: 64,
        ..Default::default()
    };
    let mut model = Llama::from_gguf(ctx, &file, &options, &mut |_, _| {}).unwrap();
    assert_eq!(
        (
            model.config.n_layers,
            model.config.dim,
            model.config.vocab_size
        ),
        (30, 576, 49152)
    );

    let prompt = ids(&vocab, &["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]);
    let top1 = model.forward_blocking(&prompt, 0, Logits::All).unwrap();
    assert_eq!(top1.len(), prompt.len());
    let mut next = *top1.last().unwrap();
    let mut generated = vec![next];
    for pos in prompt.len()..prompt.len() + 6 {
        next = model.forward_blocking(&[next], pos, Logits::Last).unwrap()[0];
        generated.push(next);
    }
    let text: String = generated
        .iter()
        .map(|&t| vocab[t as usize].replace('Ġ', " ").replace('Ċ', "\n"))
        .collect();
    eprintln!("greedy continuation: {text:?}");
    assert_eq!(text, " Paris.\n\nThe answer is");

    // The same prompt through the last-logits path must give the same first token.
    assert_eq!(
        model.forward_blocking(&prompt, 0, Logits::Last).unwrap(),
        vec![top1[4]]
    );
}

#[test]
fn over_long_prompts_and_bad_ids_are_errors() {
    let Some(path) = glim_tests::test_model() else {
        return;
    };
    let Some(ctx) = glim_tests::open_gpu() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let options = LoadOptions {
        format: Some(WeightFormat::Q4F16),
        context: 8,
        max_batch: 4,
        ..Default::default()
    };
    let mut model = Llama::from_gguf(ctx, &file, &options, &mut |_, _| {}).unwrap();
    let err = model
        .forward_blocking(&[1; 9], 0, Logits::Last)
        .unwrap_err();
    assert!(err.to_string().contains("exceed the context"), "{err}");
    assert!(model.forward_blocking(&[49152], 0, Logits::Last).is_err());
    assert!(model.forward_blocking(&[], 0, Logits::Last).is_err());
    // Chunked prefill (max_batch 4 < 6 tokens) still works after the errors.
    assert_eq!(
        model
            .forward_blocking(&[1, 2, 3, 4, 5, 6], 0, Logits::All)
            .unwrap()
            .len(),
        6
    );
}

/// Sampled generation: drawn on the GPU (top-k, top-p, min-p, temperature) when no penalty
/// needs the logits on the host. A seed gives the same answer every time; another seed, or
/// the host path with a penalty, another answer — always well-formed text.
#[test]
fn sampled_generation_is_seeded() {
    use glim::generate::{GenerationParams, SamplingParams, Session};
    use glim::text::Tokenizer;
    let Some(path) = glim_tests::test_model() else {
        return;
    };
    let Some(ctx) = glim_tests::open_gpu() else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let options = LoadOptions {
        context: 128,
        ..Default::default()
    };
    let model = Llama::from_gguf(ctx, &file, &options, &mut |_, _| {}).unwrap();
    let mut session = Session::new(model, tokenizer);
    let prompt = session.tokenizer.encode_prompt("Once upon a time").unwrap();
    let mut answer = |seed, repetition_penalty| {
        let params = GenerationParams {
            sampling: SamplingParams {
                temperature: 1.0,
                repetition_penalty,
                seed,
                ..SamplingParams::default()
            },
            max_tokens: 12,
            ignore_eos: true,
            ..GenerationParams::default()
        };
        let (text, stats) = session
            .generate_blocking(&prompt, &params, &mut |_| true)
            .unwrap();
        assert_eq!(stats.generated_tokens, 12);
        text
    };
    let first = answer(7, 1.0);
    eprintln!("seed 7: {first:?}");
    assert_eq!(first, answer(7, 1.0));
    let others: Vec<String> = (8..12).map(|seed| answer(seed, 1.0)).collect();
    assert!(others.iter().any(|t| t != &first), "{others:?}");
    let penalized = answer(7, 1.3);
    assert_eq!(penalized, answer(7, 1.3));
    assert!(!penalized.is_empty());
}
