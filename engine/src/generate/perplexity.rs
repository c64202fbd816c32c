//! Perplexity over a token stream, chunked exactly like llama.cpp's `llama-perplexity`, so
//! the two can be compared on the same text: the text is cut into chunks of `ctx` tokens,
//! each evaluated from an empty cache (its first token replaced by BOS when the model adds
//! one), and only the second half of each chunk is scored, so every scored token sees at
//! least `ctx / 2` tokens of context.

use crate::error::{Error, Result};
use crate::kernels::argmax::argmax_row;
use crate::model::graph::{Logits, Model};

/// The result of [`perplexity`].
#[derive(Clone, Debug)]
pub struct PerplexityReport {
    pub perplexity: f64,
    /// Mean negative log-likelihood per scored token (nats).
    pub mean_nll: f64,
    pub scored_tokens: usize,
    pub chunks: usize,
    /// Scored positions where the model's top-1 guess was the actual next token.
    pub top1_hits: usize,
}

/// `-log softmax(logits)[target]`, computed stably in f64.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    (max + sum.ln()) - logits[target as usize] as f64
}

/// Scores `tokens` in chunks of `ctx`; `on_chunk(done, total, running_ppl)` reports progress.
pub async fn perplexity(
    model: &mut Model,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    on_chunk: &mut dyn FnMut(usize, usize, f64),
) -> Result<PerplexityReport> {
    if ctx < 4 {
        return Err(Error::Invalid(format!(
            "perplexity needs a context of at least 4 tokens, got {ctx}"
        )));
    }
    if ctx > model.context {
        return Err(Error::Invalid(format!(
            "perplexity context {ctx} exceeds the model's loaded context of {}",
            model.context
        )));
    }
    let chunks = tokens.len() / ctx;
    // llama-perplexity's own minimum: two chunks.
    if chunks < 2 {
        return Err(Error::Invalid(format!(
            "the text has {} tokens, fewer than two chunks of {ctx} (as llama-perplexity asks); use a longer text or a smaller --ctx",
            tokens.len()
        )));
    }
    let vocab = model.config.vocab_size;
    let first = ctx / 2;
    let (mut total_nll, mut scored, mut hits) = (0.0, 0, 0);
    for c in 0..chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(bos) = bos {
            chunk[0] = bos;
        }
        let logits = model.forward_logits(&chunk, 0, Logits::All).await?;
        for j in first..ctx - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let target = tokens[c * ctx + j + 1];
            total_nll += nll(row, target);
            hits += usize::from(argmax_row(row) == target);
            scored += 1;
        }
        on_chunk(c + 1, chunks, (total_nll / scored as f64).exp());
    }
    let mean_nll = total_nll / scored as f64;
    Ok(PerplexityReport {
        perplexity: mean_nll.exp(),
        mean_nll,
        scored_tokens: scored,
        chunks,
        top1_hits: hits,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let v = super::nll(&[0.5; 8], 3);
        assert!((v - 8f64.ln()).abs() < 1e-12);
    }
}
