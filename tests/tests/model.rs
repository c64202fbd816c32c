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
                        mask: None,
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
            mask: None,
        },
        BatchToken {
            slot: 1,
            token: 42,
            position: prompts[1].len(),
            next: NextToken::Greedy,
            mask: None,
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

/// A session on the default model with its own tokenizer and chat template.
fn session(options: &LoadOptions) -> Option<(glim::generate::Session, glim::text::ChatTemplate)> {
    let (model, file) = load(options)?;
    let tokenizer = glim::text::Tokenizer::from_gguf(&file).unwrap();
    let template = glim::text::ChatTemplate::from_tokenizer(&tokenizer).unwrap();
    Some((glim::generate::Session::new(model, tokenizer), template))
}

/// The prompt ids of one user message through the chat template.
fn chat_ids(
    session: &glim::generate::Session,
    template: &glim::text::ChatTemplate,
    text: &str,
) -> Vec<u32> {
    let rendered = template
        .render(&[glim::text::Message::user(text)], true)
        .unwrap();
    session.tokenizer.encode_prompt(&rendered).unwrap()
}

/// Constrained decoding: greedy, sampled on the GPU and sampled on the host (a penalty)
/// answers all parse as JSON that the schema allows, however the model would have
/// answered; a Lark grammar's answer is one of its words; the answer ends when the
/// grammar does; a schema llguidance cannot compile is an `Invalid` error before any
/// token.
#[test]
fn constrained_answers_match_their_grammar() {
    use glim::generate::{GenerationParams, SamplingParams, StopReason};
    use glim::grammar::Grammar;
    let options = LoadOptions {
        context: 256,
        ..Default::default()
    };
    let Some((mut session, template)) = session(&options) else {
        return;
    };
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"enum": ["Paris", "Lyon", "Nice"]},
            "pets": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2}
        },
        "required": ["name", "age", "city", "pets"],
        "additionalProperties": false
    });
    // The unconstrained answer is prose: the grammar is what makes it JSON.
    let prompt = chat_ids(
        &session,
        &template,
        "Tell me about a person who lives in France.",
    );
    let plain = GenerationParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_tokens: 60,
        ..Default::default()
    };
    let (free, _) = session
        .generate_blocking(&prompt, &plain, &mut |_| true)
        .unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&free).is_err(),
        "{free}"
    );
    let samplings = [
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.0,
            seed: 3,
            ..Default::default()
        },
        SamplingParams {
            temperature: 0.7,
            repetition_penalty: 1.3,
            seed: 5,
            ..Default::default()
        },
    ];
    for sampling in samplings {
        let params = GenerationParams {
            sampling: sampling.clone(),
            max_tokens: 120,
            grammar: Some(Grammar::JsonSchema(schema.clone())),
            ..Default::default()
        };
        let mut streamed = String::new();
        let (text, stats) = session
            .generate_blocking(&prompt, &params, &mut |piece| {
                streamed.push_str(piece);
                true
            })
            .unwrap();
        assert_eq!(streamed, text);
        assert_eq!(
            stats.stop_reason,
            StopReason::EndOfSequence,
            "{sampling:?}: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{sampling:?}: not JSON ({e}): {text}"));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 4, "{text}");
        assert!(o["name"].as_str().unwrap().chars().count() <= 12, "{text}");
        assert!((0..=120).contains(&o["age"].as_i64().unwrap()), "{text}");
        assert!(
            ["Paris", "Lyon", "Nice"].contains(&o["city"].as_str().unwrap()),
            "{text}"
        );
        assert!(o["pets"].as_array().unwrap().len() <= 2, "{text}");
    }

    // A grammar that waits for its trigger: free text up to the first "{", then held.
    let raw = session
        .tokenizer
        .encode_prompt(
            "Person 1 as JSON: {\"name\": \"Bob\", \"city\": \"Rome\"}\nPerson 2 as JSON:",
        )
        .unwrap();
    let (free, _) = session
        .generate_blocking(
            &raw,
            &GenerationParams {
                max_tokens: 12,
                ..plain.clone()
            },
            &mut |_| true,
        )
        .unwrap();
    assert!(free.starts_with(" {\"name\": \"John\""), "{free:?}");
    let after = GenerationParams {
        max_tokens: 12,
        grammar_after: Some((
            "{".into(),
            Grammar::Lark(r#"start: "\"name\": " %json {"enum": ["Ann", "Eve"]} "}""#.into()),
        )),
        ..plain.clone()
    };
    let (held, stats) = session
        .generate_blocking(&raw, &after, &mut |_| true)
        .unwrap();
    assert!(
        held == " {\"name\": \"Ann\"}" || held == " {\"name\": \"Eve\"}",
        "{held:?}"
    );
    assert_eq!(stats.stop_reason, StopReason::EndOfSequence);

    let yes_no = GenerationParams {
        max_tokens: 10,
        grammar: Some(Grammar::Lark(r#"start: "yes" | "no""#.into())),
        ..plain.clone()
    };
    let prompt = chat_ids(&session, &template, "Is Paris in France? Answer yes or no.");
    let (answer, stats) = session
        .generate_blocking(&prompt, &yes_no, &mut |_| true)
        .unwrap();
    assert!(answer == "yes" || answer == "no", "{answer:?}");
    assert_eq!(stats.stop_reason, StopReason::EndOfSequence);

    for bad in [
        Grammar::JsonSchema(
            serde_json::json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
        ),
        Grammar::JsonSchema(serde_json::json!({"type": "no-such-type"})),
        Grammar::Lark("start: (".into()),
    ] {
        let params = GenerationParams {
            grammar: Some(bad.clone()),
            ..plain.clone()
        };
        match session.generate_blocking(&prompt, &params, &mut |_| true) {
            Err(glim::Error::Invalid(message)) => {
                assert!(message.contains("does not compile"), "{message}")
            }
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

/// In a batch, a constrained sequence gets its grammar's answer and an unconstrained one
/// beside it the very tokens it gets alone (its mask row allows every token).
#[test]
fn a_grammar_in_a_batch_leaves_the_other_sequences_alone() {
    use glim::generate::{Batcher, Event, GenerationParams, Listener, SamplingParams};
    use glim::grammar::Grammar;
    use std::sync::{Arc, Mutex};
    let options = LoadOptions {
        context: 128,
        slots: 2,
        ..Default::default()
    };
    let Some((mut session, template)) = session(&options) else {
        return;
    };
    struct Collect(Arc<Mutex<Option<String>>>);
    impl Listener for Collect {
        fn event(&mut self, event: Event) -> bool {
            match event {
                Event::Done { text, .. } => *self.0.lock().unwrap() = Some(text),
                Event::Failed(e) => panic!("{e}"),
                Event::Text(_) => {}
            }
            true
        }
    }
    let plain = GenerationParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_tokens: 24,
        ..Default::default()
    };
    let constrained = GenerationParams {
        grammar: Some(Grammar::json_object()),
        max_tokens: 40,
        ..plain.clone()
    };
    let question = chat_ids(&session, &template, "What is the capital of France?");
    let json_prompt = chat_ids(&session, &template, "Give me a JSON object about Paris.");
    let (alone, _) = session
        .generate_blocking(&question, &plain, &mut |_| true)
        .unwrap();
    let glim::generate::Session {
        model, tokenizer, ..
    } = session;
    let mut batcher = Batcher::new(model, tokenizer);
    let (a, b) = (Arc::default(), Arc::default());
    batcher
        .start(question, &plain, Box::new(Collect(Arc::clone(&a))))
        .unwrap();
    batcher
        .start(json_prompt, &constrained, Box::new(Collect(Arc::clone(&b))))
        .unwrap();
    batcher.run_to_completion().unwrap();
    assert_eq!(a.lock().unwrap().as_deref(), Some(alone.as_str()));
    let json = b.lock().unwrap().clone().unwrap();
    // At most 40 tokens: either a whole object, or the beginning of one cut off.
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(v) => assert!(v.is_object(), "{json}"),
        Err(e) => assert!(
            e.is_eof() && json.trim_start().starts_with('{'),
            "{e}: {json}"
        ),
    }
}
