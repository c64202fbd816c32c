//! The generation loop: prefill the prompt, then sample, stream and stop.
//!
//! A [`Session`] owns a model and remembers which tokens its KV cache holds, so a chat turn
//! only prefills what is new since the last turn (the rendered conversation so far is a
//! prefix of the next one).

pub mod conversation;
pub mod perplexity;
pub mod sampler;

pub use conversation::Conversation;
pub use sampler::{Sampler, SamplingParams};

use web_time::Instant;

use crate::error::{Error, Result};
use crate::kernels::sample::SampleSettings;
use crate::model::llama::{Llama, Logits};
use crate::text::Tokenizer;

/// What to generate and when to stop.
#[derive(Clone, Debug)]
pub struct GenerationParams {
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Generation stops before any of these strings; it is not part of the output.
    pub stop_strings: Vec<String>,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop_strings: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-sequence token.
    EndOfSequence,
    /// A stop string appeared.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The callback asked to stop.
    Cancelled,
}

/// Figures for one generation.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused from the previous call.
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub stop_reason: StopReason,
}

impl GenerationStats {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        (self.prompt_tokens - self.reused_tokens) as f64 / self.prefill_seconds.max(1e-9)
    }

    /// Decode speed over the tokens after the first (the first comes from the prefill).
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// A model, its tokenizer and the tokens its KV cache currently holds.
pub struct Session {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    cached: Vec<u32>,
}

/// Holds back text that might be the start of a stop string, so a stop string is never
/// streamed out before it is recognised.
struct StopFilter<'a> {
    stops: &'a [String],
    pending: String,
}

impl StopFilter<'_> {
    /// Adds `text`; returns what is safe to emit, and whether a stop string was completed.
    fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest tail that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&n| s.is_char_boundary(n))
                    .map(move |n| &s[..n])
            })
            .filter(|prefix| self.pending.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }
}

impl Session {
    pub fn new(model: Llama, tokenizer: Tokenizer) -> Self {
        Self {
            model,
            tokenizer,
            cached: Vec::new(),
        }
    }

    /// Forgets the KV cache contents (the next call prefills from scratch).
    pub fn reset(&mut self) {
        self.cached.clear();
    }

    /// Generates a continuation of `prompt` (token ids, special tokens included), calling
    /// `on_text` with each piece of new text; `on_text` returns `false` to stop early.
    /// Returns the whole generated text.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, GenerationStats)> {
        let context = self.model.context;
        if prompt.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        if params.max_tokens == 0 {
            return Err(Error::Invalid("asked for 0 new tokens".into()));
        }
        // The last generated token is never fed back, so it needs no KV slot.
        if prompt.len() + params.max_tokens > context + 1 {
            return Err(Error::Invalid(format!(
                "the prompt ({} tokens) plus up to {} new tokens exceed the context of {context} tokens; \
                 shorten the prompt, lower the token limit or raise the context",
                prompt.len(),
                params.max_tokens
            )));
        }
        // Reuse the cached prefix, but always run at least the last prompt token.
        let reused = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.cached.truncate(reused);
        let mut sampler = Sampler::new(params.sampling.clone());
        let mut history = prompt.to_vec();

        let started = Instant::now();
        let mut next = self
            .next_token(&prompt[reused..], reused, &mut sampler, &history)
            .await?;
        self.cached.extend_from_slice(&prompt[reused..]);
        let prefill_seconds = started.elapsed().as_secs_f64();

        let decode_started = Instant::now();
        let mut decoder = self.tokenizer.continuation_decoder();
        let mut filter = StopFilter {
            stops: &params.stop_strings,
            pending: String::new(),
        };
        let mut text = String::new();
        let mut generated = 0;
        let stop_reason = loop {
            if !params.ignore_eos && self.tokenizer.is_eos(next) {
                break StopReason::EndOfSequence;
            }
            generated += 1;
            history.push(next);
            let (piece, stopped) = filter.push(&decoder.push(next)?);
            text.push_str(&piece);
            if !piece.is_empty() && !on_text(&piece) {
                break StopReason::Cancelled;
            }
            if stopped {
                break StopReason::StopString;
            }
            if generated >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            let pos = self.cached.len();
            next = self
                .next_token(&[next], pos, &mut sampler, &history)
                .await?;
            self.cached.push(history[history.len() - 1]);
        };
        if matches!(
            stop_reason,
            StopReason::EndOfSequence | StopReason::MaxTokens
        ) {
            let (tail, _) = filter.push(&decoder.finish());
            let tail = tail + &filter.pending;
            if !tail.is_empty() {
                text.push_str(&tail);
                on_text(&tail);
            }
        }
        let stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: generated,
            prefill_seconds,
            decode_seconds: decode_started.elapsed().as_secs_f64(),
            stop_reason,
        };
        Ok((text, stats))
    }

    /// Runs `tokens` at `pos` and picks the token that follows them: on the GPU (argmax, or
    /// a draw with top-k, top-p, min-p and temperature) so only its id comes back, or from
    /// the logits row on the host when a penalty needs the tokens seen so far.
    async fn next_token(
        &mut self,
        tokens: &[u32],
        pos: usize,
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<u32> {
        let p = &sampler.params;
        if p.is_plain_greedy() {
            return Ok(self.model.forward(tokens, pos, Logits::Last).await?[0]);
        }
        if !p.has_penalties() {
            // Each position draws fresh randomness from the seed.
            let settings = SampleSettings::new(
                p.temperature,
                p.top_k,
                p.top_p,
                p.min_p,
                p.seed,
                history.len() as u32,
            );
            return self.model.forward_sampled(tokens, pos, &settings).await;
        }
        let mut logits = self.model.forward_logits(tokens, pos, Logits::Last).await?;
        let n = self.model.output_vocab();
        Ok(sampler.sample(&mut logits[..n], history))
    }

    /// Blocking [`Session::generate`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate_blocking(
        &mut self,
        prompt: &[u32],
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, GenerationStats)> {
        pollster::block_on(self.generate(prompt, params, on_text))
    }
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let stops = vec!["<end>".to_string()];
        let mut f = StopFilter {
            stops: &stops,
            pending: String::new(),
        };
        assert_eq!(f.push("Hello <"), ("Hello ".into(), false));
        assert_eq!(f.push("en"), ("".into(), false));
        assert_eq!(f.push("d> more"), ("".into(), true));
        let mut f = StopFilter {
            stops: &stops,
            pending: String::new(),
        };
        assert_eq!(f.push("a <b"), ("a <b".into(), false));
    }
}
