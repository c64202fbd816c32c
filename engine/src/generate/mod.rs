//! The generation loop: prefill the prompt, then sample, stream and stop.
//!
//! A [`Session`] owns a model and remembers which tokens its KV cache holds, so a chat turn
//! only prefills what is new since the last turn (the rendered conversation so far is a
//! prefix of the next one).

pub mod batch;
pub mod conversation;
pub mod perplexity;
pub mod sampler;

pub use batch::{Batcher, Event, Listener};
pub use conversation::Conversation;
pub use sampler::{Sampler, SamplingParams};

use web_time::Instant;

use crate::error::{Error, Result};
use crate::grammar::{Constraint, Grammar};
use crate::kernels::sample::SampleSettings;
use crate::model::graph::{BatchOutput, BatchToken, Model, NextToken};
use crate::text::{StreamDecoder, Tokenizer};

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
    /// What the answer must match (constrained decoding); it ends once the grammar is
    /// complete.
    pub grammar: Option<Grammar>,
    /// A grammar that holds the answer from the first time its trigger text appears on
    /// (a function call's body once the model opens one); free text before.
    pub grammar_after: Option<(String, Grammar)>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_tokens: 256,
            stop_strings: Vec::new(),
            ignore_eos: false,
            grammar: None,
            grammar_after: None,
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
    pub model: Model,
    pub tokenizer: Tokenizer,
    cached: Vec<u32>,
}

/// Holds back text that might be the start of a stop string, so a stop string is never
/// streamed out before it is recognised.
struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
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

/// A sequence's generated text as tokens arrive: end-of-sequence, stop strings and the
/// token limit, text pieces that never split a character or show part of a stop string,
/// and the tokens seen so far (the penalties' window). [`Session`] and [`Batcher`] both
/// generate through it, so an answer ends the same way in either.
pub(crate) struct Continuation {
    decoder: StreamDecoder,
    filter: StopFilter,
    max_tokens: usize,
    ignore_eos: bool,
    /// The prompt and the tokens generated so far.
    pub history: Vec<u32>,
    pub text: String,
    pub generated: usize,
    pub sampler: Sampler,
    /// The grammar's state, for a constrained answer.
    constraint: Option<Constraint>,
    /// [`GenerationParams::grammar_after`], compiled: its trigger and the grammar waiting
    /// for it.
    pending: Option<(String, Constraint)>,
    /// Everything decoded so far, where the trigger is looked for.
    decoded: String,
    /// The tokens the next pick may take (see [`Continuation::prepare`]).
    mask: Option<Vec<u32>>,
}

impl Continuation {
    /// A continuation of `prompt`; fails when `params.grammar` does not compile.
    pub fn new(tokenizer: &Tokenizer, prompt: &[u32], params: &GenerationParams) -> Result<Self> {
        let constraint = params
            .grammar
            .as_ref()
            .map(|g| Constraint::new(tokenizer, g))
            .transpose()?;
        let pending = match &params.grammar_after {
            Some((trigger, g)) if constraint.is_none() => {
                Some((trigger.clone(), Constraint::new(tokenizer, g)?))
            }
            _ => None,
        };
        Ok(Self {
            decoder: tokenizer.continuation_decoder(),
            filter: StopFilter {
                stops: params.stop_strings.clone(),
                pending: String::new(),
            },
            max_tokens: params.max_tokens,
            ignore_eos: params.ignore_eos,
            history: prompt.to_vec(),
            text: String::new(),
            generated: 0,
            sampler: Sampler::new(params.sampling.clone()),
            constraint,
            pending,
            decoded: String::new(),
            mask: None,
        })
    }

    /// Before a step: works out which tokens the grammar allows next, as a mask row of
    /// `words` words (nothing to do for an unconstrained answer).
    pub fn prepare(&mut self, words: usize) -> Result<()> {
        if let Some(constraint) = &mut self.constraint {
            self.mask = Some(constraint.mask(words)?);
        }
        Ok(())
    }

    /// The mask [`Continuation::prepare`] worked out, for the step.
    pub fn mask(&self) -> Option<&[u32]> {
        self.mask.as_deref()
    }

    /// Takes the next token: the new text to show, and why generation ends if it does.
    pub fn accept(
        &mut self,
        tokenizer: &Tokenizer,
        token: u32,
    ) -> Result<(String, Option<StopReason>)> {
        if !self.ignore_eos && tokenizer.is_eos(token) {
            return Ok((String::new(), Some(StopReason::EndOfSequence)));
        }
        if let Some(constraint) = &mut self.constraint {
            constraint.accept(token)?;
        }
        self.generated += 1;
        self.history.push(token);
        let decoded = self.decoder.push(token)?;
        if self.pending.is_some() {
            self.watch_for_trigger(tokenizer, &decoded);
        }
        let (piece, stopped) = self.filter.push(&decoded);
        self.text.push_str(&piece);
        let stop = if stopped {
            Some(StopReason::StopString)
        } else if self.constraint.as_ref().is_some_and(Constraint::is_done) {
            // The grammar is complete: nothing but the end may follow.
            Some(StopReason::EndOfSequence)
        } else if self.generated >= self.max_tokens {
            Some(StopReason::MaxTokens)
        } else {
            None
        };
        Ok((piece, stop))
    }

    /// Switches the pending grammar on once its trigger shows in the decoded text; text
    /// the same token carried past the trigger goes to the grammar first (if it does not
    /// fit, the answer stays free).
    fn watch_for_trigger(&mut self, tokenizer: &Tokenizer, piece: &str) {
        let Some((trigger, _)) = &self.pending else {
            return;
        };
        // Where the trigger could start, at a character boundary.
        let mut from = self.decoded.len().saturating_sub(trigger.len());
        while !self.decoded.is_char_boundary(from) {
            from -= 1;
        }
        self.decoded.push_str(piece);
        let Some(at) = self.decoded[from..].find(trigger.as_str()) else {
            return;
        };
        let after = self.decoded[from + at + trigger.len()..].to_string();
        let (_, mut constraint) = self.pending.take().expect("checked above");
        let fits = after.is_empty()
            || tokenizer
                .encode(&after, false)
                .is_ok_and(|ids| constraint.accept_all(&ids));
        if fits {
            self.constraint = Some(constraint);
        }
    }

    /// The text held back until the end (a partial character or a partial stop string that
    /// never completed), for answers that ended by themselves or at the token limit.
    pub fn finish(&mut self, stop: StopReason) -> String {
        if !matches!(stop, StopReason::EndOfSequence | StopReason::MaxTokens) {
            return String::new();
        }
        let (tail, _) = self.filter.push(&self.decoder.finish());
        let tail = tail + &std::mem::take(&mut self.filter.pending);
        self.text.push_str(&tail);
        tail
    }

    /// How the token after the history is picked: on the GPU (argmax, or a draw with
    /// top-k, top-p, min-p and temperature) so only its id comes back, or from the logits
    /// row on the host when a penalty needs the tokens seen so far.
    pub fn next_token(&self) -> NextToken {
        let p = &self.sampler.params;
        if p.is_plain_greedy() {
            NextToken::Greedy
        } else if !p.has_penalties() {
            // Each position draws fresh randomness from the seed.
            NextToken::Sample(SampleSettings::new(
                p.temperature,
                p.top_k,
                p.top_p,
                p.min_p,
                p.seed,
                self.history.len() as u32,
            ))
        } else {
            NextToken::Logits
        }
    }

    /// The picked token from what the model gave for [`Continuation::next_token`].
    pub fn pick(&mut self, output: BatchOutput) -> u32 {
        match output {
            BatchOutput::Token(t) => t,
            // A constrained step's row comes back masked already (the GPU masks the
            // logits before they are read).
            BatchOutput::Logits(mut row) => self.sampler.sample(&mut row, &self.history),
        }
    }
}

/// Checks a prompt and its token limit against the context.
pub(crate) fn check_request(
    prompt: &[u32],
    params: &GenerationParams,
    context: usize,
) -> Result<()> {
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
    Ok(())
}

/// How many leading tokens of `prompt` a cache holding `cached` can keep: the common
/// prefix, but never the whole prompt (its last token must run to give the next one), and
/// none when resuming there would go back more than `max_rewind` tokens (a sliding-window
/// layer's cache has overwritten the keys an earlier position sees: see
/// [`Model::max_rewind`]).
pub(crate) fn reusable_prefix(cached: &[u32], prompt: &[u32], max_rewind: usize) -> usize {
    let common = cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt.len().saturating_sub(1));
    if cached.len() - common > max_rewind {
        0
    } else {
        common
    }
}

impl Session {
    pub fn new(model: Model, tokenizer: Tokenizer) -> Self {
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
        check_request(prompt, params, self.model.context)?;
        // Reuse the cached prefix, but always run at least the last prompt token.
        let reused = reusable_prefix(&self.cached, prompt, self.model.max_rewind());
        self.cached.truncate(reused);
        let mut sequence = Continuation::new(&self.tokenizer, prompt, params)?;
        let words = self.model.mask_words();

        let started = Instant::now();
        sequence.prepare(words)?;
        let first = self
            .model
            .prefill_masked(
                0,
                &prompt[reused..],
                reused,
                sequence.next_token(),
                sequence.mask(),
            )
            .await?;
        let mut next = sequence.pick(first);
        self.cached.extend_from_slice(&prompt[reused..]);
        let prefill_seconds = started.elapsed().as_secs_f64();

        let decode_started = Instant::now();
        let stop_reason = loop {
            let (piece, stop) = sequence.accept(&self.tokenizer, next)?;
            if !piece.is_empty() && !on_text(&piece) {
                break StopReason::Cancelled;
            }
            if let Some(stop) = stop {
                break stop;
            }
            sequence.prepare(words)?;
            let step = BatchToken {
                slot: 0,
                token: next,
                position: self.cached.len(),
                next: sequence.next_token(),
                mask: sequence.mask(),
            };
            let output = self.model.decode_batch(&[step]).await?.remove(0);
            self.cached.push(next);
            next = sequence.pick(output);
        };
        let tail = sequence.finish(stop_reason);
        if !tail.is_empty() {
            on_text(&tail);
        }
        let stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: sequence.generated,
            prefill_seconds,
            decode_seconds: decode_started.elapsed().as_secs_f64(),
            stop_reason,
        };
        Ok((sequence.text, stats))
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
    use super::{reusable_prefix, StopFilter};

    #[test]
    fn a_cached_prefix_is_reused_only_as_far_back_as_the_cache_holds() {
        let cached = [1, 2, 3, 4, 5, 6, 7, 8];
        // The common prefix, never the whole prompt.
        assert_eq!(reusable_prefix(&cached, &[1, 2, 3, 9], usize::MAX), 3);
        assert_eq!(reusable_prefix(&cached, &cached[..4], usize::MAX), 3);
        // Resuming at 3 goes back 5 tokens: too far for a ring that keeps 4 past its window.
        assert_eq!(reusable_prefix(&cached, &[1, 2, 3, 9], 4), 0);
        assert_eq!(reusable_prefix(&cached, &[1, 2, 3, 4, 9], 4), 4);
        assert_eq!(reusable_prefix(&cached, &[1, 2, 3, 4, 5, 6, 7, 8, 9], 0), 8);
    }

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let stops = vec!["<end>".to_string()];
        let mut f = StopFilter {
            stops: stops.clone(),
            pending: String::new(),
        };
        assert_eq!(f.push("Hello <"), ("Hello ".into(), false));
        assert_eq!(f.push("en"), ("".into(), false));
        assert_eq!(f.push("d> more"), ("".into(), true));
        let mut f = StopFilter {
            stops: stops.clone(),
            pending: String::new(),
        };
        assert_eq!(f.push("a <b"), ("a <b".into(), false));
    }
}
