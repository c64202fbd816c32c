//! glim against llama.cpp on the same GGUF (SmolLM2-135M-Instruct Q4_1), with goldens
//! recorded by `tests/reference/make_goldens.py` (llama.cpp's CPU backend through
//! llama-cpp-python).
//!
//! llama.cpp's CPU path quantizes activations to 8 bits inside its Q4_1 matmuls, so where
//! its own top-2 logits are within 0.5 of each other the two engines may honestly disagree;
//! the goldens record that margin at every step and the tests print it at any divergence.

use glim::formats::gguf::GgufFile;
use glim::generate::perplexity::perplexity;
use glim::model::llama::{Llama, LoadOptions, Logits};
use glim::quant::WeightFormat;
use glim::text::Tokenizer;
use serde_json::Value;

const NEAR_TIE: f64 = 0.5;

fn goldens() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/reference/goldens.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The test model as stored (`None`: its Q4_1 and Q8_0 blocks) or converted to `format`,
/// run by the kernels built for GPUs where `gpu_kernels` (on lavapipe the CPU ones run
/// otherwise).
fn load(format: Option<WeightFormat>, gpu_kernels: bool) -> Option<(Llama, GgufFile)> {
    let path = glim_tests::test_model()?;
    let mut ctx = glim_tests::open_gpu()?;
    if gpu_kernels {
        ctx.use_gpu_kernels();
    }
    let file = GgufFile::open(&path).unwrap();
    let options = LoadOptions {
        format,
        context: 512,
        max_batch: 128,
        precision: None,
        slots: 1,
    };
    let model = Llama::from_gguf(ctx, &file, &options, &mut |_, _| {}).unwrap();
    Some((model, file))
}

/// Teacher-forced top-1 agreement over the fixed text: (all positions, positions where
/// llama.cpp itself is not near a tie).
fn forced_agreement(model: &mut Llama, g: &Value) -> (f64, f64) {
    let forced = &g["forced"];
    let (text_ids, want, margins) = (
        ids(&forced["ids"]),
        ids(&forced["top1"]),
        floats(&forced["margins"]),
    );
    let got = model.forward_blocking(&text_ids, 0, Logits::All).unwrap();
    let agree = got.iter().zip(&want).filter(|(a, b)| a == b).count();
    let differ: Vec<String> = (0..want.len())
        .filter(|&i| got[i] != want[i])
        .map(|i| format!("{i}:{:.2}", margins[i]))
        .collect();
    eprintln!(
        "positions where glim's top-1 differs (position:llama.cpp margin): {}",
        differ.join(" ")
    );
    let clear: Vec<usize> = (0..want.len())
        .filter(|&i| margins[i] >= NEAR_TIE)
        .collect();
    let agree_clear = clear.iter().filter(|&&i| got[i] == want[i]).count();
    (
        agree as f64 / want.len() as f64,
        agree_clear as f64 / clear.len() as f64,
    )
}

fn glim_perplexity(model: &mut Llama, g: &Value) -> f64 {
    let p = &g["perplexity"];
    let ctx = p["ctx"].as_u64().unwrap() as usize;
    let bos = p["bos"].as_bool().unwrap().then_some(1);
    let text_ids = ids(&g["forced"]["ids"]);
    let report =
        pollster::block_on(perplexity(model, &text_ids, ctx, bos, &mut |_, _, _| {})).unwrap();
    assert_eq!(report.scored_tokens as u64, p["scored"].as_u64().unwrap());
    report.perplexity
}

/// Teacher-forced top-1 through the decode kernels, one token at a time: the prediction
/// after each of the text's first `n` tokens, as a generation step makes it.
fn forced_decode_top1(model: &mut Llama, text_ids: &[u32], n: usize) -> Vec<u32> {
    (0..n.min(text_ids.len()))
        .map(|pos| {
            model
                .forward_blocking(&text_ids[pos..pos + 1], pos, Logits::Last)
                .unwrap()[0]
        })
        .collect()
}

/// Teacher-forced agreement (prefill kernels) and the greedy answers (decode kernels) of a
/// model that computes what llama.cpp computes (as stored, or at f16) against llama.cpp's.
fn check_against_llama_cpp(model: &mut Llama, g: &Value, what: &str) {
    let (all, clear) = forced_agreement(model, g);
    eprintln!("{what}: teacher-forced top-1 agreement with llama.cpp: {:.2}% ({:.2}% where llama.cpp's margin >= {NEAR_TIE})", all * 100.0, clear * 100.0);
    // Wherever llama.cpp is not itself near a tie, glim must pick the same token. Overall,
    // 161 of the text's 451 positions are near-ties for llama.cpp (a 135M model on prose),
    // where its 8-bit activations decide as much as the model: 96.7% agree there.
    assert_eq!(
        clear, 1.0,
        "{what}: glim differs from llama.cpp where llama.cpp is confident"
    );
    assert!(all >= 0.95, "{what}: agreement {all} below 95%");

    for case in g["greedy"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let (want, margins) = (ids(&case["tokens"]), floats(&case["margins"]));
        // Compare up to (and including) the first step where llama.cpp faces a near-tie.
        let steps = margins
            .iter()
            .position(|&m| m < NEAR_TIE)
            .map_or(want.len(), |i| i + 1);
        let mut got = model.forward_blocking(&prompt, 0, Logits::Last).unwrap();
        while got.len() < steps {
            let pos = prompt.len() + got.len() - 1;
            got.push(
                model
                    .forward_blocking(&[*got.last().unwrap()], pos, Logits::Last)
                    .unwrap()[0],
            );
        }
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        match first_diff {
            Some(i) if margins[i] >= NEAR_TIE => panic!(
                "{what}: {:?}: step {i}: glim chose {} where llama.cpp chose {} with a top-2 margin of {:.3}",
                case["prompt"], got[i], want[i], margins[i]
            ),
            Some(i) => eprintln!("{what}: {:?}: equal for {i} tokens, then a near-tie (llama.cpp margin {:.3})", case["prompt"], margins[i]),
            None => eprintln!("{what}: {:?}: equal for all {steps} compared tokens", case["prompt"]),
        }
    }
}

/// The GGUF as stored (Q4_1 matrices, a Q8_0 embedding and head, f32 norms): the same
/// numbers llama.cpp's weights hold, so it must agree with llama.cpp wherever llama.cpp is
/// confident, through the prefill kernels and through the decode kernels one token at a
/// time, and its perplexity must be within 2 % of llama.cpp's.
#[test]
fn as_stored_matches_llama_cpp() {
    let Some((mut model, _)) = load(None, false) else {
        return;
    };
    assert_eq!(model.weight_formats(), "q4_1 + q8_0");
    let g = goldens();
    check_against_llama_cpp(&mut model, &g, "as stored");

    let forced = &g["forced"];
    let (text_ids, want, margins) = (
        ids(&forced["ids"]),
        ids(&forced["top1"]),
        floats(&forced["margins"]),
    );
    let n = 160;
    let got = forced_decode_top1(&mut model, &text_ids, n);
    let differ: Vec<String> = (0..n)
        .filter(|&i| got[i] != want[i])
        .map(|i| format!("{i}:{:.2}", margins[i]))
        .collect();
    eprintln!(
        "as stored, decode kernels: top-1 differs from llama.cpp at {} of {n} positions (position:margin): {}",
        differ.len(),
        differ.join(" ")
    );
    for i in 0..n {
        assert!(
            got[i] == want[i] || margins[i] < NEAR_TIE,
            "as stored, decode kernels: position {i}: glim predicts {} where llama.cpp predicts {} with a margin of {:.3}",
            got[i],
            want[i],
            margins[i]
        );
    }

    let ppl = glim_perplexity(&mut model, &g);
    let peer = g["perplexity"]["ppl"].as_f64().unwrap();
    eprintln!("as stored: perplexity {ppl:.3} vs llama.cpp {peer:.3}");
    assert!(
        (ppl / peer - 1.0).abs() < 0.02,
        "as stored: perplexity {ppl} is not within 2 % of llama.cpp's {peer}"
    );
}

/// Converted to f16 (`--quant f16`): each Q4_1 weight rounded to f16, close enough to run
/// like llama.cpp.
#[test]
fn f16_matches_llama_cpp() {
    let Some((mut model, file)) = load(Some(WeightFormat::F16), false) else {
        return;
    };
    let g = goldens();
    check_against_llama_cpp(&mut model, &g, "f16");

    let ppl = glim_perplexity(&mut model, &g);
    let peer = g["perplexity"]["ppl"].as_f64().unwrap();
    eprintln!(
        "f16 perplexity {ppl:.3} vs llama.cpp {peer:.3} (ctx {})",
        g["perplexity"]["ctx"]
    );
    assert!(
        (ppl / peer - 1.0).abs() < 0.05,
        "perplexity {ppl} too far from llama.cpp's {peer}"
    );

    // glim's tokenizer gives llama.cpp's prompt ids.
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    for case in g["greedy"].as_array().unwrap() {
        let text = case["prompt"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, true).unwrap(),
            ids(&case["prompt_ids"]),
            "{text:?}"
        );
    }
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/reference/text.txt"))
        .unwrap();
    assert_eq!(
        tokenizer.encode(&text, true).unwrap(),
        ids(&g["forced"]["ids"])
    );
}

/// Converted to MLC's formats (`--quant q4f16|q3f16`), every Q4_1 block decoded and rounded
/// a second time, so they differ from llama.cpp by their own rounding: the figures are
/// printed (README's table), each held under a floor.
#[test]
fn quantized_formats_agreement_and_perplexity() {
    let g = goldens();
    let peer = g["perplexity"]["ppl"].as_f64().unwrap();
    for format in [WeightFormat::Q4F16, WeightFormat::Q3F16] {
        let Some((mut model, _)) = load(Some(format), false) else {
            return;
        };
        let (all, clear) = forced_agreement(&mut model, &g);
        let ppl = glim_perplexity(&mut model, &g);
        eprintln!(
            "{}: weights {:.1} MiB, top-1 agreement {:.2}% ({:.2}% clear), perplexity {ppl:.3} (llama.cpp Q4_1: {peer:.3})",
            format.name(),
            model.weight_bytes() as f64 / (1 << 20) as f64,
            all * 100.0,
            clear * 100.0
        );
        // Regression floors just under what MLC's own max-abs scales give here (q4f16
        // 53.9 = 1.38x, q3f16 603 = 15.4x llama.cpp's 39.1): glim's minimum-error scales
        // (51.1 = 1.31x, 577 = 14.7x) must keep their gain.
        let floor = if format == WeightFormat::Q4F16 {
            1.35
        } else {
            15.2
        };
        assert!(
            ppl.is_finite() && ppl < peer * floor,
            "{} perplexity {ppl} is above {floor} x llama.cpp's {peer}",
            format.name()
        );
    }
}

/// The kernels real GPUs run (gemm for prompts, gemv for decode steps) through the whole
/// model as stored, on any adapter: on lavapipe the other tests here prefill and decode
/// quantized weights with the CPU adapters' kernels.
#[test]
fn gpu_kernels_match_llama_cpp() {
    let Some((mut model, _)) = load(None, true) else {
        return;
    };
    check_against_llama_cpp(&mut model, &goldens(), "as stored, GPU kernels");
}
