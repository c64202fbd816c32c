//! What a caller runs on a loaded model: prompts into a slot's KV cache (`prefill`, `fill`),
//! decode steps of one sequence or several at once (`decode`, `decode_batch`), teacher-forced
//! logits (`forward_logits`), and timed passes (`profile`).

use super::graph::{Model, Pass, Pick, ONE_TOKEN};

use crate::error::{Error, Result};
use crate::gpu::tensor::floats_from_bytes;
use crate::gpu::KernelTimer;
use crate::kernels::mask;
use crate::kernels::sample::SampleSettings;
use crate::kernels::Place;

/// How each sequence of a [`Model::decode_batch`] step picks its next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NextToken {
    /// The most likely token.
    Greedy,
    /// A draw on the GPU with these settings.
    Sample(SampleSettings),
    /// None: the step hands back the row of logits (to sample with penalties on the host).
    Logits,
}

/// One sequence's token in a [`Model::decode_batch`] step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchToken<'a> {
    /// The KV-cache slot its sequence lives in.
    pub slot: usize,
    pub token: u32,
    /// Its position in the sequence (tokens already in the slot's cache).
    pub position: usize,
    pub next: NextToken,
    /// The tokens the pick may take, as a mask row of [`Model::mask_words`] words (see
    /// `kernels::mask`); `None` allows every token.
    pub mask: Option<&'a [u32]>,
}

/// What a [`Model::decode_batch`] step gives each sequence.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchOutput {
    Token(u32),
    /// The logits row (`output_vocab` values) for [`NextToken::Logits`].
    Logits(Vec<f32>),
}

/// Which logits a pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, teacher-forced checks).
    All,
}

impl Model {
    /// Runs `tokens` from `position` (a greedy decode step for one token, a prefill pass
    /// for up to `max_batch`) with every kernel timed on the GPU: each dispatch's name and
    /// seconds, in the order the pass runs them. Needs the adapter's timestamp queries.
    pub async fn profile(&mut self, tokens: &[u32], position: usize) -> Result<Vec<(String, f64)>> {
        self.check_span(tokens, position)?;
        let n = tokens.len();
        if n > self.max_batch {
            return Err(Error::Invalid(format!(
                "a profiled pass takes at most {} tokens, got {n}",
                self.max_batch
            )));
        }
        let pass = if n == 1 {
            ONE_TOKEN
        } else {
            Pass::Sequence {
                n,
                logits: Some(Logits::Last),
            }
        };
        let plan = if n == 1 {
            self.cached_plan(pass, Pick::ARGMAX)?;
            self.plans
                .remove(&(pass, Pick::ARGMAX))
                .expect("just built")
        } else {
            self.plan(pass, Pick::ARGMAX)?
        };
        let timed = async {
            let mut timer = KernelTimer::new(&self.ctx, plan.len())?;
            self.upload_inputs(tokens, position, 0);
            let mut rec = self.ctx.recorder();
            for op in &plan {
                self.record(&mut rec, op, n, Some(&mut timer))?;
            }
            rec.resolve(&timer);
            rec.submit()?;
            timer.read(&self.ctx).await
        }
        .await;
        if n == 1 {
            self.plans.insert((pass, Pick::ARGMAX), plan);
        }
        timed
    }

    fn check_span(&self, tokens: &[u32], start: usize) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::Invalid("no tokens to process".into()));
        }
        if start + tokens.len() > self.context {
            return Err(Error::Invalid(format!(
                "{} tokens at position {start} exceed the context of {} tokens",
                tokens.len(),
                self.context
            )));
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// Writes the ids and places of `tokens`, one sequence's from position `start` in
    /// `slot`.
    fn upload_inputs(&self, tokens: &[u32], start: usize, slot: usize) {
        let places: Vec<Place> = (start..start + tokens.len())
            .map(|p| Place {
                position: p as u32,
                slot: slot as u32,
            })
            .collect();
        self.write_inputs(tokens, &places);
    }

    fn write_inputs(&self, tokens: &[u32], places: &[Place]) {
        let queue = &self.ctx.queue;
        queue.write_buffer(&self.buf.ids.buffer, 0, bytemuck::cast_slice(tokens));
        queue.write_buffer(&self.buf.places.buffer, 0, bytemuck::cast_slice(places));
    }

    /// Runs `tokens` at positions `start..`, filling the KV cache, in passes of at most
    /// `max_batch` tokens. Returns the argmax token after each position (`Logits::All`) or
    /// after the last one only (`Logits::Last`). One token with `Logits::Last` is a decode
    /// step (the decode kernels); [`Model::prefill`] runs prompt tokens however few.
    pub async fn forward(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<u32>> {
        Ok(self
            .forward_inner(0, tokens, start, logits, false, Pick::ARGMAX, false)
            .await?
            .0)
    }

    /// Like [`Model::forward`], but returns the logits themselves (`vocab_size` values per
    /// returned row, row-major) for sampling and perplexity.
    pub async fn forward_logits(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        Ok(self
            .forward_inner(0, tokens, start, logits, true, Pick::ARGMAX, false)
            .await?
            .1)
    }

    /// Runs one sequence's `tokens` from position `start` of `slot` (a prompt, in passes
    /// of at most `max_batch` tokens) and picks the token after the last one as `next`
    /// says. What a slot held past `start` is overwritten.
    pub async fn prefill(
        &mut self,
        slot: usize,
        tokens: &[u32],
        start: usize,
        next: NextToken,
    ) -> Result<BatchOutput> {
        self.prefill_masked(slot, tokens, start, next, None).await
    }

    /// [`Model::prefill`], the pick taking only tokens `mask` allows (a mask row of
    /// [`Model::mask_words`] words; see `kernels::mask`).
    pub async fn prefill_masked(
        &mut self,
        slot: usize,
        tokens: &[u32],
        start: usize,
        next: NextToken,
        mask: Option<&[u32]>,
    ) -> Result<BatchOutput> {
        if let Some(row) = mask {
            self.write_masks(&[Some(row)])?;
        }
        let (pick, read_logits) = match next {
            NextToken::Greedy => (Pick::ARGMAX, false),
            NextToken::Sample(settings) => {
                self.write_sample_settings(&[settings]);
                (Pick::SAMPLE, false)
            }
            NextToken::Logits => (Pick::ARGMAX, true),
        };
        let pick = pick.masked(mask.is_some());
        let (ids, mut row) = self
            .forward_inner(slot, tokens, start, Logits::Last, read_logits, pick, true)
            .await?;
        Ok(if read_logits {
            row.truncate(self.output_vocab);
            BatchOutput::Logits(row)
        } else {
            BatchOutput::Token(ids[0])
        })
    }

    /// Runs one sequence's `tokens` from position `start` of `slot` into the KV cache only
    /// (an early part of a prompt): no output head, no readback, no wait.
    pub async fn fill(&mut self, slot: usize, tokens: &[u32], start: usize) -> Result<()> {
        self.check_span(tokens, start)?;
        self.check_resume(slot, start)?;
        self.filled[slot] = start + tokens.len();
        for (i, chunk) in tokens.chunks(self.max_batch).enumerate() {
            self.upload_inputs(chunk, start + i * self.max_batch, slot);
            let pass = Pass::Sequence {
                n: chunk.len(),
                logits: None,
            };
            let ops = self.plan(pass, Pick::ARGMAX)?;
            self.run(&ops, chunk.len(), 0).await?;
        }
        Ok(())
    }

    /// Tokens per prefill pass: longer prompts go in several.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Checks `slot` exists and its sequence can go on from `start`: a sliding-window layer
    /// keeps only the last keys of what the slot held, so a sequence cannot go back further
    /// than [`Model::max_rewind`] tokens from the end of it.
    fn check_resume(&self, slot: usize, start: usize) -> Result<()> {
        if slot >= self.slots {
            return Err(Error::Invalid(format!(
                "slot {slot} is past the model's {} slots",
                self.slots
            )));
        }
        let back = self.filled[slot].saturating_sub(start);
        if start > 0 && back > self.max_rewind() {
            return Err(Error::Invalid(format!(
                "slot {slot} cannot resume at position {start}: it holds {} positions and this model's sliding-window layers keep the keys of only the last {} past a window (start again from position 0)",
                self.filled[slot],
                self.max_rewind()
            )));
        }
        Ok(())
    }

    /// One decode step of one sequence: `token` at `position` of `slot`, the token after
    /// it picked as `next` says. It is that sequence's part of a [`Model::decode_batch`].
    pub async fn decode(
        &mut self,
        slot: usize,
        token: u32,
        position: usize,
        next: NextToken,
    ) -> Result<BatchOutput> {
        let step = BatchToken {
            slot,
            token,
            position,
            next,
            mask: None,
        };
        let mut outputs = self.decode_batch(&[step]).await?;
        Ok(outputs.remove(0))
    }

    /// One decode step for several sequences at once: each [`BatchToken`]'s token runs at
    /// its position in its slot, in one pass over the weights, and each sequence's next
    /// token is picked as it asks. Every sequence gets the bits [`Model::decode`] of its
    /// token alone would give it. Slots must differ.
    pub async fn decode_batch(&mut self, batch: &[BatchToken<'_>]) -> Result<Vec<BatchOutput>> {
        let n = batch.len();
        if n == 0 || n > self.slots {
            return Err(Error::Invalid(format!(
                "a batched step takes 1 to {} sequences (the model's slots), got {n}",
                self.slots
            )));
        }
        let mut seen = vec![false; self.slots];
        for t in batch {
            if t.slot >= self.slots || std::mem::replace(&mut seen[t.slot], true) {
                return Err(Error::Invalid(format!(
                    "slot {} is out of range or twice in one batched step",
                    t.slot
                )));
            }
            self.check_span(&[t.token], t.position)?;
            self.check_resume(t.slot, t.position)?;
        }
        for t in batch {
            self.filled[t.slot] = t.position + 1;
        }
        let tokens: Vec<u32> = batch.iter().map(|t| t.token).collect();
        let places: Vec<Place> = batch
            .iter()
            .map(|t| Place {
                position: t.position as u32,
                slot: t.slot as u32,
            })
            .collect();
        self.write_inputs(&tokens, &places);
        let sampled = batch.iter().any(|t| matches!(t.next, NextToken::Sample(_)));
        let pick = if sampled {
            let settings: Vec<SampleSettings> = batch
                .iter()
                .map(|t| match t.next {
                    NextToken::Sample(s) => s,
                    _ => SampleSettings::greedy(),
                })
                .collect();
            self.write_sample_settings(&settings);
            Pick::SAMPLE
        } else {
            Pick::ARGMAX
        };
        let masked = batch.iter().any(|t| t.mask.is_some());
        if masked {
            let rows: Vec<Option<&[u32]>> = batch.iter().map(|t| t.mask).collect();
            self.write_masks(&rows)?;
        }
        let pick = pick.masked(masked);
        let pass = Pass::Batch { n };
        self.cached_plan(pass, pick)?;
        let ids = self.run(&self.plans[&(pass, pick)], n, n).await?;
        let logits = if batch.iter().any(|t| t.next == NextToken::Logits) {
            self.read_logit_rows(n).await?
        } else {
            Vec::new()
        };
        let vocab = self.config.vocab_size;
        Ok(batch
            .iter()
            .enumerate()
            .map(|(i, t)| match t.next {
                NextToken::Logits => {
                    BatchOutput::Logits(logits[i * vocab..i * vocab + self.output_vocab].to_vec())
                }
                _ => BatchOutput::Token(ids[i]),
            })
            .collect())
    }

    /// Mask row words per token: [`crate::kernels::mask::words`] of the logits row.
    pub fn mask_words(&self) -> usize {
        mask::words(self.config.vocab_size)
    }

    /// Writes a mask row per picked row, all tokens allowed where `None`.
    fn write_masks(&self, rows: &[Option<&[u32]>]) -> Result<()> {
        let words = self.mask_words();
        let mut all = Vec::with_capacity(rows.len() * words);
        for row in rows {
            match row {
                Some(row) if row.len() == words => all.extend_from_slice(row),
                Some(row) => {
                    return Err(Error::Invalid(format!(
                        "a token mask row has {} words, the model's logits need {words}",
                        row.len()
                    )))
                }
                None => all.extend(std::iter::repeat_n(u32::MAX, words)),
            }
        }
        let buffer = &self.buf.mask.buffer;
        self.ctx
            .queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(&all));
        Ok(())
    }

    fn write_sample_settings(&self, settings: &[SampleSettings]) {
        let buffer = &self.buf.sample_settings.buffer;
        self.ctx
            .queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(settings));
    }

    /// The first `rows` rows of logits (at most one per slot), through the buffer kept for
    /// them.
    async fn read_logit_rows(&self, rows: usize) -> Result<Vec<f32>> {
        let t = &self.buf.logits;
        let n_values = rows * self.config.vocab_size;
        let size = (n_values * t.dtype.size()) as u64;
        let staging = &self.buf.logits_readback;
        let mut rec = self.ctx.recorder();
        rec.copy(
            &t.buffer,
            0,
            staging,
            0,
            staging.size().min(size.div_ceil(4) * 4),
        );
        rec.submit()?;
        let bytes = self.ctx.map_and_copy(staging).await?;
        Ok(floats_from_bytes(&bytes, t.dtype, n_values))
    }

    /// Runs `tokens` in passes of at most `max_batch`; a pass of one token that wants its
    /// logits is a decode step unless `prompt` says these are prompt tokens.
    #[allow(clippy::too_many_arguments)]
    async fn forward_inner(
        &mut self,
        slot: usize,
        tokens: &[u32],
        start: usize,
        logits: Logits,
        read_logits: bool,
        pick: Pick,
        prompt: bool,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        self.check_span(tokens, start)?;
        self.check_resume(slot, start)?;
        self.filled[slot] = start + tokens.len();
        let (mut ids_out, mut logits_out) = (Vec::new(), Vec::new());
        for (i, chunk) in tokens.chunks(self.max_batch).enumerate() {
            let pos = start + i * self.max_batch;
            let is_last = pos + chunk.len() == start + tokens.len();
            let n = chunk.len();
            // Early chunks of a prompt whose last logits are all that is wanted only fill
            // the KV cache: no output head, no readback, no wait.
            let wanted = (logits == Logits::All || is_last).then_some(logits);
            let rows = match wanted {
                Some(Logits::All) => n,
                Some(Logits::Last) => 1,
                None => 0,
            };
            self.upload_inputs(chunk, pos, slot);
            let decode = !prompt && n == 1 && wanted.is_some();
            let pass = if decode {
                ONE_TOKEN
            } else {
                Pass::Sequence { n, logits: wanted }
            };
            let ids = if decode {
                // The one-token plans are built once and kept for every later step.
                self.cached_plan(pass, pick)?;
                self.run(&self.plans[&(pass, pick)], 1, 1).await?
            } else {
                let ops = self.plan(pass, pick)?;
                self.run(&ops, n, rows).await?
            };
            ids_out.extend(ids);
            if read_logits && rows > 0 {
                if rows == 1 {
                    // Sampling reads one row per token: into a buffer kept for it.
                    logits_out.extend(self.read_logit_rows(1).await?);
                } else {
                    let t = &self.buf.logits;
                    let n_values = rows * self.config.vocab_size;
                    let size = (n_values * t.dtype.size()) as u64;
                    let bytes = self.ctx.read_bytes(&t.buffer, 0, size).await?;
                    logits_out.extend(floats_from_bytes(&bytes, t.dtype, n_values));
                }
            }
        }
        Ok((ids_out, logits_out))
    }

    /// Blocking [`Model::forward_logits`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_logits_blocking(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.forward_logits(tokens, start, logits))
    }

    /// Blocking [`Model::forward`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(
        &mut self,
        tokens: &[u32],
        start: usize,
        logits: Logits,
    ) -> Result<Vec<u32>> {
        pollster::block_on(self.forward(tokens, start, logits))
    }
}
