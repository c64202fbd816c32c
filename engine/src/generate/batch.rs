//! [`Batcher`]: several generations at once on one model, continuously batched.
//!
//! Each request gets one of the model's KV-cache slots. A [`Batcher::step`] runs one chunk
//! of one waiting prompt (a prefill pass of at most the model's `max_batch` tokens, so a
//! long prompt never stalls the others for more than a chunk), then one decode pass for
//! every sequence that has a token to feed: one pass over the weights serves them all.
//! Requests join between steps and leave as soon as they end or their listener is gone.
//!
//! A sequence gets the very tokens it would get alone through [`Session`]: prompts are
//! prefilled in the same chunks, and a token's arithmetic does not depend on the batch it
//! is in (see [`Model::decode_batch`]).
//!
//! [`Session`]: super::Session

use web_time::Instant;

use super::{
    check_request, reusable_prefix, Continuation, GenerationParams, GenerationStats, StopReason,
};
use crate::error::{Error, Result};
use crate::model::graph::{BatchToken, Model};
use crate::text::Tokenizer;

/// What a request hears while it is generated.
#[derive(Clone, Debug)]
pub enum Event {
    /// New text of the answer.
    Text(String),
    /// The answer ended: all of its text, and its figures.
    Done {
        text: String,
        stats: GenerationStats,
    },
    /// Generation failed (the GPU failed; every running request hears it).
    Failed(String),
}

/// Where a request's [`Event`]s go.
pub trait Listener: Send {
    /// Takes an event; `false` when nobody listens any more (the request is then dropped
    /// and its slot freed).
    fn event(&mut self, event: Event) -> bool;

    /// Whether nobody listens any more, asked before each step, so a request whose client
    /// left stops even while it prefills.
    fn gone(&self) -> bool {
        false
    }
}

/// A request in a slot.
struct Job {
    prompt: Vec<u32>,
    /// Prompt tokens in the slot's cache so far.
    prefilled: usize,
    reused: usize,
    sequence: Continuation,
    /// The token to feed next, once the prompt is in.
    next: Option<u32>,
    listener: Box<dyn Listener>,
    started: Instant,
    prefill_seconds: f64,
    decode_started: Instant,
}

#[derive(Default)]
struct Slot {
    /// The tokens the slot's cache holds (a finished request's stay, for a next request
    /// with the same beginning).
    cached: Vec<u32>,
    job: Option<Job>,
}

/// A model generating for several requests at once.
pub struct Batcher {
    pub model: Model,
    pub tokenizer: Tokenizer,
    slots: Vec<Slot>,
}

impl Batcher {
    /// A batcher over every slot of `model` (see `LoadOptions::slots`).
    pub fn new(model: Model, tokenizer: Tokenizer) -> Self {
        let slots = (0..model.slots).map(|_| Slot::default()).collect();
        Self {
            model,
            tokenizer,
            slots,
        }
    }

    /// Requests being generated.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.job.is_some()).count()
    }

    /// Whether a request can start now.
    pub fn has_free_slot(&self) -> bool {
        self.active() < self.slots.len()
    }

    /// Checks a request before it is queued: the errors [`Batcher::start`] would give (a
    /// grammar that does not compile among them).
    pub fn check(&self, prompt: &[u32], params: &GenerationParams) -> Result<()> {
        check_request(prompt, params, self.model.context)?;
        Continuation::new(&self.tokenizer, prompt, params).map(drop)
    }

    /// Starts generating a continuation of `prompt` (token ids, special tokens included)
    /// in a free slot: the one whose cache shares the longest beginning with it. Fails
    /// when the request is invalid or every slot is busy.
    pub fn start(
        &mut self,
        prompt: Vec<u32>,
        params: &GenerationParams,
        listener: Box<dyn Listener>,
    ) -> Result<()> {
        check_request(&prompt, params, self.model.context)?;
        let sequence = Continuation::new(&self.tokenizer, &prompt, params)?;
        let max_rewind = self.model.max_rewind();
        let (index, reused) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.job.is_none())
            .map(|(i, s)| (i, reusable_prefix(&s.cached, &prompt, max_rewind)))
            .max_by_key(|&(i, reused)| (reused, std::cmp::Reverse(i)))
            .ok_or_else(|| Error::Invalid("every slot is busy".into()))?;
        let slot = &mut self.slots[index];
        slot.cached.truncate(reused);
        let now = Instant::now();
        slot.job = Some(Job {
            sequence,
            prompt,
            prefilled: reused,
            reused,
            next: None,
            listener,
            started: now,
            prefill_seconds: 0.0,
            decode_started: now,
        });
        Ok(())
    }

    /// Runs one step: a chunk of one waiting prompt, then a token for every sequence past
    /// its prompt. Returns whether there was anything to do. A GPU error fails every
    /// request (each hears [`Event::Failed`]) and is returned.
    pub async fn step(&mut self) -> Result<bool> {
        for slot in &mut self.slots {
            if slot.job.as_ref().is_some_and(|j| j.listener.gone()) {
                slot.job = None;
            }
        }
        if self.active() == 0 {
            return Ok(false);
        }
        let result = async {
            self.prefill_chunk().await?;
            self.decode().await
        }
        .await;
        if let Err(e) = &result {
            self.fail_all(&e.to_string());
        }
        result.map(|()| true)
    }

    /// Ends every running request with `message` and forgets what the caches hold (after a
    /// step failed, or panicked, it is unknown).
    pub fn fail_all(&mut self, message: &str) {
        for slot in &mut self.slots {
            if let Some(mut job) = slot.job.take() {
                job.listener.event(Event::Failed(message.to_string()));
            }
            slot.cached.clear();
        }
    }

    /// One prefill pass for the first slot whose prompt is not in yet. The chunks are the
    /// ones a lone prefill runs, so the numbers come out the same.
    async fn prefill_chunk(&mut self) -> Result<()> {
        let Some(index) = self
            .slots
            .iter()
            .position(|s| s.job.as_ref().is_some_and(|j| j.next.is_none()))
        else {
            return Ok(());
        };
        let chunk = self.model.max_batch();
        let slot = &mut self.slots[index];
        let job = slot.job.as_mut().expect("found above");
        let start = job.prefilled;
        let end = (start + chunk).min(job.prompt.len());
        let tokens = &job.prompt[start..end];
        if end < job.prompt.len() {
            self.model.fill(index, tokens, start).await?;
        } else {
            if let Err(e) = job.sequence.prepare(self.model.mask_words()) {
                self.fail(index, e);
                return Ok(());
            }
            let output = self
                .model
                .prefill_masked(
                    index,
                    tokens,
                    start,
                    job.sequence.next_token(),
                    job.sequence.mask(),
                )
                .await?;
            job.next = Some(job.sequence.pick(output));
            job.prefill_seconds = job.started.elapsed().as_secs_f64();
            job.decode_started = Instant::now();
        }
        slot.cached.extend_from_slice(tokens);
        job.prefilled = end;
        if job.next.is_some() {
            self.take_token(index)?;
        }
        Ok(())
    }

    /// One decode pass for every sequence with a token to feed.
    async fn decode(&mut self) -> Result<()> {
        let words = self.model.mask_words();
        let mut failed = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(job) = slot.job.as_mut().filter(|j| j.next.is_some()) {
                if let Err(e) = job.sequence.prepare(words) {
                    failed.push((i, e));
                }
            }
        }
        for (i, e) in failed {
            self.fail(i, e);
        }
        let batch: Vec<BatchToken> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let job = s.job.as_ref()?;
                Some(BatchToken {
                    slot: i,
                    token: job.next?,
                    position: s.cached.len(),
                    next: job.sequence.next_token(),
                    mask: job.sequence.mask(),
                })
            })
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let outputs = self.model.decode_batch(&batch).await?;
        let fed: Vec<(usize, u32)> = batch.iter().map(|t| (t.slot, t.token)).collect();
        for ((index, token), output) in fed.into_iter().zip(outputs) {
            let slot = &mut self.slots[index];
            let job = slot.job.as_mut().expect("in the batch");
            slot.cached.push(token);
            job.next = Some(job.sequence.pick(output));
            self.take_token(index)?;
        }
        Ok(())
    }

    /// Ends slot `index`'s request with `e`, leaving the others running (its grammar
    /// failed, or its text could not be decoded).
    fn fail(&mut self, index: usize, e: Error) {
        if let Some(mut job) = self.slots[index].job.take() {
            job.listener.event(Event::Failed(e.to_string()));
        }
    }

    /// Hands slot `index`'s new token to its sequence and its listener; ends the request
    /// when it stops or nobody listens. A token that ends the answer never reaches the
    /// cache (the next step would feed it).
    fn take_token(&mut self, index: usize) -> Result<()> {
        let slot = &mut self.slots[index];
        let job = slot.job.as_mut().expect("a running slot");
        let token = job.next.expect("a picked token");
        let (piece, stop) = match job.sequence.accept(&self.tokenizer, token) {
            Ok(taken) => taken,
            Err(e) => {
                self.fail(index, e);
                return Ok(());
            }
        };
        let mut end = stop;
        if !piece.is_empty() && !job.listener.event(Event::Text(piece)) {
            end = Some(StopReason::Cancelled);
        }
        let Some(stop) = end else {
            return Ok(());
        };
        let mut job = slot.job.take().expect("a running slot");
        let tail = job.sequence.finish(stop);
        if !tail.is_empty() {
            job.listener.event(Event::Text(tail));
        }
        let stats = GenerationStats {
            prompt_tokens: job.prompt.len(),
            reused_tokens: job.reused,
            generated_tokens: job.sequence.generated,
            prefill_seconds: job.prefill_seconds,
            decode_seconds: job.decode_started.elapsed().as_secs_f64(),
            stop_reason: stop,
        };
        let text = std::mem::take(&mut job.sequence.text);
        job.listener.event(Event::Done { text, stats });
        Ok(())
    }

    /// Steps until no request is left (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_to_completion(&mut self) -> Result<()> {
        while pollster::block_on(self.step())? {}
        Ok(())
    }
}
