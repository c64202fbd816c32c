//! `glim run`: load a model, then answer one prompt (`-p`) or chat.

use std::io::{self, Write};

use glim::generate::{GenerationParams, GenerationStats, SamplingParams, Session};
use glim::grammar::Grammar;
use glim::model::graph::LoadOptions;
use glim::text::{ChatTemplate, Message};

use crate::{bail, chat, model, CliError, CliResult, RunArgs};

pub fn run(args: RunArgs) -> CliResult<()> {
    let params = generation_params(&args)?;
    if args.max_tokens >= args.ctx {
        bail!(
            "-n {} leaves no room for a prompt in a context of {} tokens: lower -n or raise --ctx",
            args.max_tokens,
            args.ctx
        );
    }
    let path = model::resolve(args.model.clone())?;
    let options = LoadOptions {
        format: args.load.quant.map(Into::into),
        context: args.ctx,
        ..LoadOptions::default()
    };
    let loaded = model::load(&path, &options)?;
    let context = loaded.model.context;
    if params.max_tokens >= context {
        bail!(
            "-n {} leaves no room for a prompt in a context of {context} tokens: lower -n or raise --ctx{}",
            params.max_tokens,
            if context < args.ctx { format!(" (this model's context is at most {context})") } else { String::new() }
        );
    }
    let mut session = Session::new(loaded.model, loaded.tokenizer);
    match &args.prompt {
        Some(prompt) => answer_once(&mut session, &loaded.template, &args, prompt, &params),
        None => chat::chat(
            session,
            loaded.template,
            args.system.clone(),
            params,
            &loaded.name,
        ),
    }
}

/// Sampling and stopping settings from the command line, checked.
fn generation_params(args: &RunArgs) -> CliResult<GenerationParams> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        bail!("--temperature must be 0 or more, got {}", args.temperature);
    }
    if !(0.0..=1.0).contains(&args.top_p) {
        bail!("--top-p must be between 0 and 1, got {}", args.top_p);
    }
    if !(0.0..=1.0).contains(&args.min_p) {
        bail!("--min-p must be between 0 and 1, got {}", args.min_p);
    }
    if !(args.repeat_penalty.is_finite() && args.repeat_penalty > 0.0) {
        bail!(
            "--repeat-penalty must be more than 0, got {}",
            args.repeat_penalty
        );
    }
    if args.max_tokens == 0 {
        bail!("-n must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        // Greedy decoding draws nothing; sampling gets a fresh stream each run.
        if args.temperature == 0.0 {
            0
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        }
    });
    Ok(GenerationParams {
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repeat_penalty,
            seed,
            ..SamplingParams::default()
        },
        max_tokens: args.max_tokens,
        stop_strings: args.stop.clone(),
        ignore_eos: false,
        grammar: grammar(args)?,
        grammar_after: None,
    })
}

/// Grammar files are small; a larger one is a mistake, not a grammar.
const MAX_GRAMMAR_BYTES: u64 = 1 << 20;

/// The grammar `--json-schema` or `--grammar` names, read and parsed (compiled against
/// the model's vocabulary once it is loaded).
fn grammar(args: &RunArgs) -> CliResult<Option<Grammar>> {
    if let Some(path) = &args.json_schema {
        return Ok(Some(json_schema_file(path)?));
    }
    if let Some(path) = &args.grammar {
        return Ok(Some(Grammar::Lark(read_grammar_file("--grammar", path)?)));
    }
    Ok(None)
}

/// The text of a grammar or schema file given with `flag`: a regular file, and small.
fn read_grammar_file(flag: &str, path: &std::path::Path) -> CliResult<String> {
    let meta =
        std::fs::metadata(path).map_err(|e| CliError(format!("{flag} {}: {e}", path.display())))?;
    if !meta.is_file() || meta.len() > MAX_GRAMMAR_BYTES {
        bail!(
            "{flag} {}: not a regular file of at most {MAX_GRAMMAR_BYTES} bytes",
            path.display()
        );
    }
    std::fs::read_to_string(path).map_err(|e| CliError(format!("{flag} {}: {e}", path.display())))
}

/// The JSON Schema in the file `--json-schema` names.
pub fn json_schema_file(path: &std::path::Path) -> CliResult<Grammar> {
    let text = read_grammar_file("--json-schema", path)?;
    let schema: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError(format!("--json-schema {}: not JSON: {e}", path.display())))?;
    Ok(Grammar::JsonSchema(schema))
}

/// Renders `prompt` (through the chat template unless `--raw`), streams the answer to
/// stdout and prints the speeds to stderr.
fn answer_once(
    session: &mut Session,
    template: &ChatTemplate,
    args: &RunArgs,
    prompt: &str,
    params: &GenerationParams,
) -> CliResult<()> {
    let text = if args.raw {
        prompt.to_string()
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::system(system.as_str()));
        }
        messages.push(Message::user(prompt));
        template.render(&messages, true)?
    };
    let ids = session.tokenizer.encode_prompt(&text)?;
    let mut out = Streamer::new();
    let (_, stats) = session.generate_blocking(&ids, params, &mut |piece| out.push(piece))?;
    out.finish()?;
    eprintln!("{}", stats_line(&stats));
    Ok(())
}

/// The speeds of one generation, for stderr.
pub fn stats_line(stats: &GenerationStats) -> String {
    let new = stats.prompt_tokens - stats.reused_tokens;
    let prompt = if stats.reused_tokens > 0 {
        format!("{} tokens ({new} new)", stats.prompt_tokens)
    } else {
        format!("{} tokens", stats.prompt_tokens)
    };
    let generated = stats.generated_tokens;
    format!(
        "prompt: {prompt}, {:.1} tok/s | generated: {generated} token{}, {:.1} tok/s",
        stats.prefill_tokens_per_second(),
        if generated == 1 { "" } else { "s" },
        stats.decode_tokens_per_second(),
    )
}

/// Streams generated text to stdout, flushing each piece; remembers a write error (a closed
/// pipe) so generation stops and the error is reported once.
pub struct Streamer {
    out: io::Stdout,
    error: Option<io::Error>,
    at_line_start: bool,
}

impl Streamer {
    pub fn new() -> Self {
        Self {
            out: io::stdout(),
            error: None,
            at_line_start: true,
        }
    }

    /// Writes `text`; `false` (stop generating) once stdout fails.
    pub fn push(&mut self, text: &str) -> bool {
        if self.error.is_some() {
            return false;
        }
        match self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
        {
            Ok(()) => {
                if !text.is_empty() {
                    self.at_line_start = text.ends_with('\n');
                }
                true
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// Ends the answer's line; the write error, if one happened.
    pub fn finish(&mut self) -> CliResult<()> {
        if !self.at_line_start {
            self.push("\n");
        }
        self.at_line_start = true;
        match self.error.take() {
            Some(e) => Err(CliError(format!("writing to stdout: {e}"))),
            None => Ok(()),
        }
    }
}

impl Default for Streamer {
    fn default() -> Self {
        Self::new()
    }
}
