//! What a loaded model holds and moves: GPU memory by purpose, bytes read per decode
//! token, dispatches per step, weight formats, sliding-window layers — what `glim bench`
//! reports.

use super::graph::{Model, Op, Pick, ONE_TOKEN};

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Tensor};
use crate::kernels::weight::GpuWeight;
use crate::text::Tokenizer;

/// GPU memory a loaded model holds, in bytes, by what it is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Weights as uploaded (codes, scales, norms).
    pub weights: u64,
    /// Keys and values for every layer, `context` tokens for each slot (a sliding-window
    /// layer's window and a prefill pass).
    pub kv_cache: u64,
    /// What the KV cache would take if every layer kept the whole context.
    pub kv_cache_full: u64,
    /// Activations for `max_batch` tokens, logits, uniforms and readback buffers.
    pub activations: u64,
}

impl MemoryUse {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.activations
    }
}

/// What one decode step records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepShape {
    /// Kernel launches.
    pub dispatches: usize,
    /// Buffer copies between them (the readback of the token id included).
    pub copies: usize,
}

impl Model {
    pub fn gpu(&self) -> &GpuContext {
        &self.ctx
    }

    /// Bits per weight of its matrices on the GPU (codes, scales and padding), the
    /// embedding table and output head included.
    pub fn matrix_bits_per_weight(&self) -> f64 {
        let mut matrices: Vec<&GpuWeight> = vec![&self.embed];
        matrices.extend(&self.output);
        for l in &self.layers {
            matrices.extend([&l.w_qkv, &l.wo, &l.w_gate_up, &l.w_down]);
        }
        let bytes: u64 = matrices.iter().map(|m| m.buffer_bytes()).sum();
        let weights: usize = matrices.iter().map(|m| m.rows * m.cols).sum();
        bytes as f64 * 8.0 / weights.max(1) as f64
    }

    /// Its matrices' formats, most used first: `q4_1`, or `q4_K + q6_K`.
    pub fn weight_formats(&self) -> String {
        let names: Vec<&str> = self.formats.iter().map(|(f, _)| f.name()).collect();
        names.join(" + ")
    }

    /// Keeps generation to the first `n` vocabulary entries (those a tokenizer can decode).
    pub fn limit_output_vocab(&mut self, n: usize) {
        self.output_vocab = n.clamp(1, self.config.vocab_size);
        self.plans.clear();
    }

    /// Checks that `tokenizer` fits this model and keeps generation to the tokens it can
    /// decode (output rows past its vocabulary are padding).
    pub fn fit_tokenizer(&mut self, tokenizer: &Tokenizer) -> Result<()> {
        let (model_vocab, tokens) = (self.config.vocab_size, tokenizer.vocab_size());
        if model_vocab < tokens {
            return Err(Error::Invalid(format!(
                "the tokenizer has {tokens} tokens but the model only {model_vocab}"
            )));
        }
        self.limit_output_vocab(tokens);
        Ok(())
    }

    /// The attention window of each sliding-window layer and the cache rows it keeps per
    /// sequence, and how many layers attend to the whole context.
    pub fn sliding_layers(&self) -> (Vec<(usize, usize)>, usize) {
        let sliding: Vec<(usize, usize)> = self
            .layers
            .iter()
            .filter_map(|l| l.spec.window.map(|w| (w, l.ring)))
            .collect();
        let global = self.layers.len() - sliding.len();
        (sliding, global)
    }

    /// How many tokens back from the end of what a slot holds a sequence can resume (a
    /// cached prefix reused): unbounded, but for a sliding-window layer only as far as the
    /// keys its ring of cache rows still holds.
    pub fn max_rewind(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.ring < self.context)
            .filter_map(|l| l.spec.window.map(|w| l.ring.saturating_sub(w)))
            .min()
            .unwrap_or(usize::MAX)
    }

    /// How many vocabulary entries generation picks from.
    pub fn output_vocab(&self) -> usize {
        self.output_vocab
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// The GPU memory this model holds, from the sizes of its buffers.
    pub fn memory(&self) -> MemoryUse {
        let matrix = GpuWeight::buffer_bytes;
        let vector = |t: &Tensor| t.buffer.size();
        let mut weights = matrix(&self.embed)
            + self.output.as_ref().map_or(0, matrix)
            + vector(&self.final_norm)
            + self.inv_freqs.iter().map(vector).sum::<u64>();
        let mut kv_cache = 0;
        let full_layer = (2 * self.slots * self.context * self.config.kv_dim()) as u64
            * DType::from(self.precision).size() as u64;
        for l in &self.layers {
            weights += l.vectors().map(vector).sum::<u64>();
            weights += matrix(&l.w_qkv) + matrix(&l.wo) + matrix(&l.w_gate_up) + matrix(&l.w_down);
            kv_cache += vector(&l.k_cache) + vector(&l.v_cache);
        }
        let b = &self.buf;
        let activations = [
            &b.ids,
            &b.places,
            &b.x,
            &b.block_out,
            &b.qkv,
            &b.q,
            &b.attn,
            &b.ffn,
            &b.last,
            &b.partial,
            &b.logits,
            &b.tokens,
            &b.sample_settings,
            &b.mask,
        ]
        .into_iter()
        .map(vector)
        .sum::<u64>()
            + b.readback.size()
            + b.logits_readback.size();
        MemoryUse {
            weights,
            kv_cache,
            kv_cache_full: full_layer * self.layers.len() as u64,
            activations,
        }
    }

    /// Bytes a decode step reads from memory at `position` (tokens already in the KV
    /// cache): every layer's matrices and norms, the output head, one embedding row, and the
    /// keys and values of the tokens each layer sees (`position + 1`, or its window). The bandwidth roofline divides a copy
    /// kernel's bytes per second by this.
    pub fn decode_read_bytes(&self, position: usize) -> u64 {
        let matrix = GpuWeight::buffer_bytes;
        let c = &self.config;
        let act = DType::from(self.precision).size() as u64;
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                matrix(&l.w_qkv)
                    + matrix(&l.wo)
                    + matrix(&l.w_gate_up)
                    + matrix(&l.w_down)
                    + l.vectors().map(|v| v.buffer.size()).sum::<u64>()
                    + (2 * l.spec.window.map_or(position + 1, |w| w.min(position + 1)) * c.kv_dim())
                        as u64
                        * act
            })
            .sum();
        let head = matrix(self.output.as_ref().unwrap_or(&self.embed));
        let embed_row = matrix(&self.embed) / c.vocab_size as u64;
        layers + head + embed_row
    }

    /// Dispatches and copies in one greedy decode step.
    pub fn decode_step_shape(&mut self) -> Result<StepShape> {
        let plan = self.cached_plan(ONE_TOKEN, Pick::ARGMAX)?;
        let dispatches = plan.iter().filter(|op| matches!(op, Op::Kernel(_))).count();
        // The plan's own copies, plus the token id's copy to the readback buffer.
        let copies = plan.len() - dispatches + 1;
        Ok(StepShape { dispatches, copies })
    }
}
