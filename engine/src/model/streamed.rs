//! Loading a model whose bytes arrive over a network (the browser's path): an MLC folder's
//! shards, or a GGUF file's chunks.
//!
//! Pieces (shards or chunks) are fetched a few at a time ahead of use and consumed in file
//! order. Each is checked when it arrives; a parameter goes to the GPU as soon as every
//! piece holding its tensors is in, and bytes are dropped once nothing still waiting needs
//! them. Both formats store parameters in order, so only a handful of pieces are ever held
//! at once: a 7B model loads into a 4 GiB WASM memory.

use std::collections::VecDeque;
use std::future::Future;

use super::arch::GGUF_CONFIG_TENSORS;
use super::config::ModelConfig;
use super::graph::{Model, ModelLoader};
use super::mlc::MlcModel;
use super::source::{GgufWeights, WeightSource};
use super::upload::ROPE_FACTORS;
use crate::error::{Error, Result};
use crate::formats::gguf::context;
use crate::formats::gguf_chunks::{recheck, Chunk, ChunkedGguf};
use crate::formats::mlc::ResidentShards;

/// How far a streamed load has got, after each piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamProgress {
    /// The piece just consumed (checked, and its complete parameters uploaded): a shard of
    /// an MLC folder, a chunk of a GGUF file.
    pub piece: usize,
    pub pieces_done: usize,
    pub pieces_total: usize,
    /// Bytes of the pieces consumed so far, and of all of them.
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes held in memory now.
    pub resident_bytes: usize,
}

/// A piece on its way: fetched before its turn and kept, or a transfer.
enum Transfer<Fut> {
    Held(Vec<u8>),
    Fetching(Fut),
}

/// Transfers started ahead of use, at most `window` at once, awaited in the order started.
struct Ahead<Fut> {
    window: usize,
    queue: VecDeque<(usize, Transfer<Fut>)>,
}

impl<Fut: Future<Output = Result<Vec<u8>>>> Ahead<Fut> {
    fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            queue: VecDeque::new(),
        }
    }

    /// Starts transfers from `pieces` until `window` are under way.
    fn fill(
        &mut self,
        pieces: &mut impl Iterator<Item = usize>,
        mut start: impl FnMut(usize) -> Transfer<Fut>,
    ) {
        while self.queue.len() < self.window {
            let Some(n) = pieces.next() else { break };
            self.queue.push_back((n, start(n)));
        }
    }

    /// The oldest transfer's piece and bytes.
    async fn next(&mut self) -> Option<(usize, Result<Vec<u8>>)> {
        let (n, transfer) = self.queue.pop_front()?;
        Some((
            n,
            match transfer {
                Transfer::Held(bytes) => Ok(bytes),
                Transfer::Fetching(fetch) => fetch.await,
            },
        ))
    }
}

/// Parameters still waiting for bytes, each with what it is read from (shards, tensors).
type Waiting<T> = Vec<(crate::model::weights::Param, Vec<T>)>;

/// Uploads every waiting parameter whose pieces `ready` says are in, and returns those
/// still waiting.
fn upload_ready<T>(
    loader: &mut ModelLoader,
    source: &dyn WeightSource,
    waiting: Waiting<T>,
    ready: impl Fn(&T) -> bool,
) -> Result<Waiting<T>> {
    let mut still = Vec::new();
    for (param, needs) in waiting {
        if needs.iter().all(&ready) {
            loader.load(source, &param)?;
        } else {
            still.push((param, needs));
        }
    }
    Ok(still)
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
    let mut ahead = Ahead::new(window);
    let mut pieces = 0..total;
    for done in 1..=total {
        ahead.fill(&mut pieces, |n| Transfer::Fetching(fetch(n, false)));
        let (n, bytes) = ahead.next().await.expect("one is under way");
        if let Err(first) = model.shards.insert(n, bytes?) {
            log::warn!("{first}; fetching it again");
            model
                .shards
                .insert(n, fetch(n, true).await?)
                .map_err(|again| match again {
                    Error::Invalid(m) => Error::Invalid(format!("{m} (fetched twice)")),
                    other => other,
                })?;
        }
        waiting = upload_ready(&mut loader, &*model, waiting, |&s| model.shards.contains(s))?;
        for s in 0..=n {
            if model.shards.contains(s) && !waiting.iter().any(|(_, need)| need.contains(&s)) {
                model.shards.remove(s);
            }
        }
        bytes_done += sizes[n];
        progress(StreamProgress {
            piece: n,
            pieces_done: done,
            pieces_total: total,
            bytes_done,
            bytes_total,
            resident_bytes: model.shards.resident_bytes(),
        });
    }
    loader.finish()
}

/// The small GGUF tensors read before the weights: a config holds them (Phi-3's LongRoPE
/// divisors), or the loader takes them apart from the parameters (Llama 3's RoPE divisors).
const READ_FIRST: [&str; 3] = [GGUF_CONFIG_TENSORS[0], GGUF_CONFIG_TENSORS[1], ROPE_FACTORS];

/// Opens the GGUF file `name` from its chunks (see [`ChunkedGguf`]), its parts `part_lens`
/// bytes long (one for a single file): reads its headers and the small tensors its config
/// holds, and reads the config. Nothing of the weights is fetched yet, so a model the
/// adapter cannot hold is refused before its download.
pub async fn open_streamed_gguf<F, Fut>(
    name: &str,
    part_lens: &[u64],
    chunk_bytes: u64,
    fetch: &mut F,
) -> Result<(ChunkedGguf, ModelConfig)>
where
    F: FnMut(Chunk) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    let mut gguf = ChunkedGguf::open(name, part_lens, chunk_bytes, fetch).await?;
    gguf.read_first(&READ_FIRST, fetch).await?;
    let config = ModelConfig::from_gguf(&gguf).map_err(|e| context(e, name))?;
    Ok((gguf, config))
}

/// Loads the weights of a GGUF file opened with [`open_streamed_gguf`] through `loader`,
/// fetching its chunks with `fetch` (a chunk that comes back with the wrong length is
/// fetched once more, `fresh`). Calling `fetch` must start the transfer; up to `window`
/// run at once.
pub async fn load_streamed_gguf<F, Fut>(
    mut loader: ModelLoader,
    gguf: &mut ChunkedGguf,
    mut fetch: F,
    window: usize,
    progress: &mut dyn FnMut(StreamProgress),
) -> Result<Model>
where
    F: FnMut(Chunk) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    let config = loader.config().clone();
    let mut waiting = Vec::new();
    for param in loader.params() {
        let tensors = GgufWeights::new(gguf, &config).stored_tensors(&param);
        if tensors.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: the GGUF file has no tensor for {}",
                gguf.name(),
                param.name
            )));
        }
        for t in &tensors {
            gguf.keep(t)?;
        }
        waiting.push((param, tensors));
    }
    let chunks = gguf.chunks_left();
    let total = chunks.len();
    let bytes_total = gguf.total_bytes();
    let mut held = gguf.take_held();
    let mut ahead = Ahead::new(window);
    let mut pieces = chunks.into_iter();
    for done in 1..=total {
        ahead.fill(&mut pieces, |n| match held.remove(&n) {
            Some(bytes) => Transfer::Held(bytes),
            None => Transfer::Fetching(fetch(gguf.chunk(n).expect("a chunk of the file"))),
        });
        let (n, bytes) = ahead.next().await.expect("one is under way");
        let chunk = gguf.chunk(n).expect("a chunk of the file");
        let bytes = recheck(gguf.name(), &mut fetch, chunk, bytes?).await?;
        gguf.consume(n, &bytes)?;
        drop(bytes);
        let needed: Vec<String> = waiting.iter().flat_map(|(_, t)| t.clone()).collect();
        waiting = upload_ready(
            &mut loader,
            &GgufWeights::new(gguf, &config),
            waiting,
            |t| gguf.is_complete(t),
        )?;
        for t in needed {
            if !waiting.iter().any(|(_, need)| need.contains(&t)) {
                gguf.release(&t);
            }
        }
        progress(StreamProgress {
            piece: n,
            pieces_done: done,
            pieces_total: total,
            bytes_done: gguf.bytes_through(chunk),
            bytes_total,
            resident_bytes: gguf.resident_bytes(),
        });
    }
    let source = GgufWeights::new(gguf, &config);
    if source.has(ROPE_FACTORS) {
        loader.set_rope_factors(source.tensor_f32(ROPE_FACTORS, &[config.head_dim / 2])?);
    }
    loader.finish()
}
