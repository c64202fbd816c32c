//! `glim ppl`: perplexity of a model on a text, chunked like llama.cpp's `llama-perplexity`
//! so the numbers compare.

use std::io::{self, Write};
use std::time::Instant;

use glim::generate::perplexity::perplexity;
use glim::model::graph::LoadOptions;

use crate::{bail, model, CliError, CliResult, PplArgs};

pub fn ppl(args: PplArgs) -> CliResult<()> {
    if args.ctx < 4 {
        bail!("--ctx must be at least 4 tokens, got {}", args.ctx);
    }
    let path = model::resolve(Some(args.model))?;
    let bytes = std::fs::read(&args.text)
        .map_err(|e| CliError(format!("cannot read {}: {e}", args.text.display())))?;
    let Ok(text) = String::from_utf8(bytes) else {
        bail!("{} is not UTF-8 text", args.text.display());
    };
    let options = LoadOptions {
        format: args.load.quant.map(Into::into),
        context: args.ctx,
        ..LoadOptions::default()
    };
    let mut loaded = model::load(&path, &options)?;
    let tokenizer = &loaded.tokenizer;
    let tokens = tokenizer.encode_prompt(&text)?;
    let bos = tokenizer.bos_id().filter(|_| tokenizer.add_bos());
    eprintln!(
        "{}: {} tokens, {} chunks of {}, scoring the second half of each",
        args.text.display(),
        tokens.len(),
        tokens.len() / args.ctx,
        args.ctx
    );

    let started = Instant::now();
    let mut out = io::stdout();
    let mut progress_shown = false;
    let report = pollster::block_on(perplexity(
        &mut loaded.model,
        &tokens,
        args.ctx,
        bos,
        &mut |done, _, ppl| {
            // Progress only: a closed stdout shows up at the final lines.
            let _ = write!(out, "[{done}]{ppl:.4},");
            let _ = out.flush();
            progress_shown = true;
        },
    ));
    if progress_shown {
        // End the progress line (also when a later chunk failed).
        let _ = writeln!(out);
    }
    let report = report?;
    let seconds = started.elapsed().as_secs_f64();
    let evaluated = report.chunks * args.ctx;
    let write = |out: &mut io::Stdout| -> io::Result<()> {
        writeln!(out, "Final estimate: PPL = {:.4}", report.perplexity)?;
        writeln!(
            out,
            "scored {} tokens in {} chunks of {} (mean NLL {:.4}); top-1 hits: {} ({:.2}%)",
            report.scored_tokens,
            report.chunks,
            args.ctx,
            report.mean_nll,
            report.top1_hits,
            100.0 * report.top1_hits as f64 / report.scored_tokens.max(1) as f64
        )?;
        out.flush()
    };
    write(&mut out).map_err(|e| CliError(format!("writing to stdout: {e}")))?;
    eprintln!(
        "{evaluated} tokens evaluated in {seconds:.1} s, {:.1} tok/s",
        evaluated as f64 / seconds.max(1e-9)
    );
    Ok(())
}
