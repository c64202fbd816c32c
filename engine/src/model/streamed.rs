//! Loading an MLC model whose shards arrive over a network (the browser's path).
//!
//! Shards are fetched a few at a time ahead of use and consumed in index order. Each is
//! checked against the index when it arrives; a parameter goes to the GPU as soon as every
//! shard holding its tensors is in memory, and a shard is dropped once nothing still
//! waiting needs it. MLC writes parameters in order, so only a handful of shards are ever
//! held at once: a 7B folder loads into a 4 GiB WASM memory.

use std::collections::VecDeque;
use std::future::Future;

use super::graph::{Model, ModelLoader};
use super::mlc::MlcModel;
use crate::error::{Error, Result};
use crate::formats::mlc::ResidentShards;

/// How far a streamed load has got, after each shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamProgress {
    /// The shard just consumed (checked, and its complete parameters uploaded).
    pub shard: usize,
    pub shards_done: usize,
    pub shards_total: usize,
    /// Bytes of the shards consumed so far, and of all of them.
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Shard bytes held in memory now.
    pub resident_bytes: usize,
}

/// Loads `model`'s weights through `loader`, fetching shard `n` with `fetch(n, fresh)`;
/// `fresh` is set when a first copy failed its size or md5 check (a cached copy may be
/// stale or truncated), so the fetcher must bypass any cache and replace what it holds.
/// Calling `fetch` must start the transfer; up to `window` run at once.
pub async fn load_streamed<F, Fut>(
    mut loader: ModelLoader,
    model: &mut MlcModel<ResidentShards>,
    mut fetch: F,
    window: usize,
    progress: &mut dyn FnMut(StreamProgress),
) -> Result<Model>
where
    F: FnMut(usize, bool) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    let mut waiting = Vec::new();
    for param in loader.params() {
        let shards = model.shards_of(&param);
        if shards.is_empty() {
            return Err(Error::Invalid(format!(
                "the shard index has no tensor for {} (looked for {})",
                param.name,
                model.stored_tensors(&param).join(", ")
            )));
        }
        waiting.push((param, shards));
    }
    let index = &model.shards.index;
    let total = index.shards.len();
    let bytes_total = index.shards.iter().map(|s| s.nbytes as u64).sum();
    let sizes: Vec<u64> = index.shards.iter().map(|s| s.nbytes as u64).collect();
    let mut bytes_done = 0;
    let mut in_flight = VecDeque::new();
    let mut next = 0;
    for done in 1..=total {
        while next < total && in_flight.len() < window.max(1) {
            in_flight.push_back((next, fetch(next, false)));
            next += 1;
        }
        let (n, transfer) = in_flight.pop_front().expect("one is in flight");
        if let Err(first) = model.shards.insert(n, transfer.await?) {
            log::warn!("{first}; fetching it again");
            model
                .shards
                .insert(n, fetch(n, true).await?)
                .map_err(|again| match again {
                    Error::Invalid(m) => Error::Invalid(format!("{m} (fetched twice)")),
                    other => other,
                })?;
        }
        // Upload every parameter whose shards are all here now.
        let mut still = Vec::new();
        for (param, shards) in waiting {
            if shards.iter().all(|&s| model.shards.contains(s)) {
                loader.load(&*model, &param)?;
            } else {
                still.push((param, shards));
            }
        }
        waiting = still;
        for s in 0..next {
            if model.shards.contains(s) && !waiting.iter().any(|(_, need)| need.contains(&s)) {
                model.shards.remove(s);
            }
        }
        bytes_done += sizes[n];
        progress(StreamProgress {
            shard: n,
            shards_done: done,
            shards_total: total,
            bytes_done,
            bytes_total,
            resident_bytes: model.shards.resident_bytes(),
        });
    }
    loader.finish()
}
