//! The whole Llama forward pass on SmolLM2-135M-Instruct (the default model, fetched by
//! `scripts/fetch-model.sh`), prefill and decode, on a real adapter.
//!
//! A quick end-to-end check (tests/goldens.rs holds the full comparison): the f16 greedy
//! continuation of "The capital of France is" equals llama.cpp's Vulkan-backend output on
//! the same GGUF, " Paris.\n\nThe answer is" (its CPU backend parts ways at a near-tie
//! after four tokens: see goldens.json's margins).

use glim::formats::gguf::GgufFile;
use glim::model::graph::{LoadOptions, Logits, Model};
use glim::quant::WeightFormat;

/// The default model loaded with `options` on the test adapter, with its GGUF file (for
/// the tokenizer and vocabulary); `None`, and the test skips, without a model or adapter.
fn load(options: &LoadOptions) -> Option<(Model, GgufFile)> {
    let path = glim_tests::test_model()?;
    let ctx = glim_tests::open_gpu()?;
    let file = GgufFile::open(&path).unwrap();
    let model = Model::from_gguf(ctx, &file, options, &mut |_, _| {}).unwrap();
    Some((model, file))
}

fn vocab(file: &GgufFile) -> Vec<String> {
    file.get_str_array("tokenizer.ggml.tokens")
        .unwrap()
        .to_vec()
}

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
    let options = LoadOptions {
        format: Some(WeightFormat::F16),
        context: 64,
        ..Default::default()
    };
    let Some((mut model, file)) = load(&options) else {
        return;
    };
    let vocab = vocab(&file);
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
    let options = LoadOptions {
        format: Some(WeightFormat::Q4F16),
        context: 8,
        max_batch: 4,
        ..Default::default()
    };
    let Some((mut model, _)) = load(&options) else {
        return;
    };
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
    let options = LoadOptions {
        context: 128,
        ..Default::default()
    };
    let Some((model, file)) = load(&options) else {
        return;
    };
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
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

/// Several sequences decoded together, one pass over the weights per step, give each of
/// them the very tokens it gets decoded alone: greedy and seeded draws, prompts of other
/// lengths, sequences joining and leaving the batch between steps.
#[test]
fn batched_decoding_equals_decoding_alone() {
    use glim::kernels::sample::SampleSettings;
    use glim::model::graph::{BatchOutput, BatchToken, NextToken};
    let options = LoadOptions {
        context: 64,
        slots: 3,
        ..Default::default()
    };
    let Some((mut model, file)) = load(&options) else {
        return;
    };
    let vocab = vocab(&file);
    let prompts = [
        ids(&vocab, &["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]),
        ids(&vocab, &["Once", "Ġupon", "Ġa", "Ġtime"]),
        ids(
            &vocab,
            &["The", "Ġbest", "Ġway", "Ġto", "Ġlearn", "Ġis", "Ġto"],
        ),
    ];
    let nexts = [
        NextToken::Greedy,
        NextToken::Sample(SampleSettings::new(0.9, 40, 0.95, 0.05, 7, 0)),
        NextToken::Greedy,
    ];
    // Draw i of a sequence uses step i, as the generation loop does.
    let at_step = |next: NextToken, step: usize| match next {
        NextToken::Sample(mut s) => {
            s.step = step as u32;
            NextToken::Sample(s)
        }
        other => other,
    };
    let token = |out: BatchOutput| match out {
        BatchOutput::Token(t) => t,
        BatchOutput::Logits(_) => panic!("asked for a token"),
    };
    let steps = 8;
    // Alone: each sequence in slot 0, one token per pass.
    let mut alone = Vec::new();
    for (prompt, &next) in prompts.iter().zip(&nexts) {
        let mut tokens = vec![token(
            pollster::block_on(model.prefill(0, prompt, 0, at_step(next, 0))).unwrap(),
        )];
        for i in 1..steps {
            let pos = prompt.len() + i - 1;
            let last = tokens[i - 1];
            let out = pollster::block_on(model.decode(0, last, pos, at_step(next, i)));
            tokens.push(token(out.unwrap()));
        }
        alone.push(tokens);
    }
    // Together: sequence s in slot 2 - s, joining at step s (its prompt prefilled then).
    let mut together: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    for step in 0..steps + prompts.len() {
        let mut batch = Vec::new();
        for (s, prompt) in prompts.iter().enumerate() {
            let done = together[s].len();
            if step == s {
                let out = pollster::block_on(model.prefill(2 - s, prompt, 0, at_step(nexts[s], 0)));
                together[s].push(token(out.unwrap()));
            } else if step > s && done < steps {
                batch.push((
                    s,
                    BatchToken {
                        slot: 2 - s,
                        token: together[s][done - 1],
                        position: prompt.len() + done - 1,
                        next: at_step(nexts[s], done),
                    },
                ));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let tokens: Vec<BatchToken> = batch.iter().map(|(_, t)| *t).collect();
        let outs = pollster::block_on(model.decode_batch(&tokens)).unwrap();
        for ((s, _), out) in batch.into_iter().zip(outs) {
            together[s].push(token(out));
        }
    }
    assert_eq!(together, alone);
    // A row of logits for host sampling comes back as the lone one-token pass gives it.
    let prompt = &prompts[0];
    let (head, last) = (&prompt[..prompt.len() - 1], *prompt.last().unwrap());
    pollster::block_on(model.prefill(0, head, 0, NextToken::Greedy)).unwrap();
    let lone = pollster::block_on(model.decode(0, last, head.len(), NextToken::Logits));
    pollster::block_on(model.prefill(1, &prompts[1], 0, NextToken::Greedy)).unwrap();
    let batch = [
        BatchToken {
            slot: 0,
            token: last,
            position: head.len(),
            next: NextToken::Logits,
        },
        BatchToken {
            slot: 1,
            token: 42,
            position: prompts[1].len(),
            next: NextToken::Greedy,
        },
    ];
    let outs = pollster::block_on(model.decode_batch(&batch)).unwrap();
    assert!(
        outs[0] == lone.unwrap(),
        "batched logits differ from the lone pass"
    );
    // The same slot twice, or a slot past the model's, is an error.
    let twice = [batch[1], batch[1]];
    assert!(pollster::block_on(model.decode_batch(&twice)).is_err());
    let past = [BatchToken {
        slot: 3,
        ..batch[1]
    }];
    assert!(pollster::block_on(model.decode_batch(&past)).is_err());
}

/// A prompt whose first tokens are already in the cache (the batcher reuses a slot's
/// longest shared prefix) gives the logits a prefill of the whole prompt gives, bit for
/// bit, wherever the split falls, so a greedy answer does not depend on what a slot held.
#[test]
fn prefilling_after_a_cached_prefix_is_bitwise_a_whole_prefill() {
    use glim::model::graph::NextToken;
    let options = LoadOptions {
        context: 128,
        slots: 2,
        ..Default::default()
    };
    let Some((mut model, file)) = load(&options) else {
        return;
    };
    let vocab = vocab(&file);
    let words = [
        "The", "Ġbest", "Ġway", "Ġto", "Ġlearn", "Ġis", "Ġto", "Ġread", "Ġa", "Ġbook",
    ];
    let prompt: Vec<u32> = ids(&vocab, &words).repeat(4); // 40 tokens, past a 32-token tile
    let whole = pollster::block_on(model.prefill(0, &prompt, 0, NextToken::Logits)).unwrap();
    for split in [1, 7, 8, 31, 32, 33, 39] {
        let (head, tail) = prompt.split_at(split);
        pollster::block_on(model.fill(1, head, 0)).unwrap();
        let after = pollster::block_on(model.prefill(1, tail, split, NextToken::Logits)).unwrap();
        assert!(after == whole, "split at {split}: the logits differ");
    }
}
