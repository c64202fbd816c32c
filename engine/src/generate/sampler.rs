//! Choosing the next token from logits: greedy, or llama.cpp's default chain —
//! repetition penalty, top-k, top-p, min-p, temperature — then a seeded draw.

use crate::kernels::argmax::argmax_row;

/// Sampling settings. The defaults are greedy decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 picks the most likely token every time (greedy).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: no limit).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: off).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recently seen tokens (1: off).
    pub repetition_penalty: f32,
    /// OpenAI's penalties: subtract `frequency_penalty` times a recent token's count, and
    /// `presence_penalty` once for any recent token (0: off; negative values favour them).
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Whether the GPU's argmax picks the token (no penalty changes the logits first).
    pub fn is_plain_greedy(&self) -> bool {
        self.is_greedy() && !self.has_penalties()
    }

    /// Whether a penalty changes the logits (which the GPU sampler cannot apply).
    pub fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.frequency_penalty != 0.0
            || self.presence_penalty != 0.0
    }
}

/// SplitMix64: a small, well-mixed, seedable generator (no OS entropy, so it builds for
/// wasm32 as is).
#[derive(Clone, Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A sampler with its own random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    pub params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng(params.seed);
        Self { params, rng }
    }

    /// Picks a token from `logits` (one per vocabulary entry); `recent` are the tokens seen
    /// so far, for the repetition penalty. `logits` is modified.
    pub fn sample(&mut self, logits: &mut [f32], recent: &[u32]) -> u32 {
        let p = &self.params;
        if p.has_penalties() {
            let window = &recent[recent.len().saturating_sub(p.repeat_last_n)..];
            let mut seen = window.to_vec();
            seen.sort_unstable();
            for run in seen.chunk_by(|a, b| a == b) {
                let Some(l) = logits.get_mut(run[0] as usize) else {
                    continue;
                };
                if *l > 0.0 {
                    *l /= p.repetition_penalty;
                } else {
                    *l *= p.repetition_penalty;
                }
                *l -= p.frequency_penalty * run.len() as f32 + p.presence_penalty;
            }
        }
        if p.is_greedy() {
            return argmax_row(logits);
        }
        // Candidates, most likely first (NaN logits never qualify).
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit);
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(by_logit);
        let probs = softmax(&cand, 1.0);
        // Infinite logits (an f16 overflow) leave no distribution: take the top one.
        if probs.iter().any(|q| !q.is_finite()) {
            return cand[0].0;
        }
        let mut keep = cand.len();
        if p.top_p < 1.0 {
            let mut total = 0.0;
            for (i, &q) in probs.iter().enumerate() {
                total += q;
                if total >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        cand.truncate(keep.max(1));
        let probs = softmax(&cand, p.temperature);
        if probs.iter().any(|q| !q.is_finite()) {
            return cand[0].0;
        }
        let r = self.rng.next_f64();
        let mut total = 0.0;
        for (&(id, _), q) in cand.iter().zip(&probs) {
            total += q;
            if r < total {
                return id;
            }
        }
        cand.last().map_or(0, |c| c.0)
    }
}

fn softmax(cand: &[(u32, f32)], temperature: f32) -> Vec<f64> {
    let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max) as f64;
    let t = temperature.max(1e-6) as f64;
    let exps: Vec<f64> = cand
        .iter()
        .map(|c| ((c.1 as f64 - max) / t).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 3.0], &[]), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_frequencies_follow_softmax() {
        let logits = [0.0f32, (2.0f32).ln(), (7.0f32).ln()]; // probabilities 0.1, 0.2, 0.7
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0)
            });
            (0..20_000)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert_ne!(a, draw(43));
        for (token, want) in [(0u32, 0.1), (1, 0.2), (2, 0.7)] {
            let share = a.iter().filter(|&&t| t == token).count() as f64 / a.len() as f64;
            assert!(
                (share - want).abs() < 0.015,
                "token {token}: {share} vs {want}"
            );
        }
    }

    #[test]
    fn top_k_top_p_and_min_p_cut_the_tail() {
        let logits = [5.0f32, 4.0, 3.0, 0.0, -1.0];
        let only = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            let mut seen: Vec<u32> = (0..2000)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect();
            seen.sort_unstable();
            seen.dedup();
            seen
        };
        assert_eq!(
            only(SamplingParams {
                top_k: 2,
                ..params(1.0)
            }),
            vec![0, 1]
        );
        // Probabilities ~0.66, 0.24, 0.09: top_p 0.8 keeps two.
        assert_eq!(
            only(SamplingParams {
                top_p: 0.8,
                ..params(1.0)
            }),
            vec![0, 1]
        );
        // min_p 0.2: 0.09 < 0.2 * 0.66 is dropped.
        assert_eq!(
            only(SamplingParams {
                min_p: 0.2,
                ..params(1.0)
            }),
            vec![0, 1]
        );
    }

    #[test]
    fn infinite_and_nan_logits_do_not_derail_sampling() {
        let mut s = Sampler::new(params(1.0));
        assert_eq!(s.sample(&mut [1.0, f32::INFINITY, 2.0], &[]), 1);
        assert_eq!(s.sample(&mut [f32::NEG_INFINITY; 3], &[]), 0);
        let mut g = Sampler::new(params(0.0));
        assert_eq!(g.sample(&mut [f32::NAN, 1.0, 3.0], &[]), 2);
    }

    #[test]
    fn repetition_penalty_demotes_recent_tokens() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0)
        });
        assert_eq!(s.sample(&mut [3.0, 2.0, -1.0], &[0]), 1);
    }

    #[test]
    fn frequency_and_presence_penalties_count_occurrences() {
        let penalized = |frequency_penalty, presence_penalty| {
            let mut s = Sampler::new(SamplingParams {
                frequency_penalty,
                presence_penalty,
                ..params(0.0)
            });
            // Token 0 seen three times, token 1 once.
            s.sample(&mut [3.0, 2.5, 1.0], &[0, 1, 0, 0])
        };
        assert_eq!(penalized(0.0, 0.0), 0);
        // 3 - 3 * 0.5 = 1.5 < 2.5 - 0.5 = 2.0.
        assert_eq!(penalized(0.5, 0.0), 1);
        // Presence counts once: 3 - 1.6 = 1.4 vs 2.5 - 1.6 = 0.9 vs 1.0.
        assert_eq!(penalized(0.0, 1.6), 0);
        // Both seen tokens fall below the unseen one.
        assert_eq!(penalized(0.5, 1.2), 2);
    }
}
