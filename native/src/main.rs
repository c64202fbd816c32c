//! `glim`: the desktop command line for the glim engine.
//!
//! `glim run` answers one prompt or chats on the terminal, `glim devices` lists the GPU
//! adapters, `glim ppl` measures perplexity the way llama.cpp's `llama-perplexity` does,
//! `glim quantize` writes a model as an MLC-layout model folder, `glim bench` measures memory
//! and speed, `glim serve` answers OpenAI-style HTTP requests from several clients at once,
//! `glim pull`, `glim list` and `glim rm` fill, show and trim the model cache.
//! Every failure ends as one `error: ...` line on stderr and exit status 1.

mod bench;
mod cache;
mod chat;
mod devices;
mod model;
mod ppl;
mod pull;
mod quantize;
mod run;
mod serve;
mod synth;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use glim::generate::SamplingParams;
use glim::model::graph::LoadOptions;
use glim::quant::WeightFormat;

/// Run large language models on your GPU through WebGPU.
#[derive(Parser, Debug)]
#[command(name = "glim", version, propagate_version = true)]
#[command(after_help = "\
Environment:
  GLIM_HOME       where models live, in GLIM_HOME/models (default: $XDG_CACHE_HOME/glim or ~/.cache/glim)
  GLIM_BACKEND    search only this GPU backend: vulkan, metal, dx12 or gl
  GLIM_ADAPTER    use this adapter: an index or a name substring, as `glim devices` lists them
  GLIM_PRECISION  f32 to force f32 activations on adapters with shader-f16
  HF_ENDPOINT     the Hugging Face Hub `glim pull` downloads from (default: https://huggingface.co)
  HF_TOKEN        a Hugging Face access token, for private and gated repos

Get the default model (SmolLM2-135M-Instruct) with scripts/fetch-model.sh, others with
`glim pull ORG/NAME`.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Answer a prompt (-p), or chat with a model on the terminal
    #[command(after_help = "\
Without -p, glim chats: type a message and press Enter. /clear starts a new conversation,
/exit or Ctrl-D quits, Ctrl-C stops the answer being written (at the prompt, it quits).

Examples:
  glim run -p \"What is the capital of France?\"
  glim run model.gguf --raw -p \"Once upon a time\" -n 64 --temperature 0.8
  glim run --system \"You answer in one sentence.\"")]
    Run(RunArgs),
    /// List the GPU adapters glim can use, marking the one it picks
    Devices,
    /// Measure a model's perplexity on a text file, like llama.cpp's llama-perplexity
    Ppl(PplArgs),
    /// Write a GGUF file or Hugging Face folder as a quantized model folder (MLC-LLM's layout)
    #[command(after_help = "\
The folder holds tensor-cache.json (and ndarray-cache.json), params_shard_*.bin,
mlc-chat-config.json, tokenizer.json and tokenizer_config.json: what MLC-LLM and WebLLM read,
what glim's browser package streams, and what `glim run OUTDIR` runs.

Example:
  glim quantize SmolLM2-135M-Instruct.Q4_1.gguf smollm2-q4f16 --quant q4f16")]
    Quantize(QuantizeArgs),
    /// Measure weight and running memory, prefill and decode speed, like llama-bench
    #[command(after_help = "\
Prefill runs --prompt-len tokens and decode generates --gen tokens, each from an empty
context, as llama.cpp's llama-bench does (pp and tg); one warm-up run, then the median and
range of --runs. benches/side-by-side.py runs this next to llama-bench on the same model.

Examples:
  glim bench
  glim bench model.gguf --quant q4f16 --quant f16 --prompt-len 128 --gen 64 --runs 3
  glim bench model.gguf --json")]
    Bench(BenchArgs),
    /// Serve a model over OpenAI's HTTP API (chat and text completions, streaming), to
    /// several clients at once
    #[command(after_help = "\
Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health.
Requests in the --parallel slots are decoded together, one pass over the weights per
step; more wait in a queue of --queue, and past that get 503 with Retry-After.

Examples:
  glim serve
  glim serve model.gguf --port 8080 --parallel 8 --ctx 4096
  glim serve --host 0.0.0.0 --api-key secret --cors https://example.com
  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'")]
    Serve(ServeArgs),
    /// Write a Llama-shaped GGUF with random weights (Llama 2 7B's shapes by default)
    #[command(after_help = "\
The file is what llama.cpp writes for a Llama 2 model (same keys, tensor names and block
types) with random 4-bit weights and a made-up vocabulary, so glim and llama-bench can be
timed on the identical 7B-class file where no 7B weights are at hand. Its text is noise.

Examples:
  glim synth llama2-7b.Q4_0.gguf
  glim bench llama2-7b.Q4_0.gguf --prompt-len 512 --gen 128")]
    Synth(SynthArgs),
    /// Write a GGUF file as several, in llama.cpp's gguf-split layout
    #[command(after_help = "\
The parts are OUT-00001-of-0000N.gguf and its siblings, the tensors in order and about as
many in each, every metadata key in the first: what llama.cpp's gguf-split writes, and what
glim, llama.cpp and the browser package load given the first part (smaller files for hosts
and browser caches with a size limit per file).

Example:
  glim split model.gguf model --parts 3   # model-00001-of-00003.gguf ... model-00003-of-00003.gguf")]
    Split(SplitArgs),
    /// Download a model from Hugging Face (or a .gguf URL) into glim's model cache
    #[command(after_help = "\
SOURCE is ORG/NAME[@REVISION][:FILE] or an http(s) URL of a .gguf file:
  ORG/NAME          a Hugging Face repo: an MLC model folder, else one of its GGUF files
                    (Q4_K_M if there is one, else Q4_K_S, Q4_0, Q4_1, Q5_K_M, ..., F16), else its
                    safetensors model (config.json, *.safetensors, tokenizer files)
  @REVISION         a branch, tag or commit (default: main)
  :FILE             a .gguf file of the repo, a quantization (:Q8_0) or an MLC model's folder

The model lands in GLIM_HOME/models/NAME (NAME: the GGUF file's name without .gguf, or the
repo's name) and runs as `glim run NAME`. Files download a few at a time; sizes and the Hub's
sha256 checksums are checked. An interrupted pull resumes where it stopped when run again.

Examples:
  glim pull bartowski/Llama-3.2-1B-Instruct-GGUF
  glim pull bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0
  glim pull mlc-ai/SmolLM2-360M-Instruct-q4f16_1-MLC
  glim pull HuggingFaceTB/SmolLM2-135M-Instruct@main
  glim pull https://example.com/models/model.Q4_0.gguf")]
    Pull(PullArgs),
    /// List the models in glim's cache: name, size, kind and path
    #[command(after_help = "\
The cache is GLIM_HOME/models: .gguf files, and folders holding a .gguf file, an MLC model or a
Hugging Face model. Any of them runs as `glim run NAME`.")]
    List,
    /// Remove a model from glim's cache
    #[command(after_help = "\
NAME is a model's name as `glim list` shows it, or the repo it was pulled from (ORG/NAME).

Example:
  glim rm Llama-3.2-1B-Instruct-Q4_K_M")]
    Rm(RmArgs),
}

#[derive(Args, Debug)]
struct PullArgs {
    /// ORG/NAME[@REVISION][:FILE] on Hugging Face, or an http(s) URL of a .gguf file
    #[arg(value_name = "SOURCE")]
    source: String,
}

#[derive(Args, Debug)]
struct RmArgs {
    /// The model's name, as `glim list` shows it
    #[arg(value_name = "NAME")]
    name: String,
}

/// Formats `glim quantize` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WriteQuant {
    /// 4-bit weights, f16 scales (MLC q4f16_1)
    #[value(alias = "q4f16_1")]
    Q4f16,
    /// 3-bit weights, f16 scales (MLC q3f16_1)
    #[value(alias = "q3f16_1")]
    Q3f16,
    /// 4-bit weights, f32 scales stored as bf16 (MLC q4f32_1, for f32-only GPUs)
    #[value(alias = "q4f32_1")]
    Q4f32,
    /// Unquantized f16 weights (MLC q0f16; quantized when loaded)
    Q0f16,
}

#[derive(Args, Debug)]
struct QuantizeArgs {
    /// A .gguf file or a Hugging Face model folder
    #[arg(value_name = "INPUT")]
    input: PathBuf,

    /// The folder to write (must not exist, or be empty)
    #[arg(value_name = "OUTDIR")]
    outdir: PathBuf,

    /// Weight format to write
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = WriteQuant::Q4f16)]
    quant: WriteQuant,
}

/// Weight formats on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Quant {
    /// 4-bit weights, f16 scales (MLC q4f16_1)
    #[value(alias = "q4f16_1")]
    Q4f16,
    /// 3-bit weights, f16 scales (MLC q3f16_1)
    #[value(alias = "q3f16_1")]
    Q3f16,
    /// Unquantized f16 weights
    F16,
}

impl From<Quant> for WeightFormat {
    fn from(q: Quant) -> Self {
        match q {
            Quant::Q4f16 => WeightFormat::Q4F16,
            Quant::Q3f16 => WeightFormat::Q3F16,
            Quant::F16 => WeightFormat::F16,
        }
    }
}

/// How a model is loaded.
#[derive(Args, Debug, Clone)]
struct ModelArgs {
    /// Convert the weights to this format (a GGUF's blocks are decoded and rounded a second
    /// time). Without it a GGUF runs as stored, a model folder in its own format, and a
    /// Hugging Face folder's floats are quantized to q4f16
    #[arg(long, value_enum, value_name = "FORMAT")]
    quant: Option<Quant>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A .gguf file, a model folder (MLC layout), a Hugging Face folder or the name of a
    /// model in the cache (`glim list`) [default: $GLIM_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(value_name = "MODEL")]
    model: Option<PathBuf>,

    /// Answer this prompt and exit (without it, chat interactively)
    #[arg(short, long, value_name = "PROMPT")]
    prompt: Option<String>,

    /// Feed the prompt to the model as is, without the chat template
    #[arg(long, requires = "prompt")]
    raw: bool,

    /// A system message to start the conversation with
    #[arg(long, value_name = "TEXT", conflicts_with = "raw")]
    system: Option<String>,

    /// Sampling temperature; 0 always picks the most likely token (greedy)
    #[arg(long, value_name = "F", allow_negative_numbers = true, default_value_t = SamplingParams::default().temperature)]
    temperature: f32,

    /// Sample only from the K most likely tokens (0: all)
    #[arg(long, value_name = "N", default_value_t = SamplingParams::default().top_k)]
    top_k: usize,

    /// Sample only from the most likely tokens whose probabilities add up to P (1: all)
    #[arg(long, value_name = "F", allow_negative_numbers = true, default_value_t = SamplingParams::default().top_p)]
    top_p: f32,

    /// Drop tokens less likely than this fraction of the most likely one (0: off)
    #[arg(long, value_name = "F", allow_negative_numbers = true, default_value_t = SamplingParams::default().min_p)]
    min_p: f32,

    /// Penalize tokens seen in the last 64 (1: off)
    #[arg(long, value_name = "F", allow_negative_numbers = true, default_value_t = SamplingParams::default().repetition_penalty)]
    repeat_penalty: f32,

    /// Random seed for sampling [default: a new one each run]
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Most tokens to generate per answer
    #[arg(
        short = 'n',
        long = "max-tokens",
        value_name = "N",
        default_value_t = 256
    )]
    max_tokens: usize,

    /// Context length in tokens (prompt and answer, or the whole conversation)
    #[arg(long, value_name = "N", default_value_t = 2048)]
    ctx: usize,

    #[command(flatten)]
    load: ModelArgs,

    /// Stop the answer before this text (may be repeated)
    #[arg(long, value_name = "STR")]
    stop: Vec<String>,

    /// Answer in JSON valid against the JSON Schema in FILE ({"type": "object"}: any
    /// object); the answer ends when the JSON does
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    json_schema: Option<PathBuf>,

    /// Answer in text the grammar in FILE accepts (llguidance's Lark syntax, e.g.
    /// `start: "yes" | "no"`; a /regex/ may stand for a rule)
    #[arg(long, value_name = "FILE")]
    grammar: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct PplArgs {
    /// A .gguf file, a model folder (MLC layout), a Hugging Face folder or a cached model's name
    #[arg(value_name = "MODEL")]
    model: PathBuf,

    /// The text to score (UTF-8)
    #[arg(value_name = "TEXTFILE")]
    text: PathBuf,

    /// Tokens per chunk; the second half of each chunk is scored
    #[arg(long, value_name = "N", default_value_t = 512)]
    ctx: usize,

    #[command(flatten)]
    load: ModelArgs,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// A .gguf file, a model folder (MLC layout), a Hugging Face folder or a cached model's
    /// name [default: the default model]
    #[arg(value_name = "MODEL")]
    model: Option<PathBuf>,

    /// Convert the weights to this format; repeat for several (one row each) [default: a
    /// GGUF as stored, a model folder in its own format, a Hugging Face folder as q4f16]
    #[arg(long, value_enum, value_name = "FORMAT")]
    quant: Vec<Quant>,

    /// Prompt tokens for the prefill measurement
    #[arg(long, value_name = "N", default_value_t = 512)]
    prompt_len: usize,

    /// Tokens generated for the decode measurement
    #[arg(long, value_name = "N", default_value_t = 128)]
    gen: usize,

    /// Measured runs (after one warm-up run)
    #[arg(long, value_name = "N", default_value_t = 5)]
    runs: usize,

    /// KV-cache length in tokens [default: the longer of --prompt-len and --gen]
    #[arg(long, value_name = "N")]
    ctx: Option<usize>,

    /// Tokens per prefill pass (llama.cpp's -ub)
    #[arg(long, value_name = "N", default_value_t = LoadOptions::default().max_batch)]
    batch: usize,

    /// One JSON object per format on stdout instead of the table
    #[arg(long)]
    json: bool,

    /// Also time each kernel of a decode step and a prefill pass on the GPU (timestamp
    /// queries), by kernel family
    #[arg(long)]
    profile: bool,

    /// Also measure what constrained decoding costs: a chat answer in JSON valid against
    /// the JSON Schema in FILE, decode tok/s against the same number of tokens unconstrained
    #[arg(long, value_name = "FILE")]
    json_schema: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// A .gguf file, a model folder (MLC layout) or a Hugging Face folder [default: the default model]
    #[arg(value_name = "MODEL")]
    model: Option<PathBuf>,

    /// Address to listen on (127.0.0.1: this machine only)
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    host: String,

    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    port: u16,

    /// Context length of each slot, in tokens (prompt and answer)
    #[arg(long, value_name = "N", default_value_t = 2048)]
    ctx: usize,

    #[command(flatten)]
    load: ModelArgs,

    /// Requests generated at once, each in its own KV-cache slot, decoded together
    #[arg(long, value_name = "N", default_value_t = 4)]
    parallel: usize,

    /// Requests that may wait for a slot; more get 503
    #[arg(long, value_name = "N", default_value_t = 64)]
    queue: usize,

    /// Require `Authorization: Bearer KEY` on every API request
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,

    /// Allow browsers on this origin (or *) to call the API (CORS); off by default
    #[arg(long, value_name = "ORIGIN")]
    cors: Option<String>,

    /// Largest request body in bytes; larger get 413
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_body: usize,
}

/// GGUF block types `glim synth` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[allow(non_camel_case_types)]
enum SynthType {
    /// 32 4-bit codes and an f16 scale per block (4.5 bits/weight)
    #[value(name = "q4_0")]
    Q4_0,
    /// 32 4-bit codes, an f16 scale and an f16 minimum per block (5 bits/weight)
    #[value(name = "q4_1")]
    Q4_1,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the head and some attn_v and ffn_down (about 4.8 bits/weight)
    #[value(name = "q4_K_M")]
    Q4_K_M,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// The GGUF file to write (must not exist)
    #[arg(value_name = "OUT")]
    output: PathBuf,

    /// Model shape: llama2-7b (32 layers, d 4096, FFN 11008, 32 heads, vocabulary 32000), small (4 layers, d 512) or tiny
    #[arg(long, value_name = "NAME", default_value = "llama2-7b")]
    shape: String,

    /// Block type of the weight matrices
    #[arg(long = "type", value_enum, value_name = "TYPE", default_value_t = SynthType::Q4_0)]
    r#type: SynthType,

    /// Seed of the random weights: the same seed writes the same file
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// Instead of random weights, rewrite this Llama GGUF's weights (byte for byte) in the
    /// layout of --arch, with seeded random tensors for what that architecture adds
    #[arg(long, value_name = "MODEL.gguf", requires = "arch")]
    from: Option<PathBuf>,

    /// The architecture to rewrite --from as: qwen2 (adds Q/K/V biases), qwen3 (adds
    /// per-head Q/K norms) or phi3 (stacks Q/K/V and gate/up, adds LongRoPE divisors)
    #[arg(long, value_name = "ARCH", requires = "from")]
    arch: Option<String>,
}

#[derive(Args, Debug)]
struct SplitArgs {
    /// The GGUF file to split
    #[arg(value_name = "MODEL.gguf")]
    input: PathBuf,

    /// The parts' path without `-00001-of-0000N.gguf` (they must not exist)
    #[arg(value_name = "OUT")]
    output: PathBuf,

    /// How many parts
    #[arg(long, value_name = "N")]
    parts: usize,
}

/// An error for the user: printed as `error: <message>`, exit status 1.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<glim::Error> for CliError {
    fn from(e: glim::Error) -> Self {
        CliError(e.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// `Err(CliError)` with a formatted message.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::CliError(format!($($arg)*)))
    };
}

/// `message` on one line: multi-line engine errors (shader logs, template errors) joined.
/// `text` with control characters (terminal escapes, newlines) escaped, for printing names
/// that come from elsewhere (a repository's file list, the cache's folders).
pub fn shown(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Devices => devices::devices(),
        Command::Ppl(args) => ppl::ppl(args),
        Command::Quantize(args) => quantize::quantize(args),
        Command::Bench(args) => bench::bench(args),
        Command::Synth(args) => synth::synth(args),
        Command::Split(args) => synth::split(args),
        Command::Serve(args) => serve::serve(args),
        Command::Pull(args) => pull::pull(args),
        Command::List => cache::print_list(),
        Command::Rm(args) => cache::remove(&args.name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e.0));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let cli = Cli::try_parse_from(["glim", "run", "-p", "hi"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.max_tokens, 256);
        assert_eq!(args.ctx, 2048);
        assert_eq!(args.load.quant, None);
        assert_eq!(args.temperature, SamplingParams::default().temperature);
        assert!(args.model.is_none());
    }

    #[test]
    fn raw_conflicts_with_system() {
        assert!(
            Cli::try_parse_from(["glim", "run", "-p", "hi", "--raw", "--system", "x"]).is_err()
        );
        assert!(Cli::try_parse_from(["glim", "run", "--raw"]).is_err());
    }

    #[test]
    fn stop_repeats_and_quant_aliases() {
        let cli = Cli::try_parse_from([
            "glim", "run", "m.gguf", "--stop", "a", "--stop", "b", "--quant", "q3f16_1",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.stop, ["a", "b"]);
        assert_eq!(args.load.quant, Some(Quant::Q3f16));
        assert_eq!(args.model, Some(PathBuf::from("m.gguf")));
    }

    #[test]
    fn errors_print_on_one_line() {
        assert_eq!(
            one_line("shader failed:\n  line 3\n\n  bad"),
            "shader failed: line 3 bad"
        );
    }
}
