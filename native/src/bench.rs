//! `glim bench`: the figures the survey compares engines by — weight memory (WM), running
//! memory (RM), prefill and decode tokens/s — plus what a decode step costs (dispatches,
//! bytes read), for one model in one or more weight formats.
//!
//! Measured like llama.cpp's `llama-bench`, so `benches/side-by-side.py` can put the two
//! next to each other: prefill runs `--prompt-len` random tokens from an empty context;
//! decode generates `--gen` tokens one at a time, also from an empty context, each step's
//! argmax fed back. One warm-up run is not counted; figures are medians over `--runs`.
//! `--profile` times every kernel of a decode step and of a prefill pass with GPU
//! timestamps, by kernel family.

use std::time::Instant;

use glim::generate::{GenerationParams, SamplingParams, Session};
use glim::grammar::{Constraint, Grammar};
use glim::model::graph::{LoadOptions, Logits, MemoryUse, Model};
use glim::model::loader::LoadedModel;
use glim::quant::WeightFormat;
use glim::text::Message;
use serde_json::json;

use crate::{bail, model, BenchArgs, CliResult};

const MIB: f64 = 1024.0 * 1024.0;

/// Median, least and most of a set of measurements.
struct Spread {
    runs: Vec<f64>,
}

impl Spread {
    fn median(&self) -> f64 {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    fn min(&self) -> f64 {
        self.runs.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    fn json(&self) -> serde_json::Value {
        json!({"median": self.median(), "min": self.min(), "max": self.max(), "runs": self.runs})
    }

    fn text(&self) -> String {
        format!("{:.2} ({:.2}–{:.2})", self.median(), self.min(), self.max())
    }
}

/// One format's figures.
struct Row {
    /// The model's weight formats, most used first.
    format: String,
    /// Bits per matrix weight on the GPU.
    bits_per_weight: f64,
    precision: &'static str,
    memory: MemoryUse,
    /// Peak anonymous host memory seen (resident, not file-backed), when the OS says.
    host_peak: Option<u64>,
    /// Whether the adapter is a CPU (lavapipe): its "GPU" memory is host memory.
    unified: bool,
    prefill: Spread,
    decode: Spread,
    dispatches: usize,
    copies: usize,
    layers: usize,
    read_per_token: u64,
    /// GPU time per token by kernel family, of a decode step and of a prefill pass, when
    /// profiled.
    profile: Option<[Vec<KernelShare>; 2]>,
}

/// One kernel family's part of a decode step.
struct KernelShare {
    /// The kernel's label without format and precision, and its entry point.
    family: String,
    dispatches: usize,
    seconds: f64,
}

impl Row {
    /// Running memory: what the GPU holds plus the host's own; on a CPU adapter the GPU's
    /// buffers are host memory, already in the host figure.
    fn running_memory(&self) -> u64 {
        let host = self.host_peak.unwrap_or(0);
        if self.unified {
            host.max(self.memory.total())
        } else {
            host + self.memory.total()
        }
    }
}

pub fn bench(args: BenchArgs) -> CliResult<()> {
    if args.prompt_len == 0 || args.gen == 0 || args.runs == 0 {
        bail!("--prompt-len, --gen and --runs must each be at least 1");
    }
    let path = model::resolve(args.model.clone())?;
    let context = args.ctx.unwrap_or(args.prompt_len.max(args.gen));
    if context < args.prompt_len.max(args.gen) {
        bail!(
            "--ctx {context} is shorter than --prompt-len {} or --gen {}",
            args.prompt_len,
            args.gen
        );
    }
    // No --quant: the model as stored (a GGUF's blocks, a folder's format), else glim's
    // default.
    let formats: Vec<Option<WeightFormat>> = if args.quant.is_empty() {
        vec![None]
    } else {
        args.quant.iter().map(|&q| Some(q.into())).collect()
    };
    let grammar = args
        .json_schema
        .as_deref()
        .map(crate::run::json_schema_file)
        .transpose()?;
    let mut header_done = false;
    for format in formats {
        let options = LoadOptions {
            format,
            context,
            max_batch: args.batch,
            ..LoadOptions::default()
        };
        let mut loaded = model::load(&path, &options)?;
        let row = measure(&mut loaded.model, &args)?;
        let grammar_cost = match &grammar {
            Some(grammar) => {
                let (cost, back) = constrained_cost(loaded, grammar, &args)?;
                loaded = back;
                Some(cost)
            }
            None => None,
        };
        let summary = &loaded.model.gpu().summary;
        if args.json {
            let mut json = row_json(&row, &args, summary, context, &loaded.name);
            if let Some(cost) = &grammar_cost {
                json["constrained"] = cost.json();
            }
            println!("{json}");
        } else {
            if !header_done {
                println!(
                    "{} on {} ({}), prompt {} tokens, {} generated, context {context}, median (min–max) of {} runs",
                    loaded.name, summary.name, summary.backend, args.prompt_len, args.gen, args.runs
                );
                println!(
                    "{:<12} {:>6} {:>4} {:>8} {:>8} {:>8} {:>8} {:>22} {:>20} {:>14} {:>9}",
                    "format",
                    "bits/w",
                    "act",
                    "WM MiB",
                    "KV MiB",
                    "act MiB",
                    "RM MiB",
                    "prefill tok/s",
                    "decode tok/s",
                    "dispatches/tok",
                    "MiB/tok"
                );
                header_done = true;
            }
            print_row(&row);
            if let Some(note) = sliding_note(&loaded.model) {
                println!("{note}");
            }
            if let Some(shares) = &row.profile {
                print_profile(&row, shares);
            }
            if let Some(cost) = &grammar_cost {
                println!("{cost}");
            }
        }
        drop(loaded);
    }
    if !args.json {
        println!(
            "RM = GPU buffers + peak host memory not backed by files{}; MiB/tok = weights, norms and KV read per decode token.",
            if cfg!(target_os = "linux") { "" } else { " (host figure unavailable on this OS)" }
        );
    }
    Ok(())
}

/// The question constrained decoding is measured on: its answer is a JSON object.
const SCHEMA_PROMPT: &str = "Describe a person, a city and a pet as JSON.";

/// What constrained decoding costs: greedy chat answers to [`SCHEMA_PROMPT`] held to
/// `grammar` (`--gen` tokens at most), against the same prompt decoding as many tokens
/// without it, through the same generation loop; medians over `--runs` after a warm-up.
/// Hands the model back.
fn constrained_cost(
    mut loaded: LoadedModel,
    grammar: &Grammar,
    args: &BenchArgs,
) -> CliResult<(ConstrainedCost, LoadedModel)> {
    let rendered = loaded
        .template
        .render(&[Message::user(SCHEMA_PROMPT)], true)?;
    let prompt = loaded.tokenizer.encode_prompt(&rendered)?;
    let room = (loaded.model.context + 1).saturating_sub(prompt.len());
    if room < 2 {
        bail!(
            "--ctx {} leaves no room for the schema's answer",
            loaded.model.context
        );
    }
    let mut session = Session::new(loaded.model, loaded.tokenizer.clone());
    let greedy = GenerationParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: args.gen.min(room),
        ..GenerationParams::default()
    };
    let constrained = GenerationParams {
        grammar: Some(grammar.clone()),
        ..greedy.clone()
    };
    let (mut with, mut without, mut tokens) = (Vec::new(), Vec::new(), 0);
    let mut answer = String::new();
    let mut run_all = || -> CliResult<()> {
        for run in 0..=args.runs {
            session.reset();
            let (text, held) = session.generate_blocking(&prompt, &constrained, &mut |_| true)?;
            tokens = held.generated_tokens;
            answer = text;
            let free_params = GenerationParams {
                max_tokens: tokens,
                ignore_eos: true,
                ..greedy.clone()
            };
            session.reset();
            let (_, free) = session.generate_blocking(&prompt, &free_params, &mut |_| true)?;
            if run > 0 {
                with.push(held.decode_tokens_per_second());
                without.push(free.decode_tokens_per_second());
            }
        }
        Ok(())
    };
    let measured = run_all();
    loaded.model = session.model;
    measured?;
    let cost = ConstrainedCost {
        tokens,
        with: Spread { runs: with },
        without: Spread { runs: without },
        mask_seconds: mask_seconds(&loaded, grammar, &answer)?,
    };
    Ok((cost, loaded))
}

/// CPU time of one step's mask: the grammar walked along `answer`'s tokens, a mask before
/// each, as the generation loop computes them (the mean per token).
fn mask_seconds(loaded: &LoadedModel, grammar: &Grammar, answer: &str) -> CliResult<f64> {
    let ids = loaded.tokenizer.encode(answer, false)?;
    let words = loaded.model.mask_words();
    let mut constraint = Constraint::new(&loaded.tokenizer, grammar)?;
    let started = Instant::now();
    let mut steps = 0;
    for id in ids {
        constraint.mask(words)?;
        steps += 1;
        if constraint.accept(id).is_err() {
            break; // the text tokenized otherwise than it was generated
        }
    }
    Ok(started.elapsed().as_secs_f64() / steps.max(1) as f64)
}

/// Decode speed of a schema's answers with the schema and without it.
struct ConstrainedCost {
    tokens: usize,
    with: Spread,
    without: Spread,
    /// Mean CPU seconds of one step's mask.
    mask_seconds: f64,
}

impl ConstrainedCost {
    fn ratio(&self) -> f64 {
        self.with.median() / self.without.median()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "tokens": self.tokens,
            "decode_tok_s_with_schema": self.with.json(),
            "decode_tok_s_without": self.without.json(),
            "ratio": self.ratio(),
            "mask_ms_per_token": self.mask_seconds * 1e3,
        })
    }
}

impl std::fmt::Display for ConstrainedCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "constrained decoding (--json-schema, {} tokens): decode {} tok/s with the schema, {} without: {:.0} %; the mask takes {:.2} ms of CPU per token",
            self.tokens,
            self.with.text(),
            self.without.text(),
            100.0 * self.ratio(),
            self.mask_seconds * 1e3
        )
    }
}

/// Deterministic token ids spread over the vocabulary (as llama-bench, content does not
/// matter for speed; the same ids every run keep runs comparable).
fn bench_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab as u64) as u32
        })
        .collect()
}

fn measure(model: &mut Model, args: &BenchArgs) -> CliResult<Row> {
    let vocab = model.output_vocab();
    let prompt = bench_tokens(args.prompt_len, vocab, 1);
    let mut host_peak = host_anon_bytes();
    let mut note_host = || {
        if let Some(now) = host_anon_bytes() {
            host_peak = Some(host_peak.map_or(now, |p| p.max(now)));
        }
    };
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    // Run 0 warms up (pipelines compiled, caches filled) and is not counted.
    for run in 0..=args.runs {
        let started = Instant::now();
        model.forward_blocking(&prompt, 0, Logits::Last)?;
        let prefill_secs = started.elapsed().as_secs_f64();
        note_host();

        let mut token = prompt[0];
        let started = Instant::now();
        for pos in 0..args.gen {
            token = model.forward_blocking(&[token], pos, Logits::Last)?[0];
        }
        let decode_secs = started.elapsed().as_secs_f64();
        note_host();
        if run > 0 {
            prefill.push(args.prompt_len as f64 / prefill_secs);
            decode.push(args.gen as f64 / decode_secs);
        }
        eprint!(
            "\r{}: run {run}/{} prefill {:.2} tok/s, decode {:.2} tok/s{}",
            model.weight_formats(),
            args.runs,
            args.prompt_len as f64 / prefill_secs,
            args.gen as f64 / decode_secs,
            if run == 0 { " (warm-up)" } else { "" }
        );
    }
    eprintln!();
    let step = model.decode_step_shape()?;
    let profile = if args.profile {
        let decode = profile(model, &[1], args.gen / 2)?;
        let prompt = &prompt[..args.prompt_len.min(args.batch)];
        Some([decode, profile(model, prompt, 0)?])
    } else {
        None
    };
    let summary = &model.gpu().summary;
    Ok(Row {
        format: model.weight_formats(),
        bits_per_weight: model.matrix_bits_per_weight(),
        precision: match model.precision {
            glim::gpu::Precision::F16 => "f16",
            glim::gpu::Precision::F32 => "f32",
        },
        memory: model.memory(),
        host_peak,
        unified: summary.device_type == "Cpu",
        prefill: Spread { runs: prefill },
        decode: Spread { runs: decode },
        dispatches: step.dispatches,
        copies: step.copies,
        layers: model.config.n_layers,
        // The middle of the generated span: the KV part grows linearly with position.
        read_per_token: model.decode_read_bytes(args.gen / 2),
        profile,
    })
}

/// Passes profiled; each family's time is the median over them.
const PROFILED_PASSES: usize = 5;

/// GPU time per token by kernel family, for passes over `tokens` from `position`.
fn profile(model: &mut Model, tokens: &[u32], position: usize) -> CliResult<Vec<KernelShare>> {
    let mut passes = Vec::new();
    for i in 0..PROFILED_PASSES {
        // Decode steps walk forward; prefill passes repeat.
        let at = if tokens.len() == 1 {
            position + i
        } else {
            position
        };
        passes.push(pollster::block_on(
            model.profile(tokens, at.min(model.context - 1)),
        )?);
    }
    // Families in the order the pass first runs them.
    let mut shares: Vec<KernelShare> = Vec::new();
    for (name, _) in &passes[0] {
        let family = family_of(name);
        match shares.iter_mut().find(|s| s.family == family) {
            Some(share) => share.dispatches += 1,
            None => shares.push(KernelShare {
                family,
                dispatches: 1,
                seconds: 0.0,
            }),
        }
    }
    for share in &mut shares {
        let per_token = passes
            .iter()
            .map(|pass| {
                let secs: f64 = pass
                    .iter()
                    .filter(|(name, _)| family_of(name) == share.family)
                    .map(|(_, secs)| secs)
                    .sum();
                secs / tokens.len() as f64
            })
            .collect();
        share.seconds = Spread { runs: per_token }.median();
    }
    Ok(shares)
}

/// `matmul.q4f16.f16::gemv` → `matmul::gemv`.
fn family_of(name: &str) -> String {
    let (label, entry) = name.split_once("::").unwrap_or((name, ""));
    let kernel = label.split('.').next().unwrap_or(label);
    format!("{kernel}::{entry}")
}

fn print_profile(row: &Row, [decode, prefill]: &[Vec<KernelShare>; 2]) {
    for (what, shares, tok_s) in [
        ("decode step", decode, row.decode.median()),
        ("prefill pass", prefill, row.prefill.median()),
    ] {
        let total: f64 = shares.iter().map(|s| s.seconds).sum();
        let wall = 1.0 / tok_s;
        println!(
            "{} {what}, GPU time per token: {:.2} ms in kernels (each timed alone), {:.2} ms measured in the runs",
            row.format,
            total * 1e3,
            wall * 1e3,
        );
        println!(
            "  {:<28} {:>10} {:>12} {:>7}",
            "kernel", "dispatches", "µs/token", "share"
        );
        for s in shares {
            println!(
                "  {:<28} {:>10} {:>12.1} {:>6.1}%",
                s.family,
                s.dispatches,
                s.seconds * 1e6,
                100.0 * s.seconds / total.max(1e-12)
            );
        }
    }
}

/// What the sliding-window layers save in the KV cache (`None` for models without them).
fn sliding_note(model: &glim::model::graph::Model) -> Option<String> {
    let (sliding, global) = model.sliding_layers();
    let &(window, rows) = sliding.first()?;
    let memory = model.memory();
    Some(format!(
        "KV cache: {} of {} layers attend to a window of {window} tokens and keep {rows} rows each; {:.1} MiB where caching the whole context in every layer would take {:.1} MiB ({:.0} %)",
        sliding.len(),
        sliding.len() + global,
        memory.kv_cache as f64 / MIB,
        memory.kv_cache_full as f64 / MIB,
        100.0 * memory.kv_cache as f64 / memory.kv_cache_full.max(1) as f64
    ))
}

fn print_row(row: &Row) {
    let mib = |b: u64| format!("{:.1}", b as f64 / MIB);
    println!(
        "{:<12} {:>6.2} {:>4} {:>8} {:>8} {:>8} {:>8} {:>22} {:>20} {:>14} {:>9}",
        row.format,
        row.bits_per_weight,
        row.precision,
        mib(row.memory.weights),
        mib(row.memory.kv_cache),
        mib(row.memory.activations),
        mib(row.running_memory()),
        row.prefill.text(),
        row.decode.text(),
        format!(
            "{} ({:.1}/layer)",
            row.dispatches,
            row.dispatches as f64 / row.layers.max(1) as f64
        ),
        mib(row.read_per_token),
    );
}

fn row_json(
    row: &Row,
    args: &BenchArgs,
    summary: &glim::gpu::AdapterSummary,
    context: usize,
    name: &str,
) -> serde_json::Value {
    json!({
        "model": name,
        "format": row.format,
        "bits_per_weight": row.bits_per_weight,
        "adapter": summary.name,
        "backend": summary.backend,
        "device_type": summary.device_type,
        "driver": summary.driver,
        "precision": row.precision,
        "weight_bytes": row.memory.weights,
        "kv_bytes": row.memory.kv_cache,
        "activation_bytes": row.memory.activations,
        "gpu_peak_bytes": row.memory.total(),
        "host_peak_rss_bytes": row.host_peak,
        "running_memory_bytes": row.running_memory(),
        "context": context,
        "prompt_len": args.prompt_len,
        "gen": args.gen,
        "prefill_tok_s": row.prefill.json(),
        "decode_tok_s": row.decode.json(),
        "dispatches_per_token": row.dispatches,
        "copies_per_token": row.copies,
        "layers": row.layers,
        "decode_bytes_per_token": row.read_per_token,
        "profile": row.profile.as_ref().map(|[decode, prefill]| {
            let shares = |shares: &[KernelShare]| {
                shares
                    .iter()
                    .map(|s| json!({"kernel": s.family, "dispatches": s.dispatches, "seconds_per_token": s.seconds}))
                    .collect::<Vec<_>>()
            };
            json!({"decode": shares(decode), "prefill": shares(prefill)})
        }),
    })
}

/// Resident memory of this process that no file backs: the heap, and shared memory (where
/// a CPU adapter such as lavapipe keeps its "GPU" buffers). File pages, such as a
/// memory-mapped model the OS can drop, are left out.
fn host_anon_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kib("RssAnon:")? + kib("RssShmem:").unwrap_or(0)) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_median_min_max() {
        let s = Spread {
            runs: vec![3.0, 1.0, 2.0, 10.0],
        };
        assert_eq!(s.median(), 2.5);
        assert_eq!(s.min(), 1.0);
        assert_eq!(s.max(), 10.0);
        assert_eq!(
            Spread {
                runs: vec![4.0, 1.0, 9.0]
            }
            .median(),
            4.0
        );
    }

    #[test]
    fn bench_tokens_stay_in_the_vocabulary_and_repeat() {
        let a = bench_tokens(1000, 49152, 1);
        assert!(a.iter().all(|&t| t < 49152));
        assert_eq!(a, bench_tokens(1000, 49152, 1));
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 900);
    }
}
