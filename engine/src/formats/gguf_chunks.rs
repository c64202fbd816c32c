//! A GGUF file read in fixed-size chunks: the browser's path, where each chunk is one Range
//! request and one Cache Storage entry.
//!
//! The header is parsed from the first chunks, checked against the file's length as a
//! whole file would be. The tensor data is then consumed chunk by chunk in file order, and
//! only the bytes of the tensors asked for ([`ChunkedGguf::keep`]) are copied out, so memory
//! holds a few chunks and the tensors waiting for their parameter, never the file: a 4 GiB
//! model loads in a 4 GiB WASM memory.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Range;

use super::gguf::{parse_header, GgufData, GgufHeader, TensorInfo};
use crate::error::{Error, Result};

/// Bytes per chunk unless the caller picks another size: a few requests per second on a
/// fast link, and little memory per chunk in flight.
pub const DEFAULT_CHUNK_BYTES: u64 = 4 << 20;

/// The largest header glim reads: vocabularies of 256k tokens with their scores and merges
/// take about 10 MB.
pub const MAX_HEADER_BYTES: u64 = 64 << 20;

/// One chunk to fetch: bytes `start..end` of the file. `fresh` when a first copy had the
/// wrong length (a cached copy may be stale or cut short): fetch it past any cache and
/// replace what is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub index: usize,
    pub start: u64,
    pub end: u64,
    pub fresh: bool,
}

impl Chunk {
    fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// A GGUF file's header and the tensor bytes that have arrived.
pub struct ChunkedGguf {
    header: GgufHeader,
    chunk_bytes: u64,
    /// Where the file came from, for errors.
    name: String,
    /// Chunks fetched before their turn (the header's last one, those of tensors read
    /// first), to be consumed in order without fetching them again.
    held: BTreeMap<usize, Vec<u8>>,
    /// The next chunk [`ChunkedGguf::consume`] takes.
    next: usize,
    /// Tensors asked for, by index in the header: their bytes so far, complete when as long
    /// as the tensor.
    kept: HashMap<usize, Vec<u8>>,
}

impl ChunkedGguf {
    /// Reads the header of the `file_len`-byte GGUF file `name`, fetching chunks of
    /// `chunk_bytes` from the first until it parses.
    pub async fn open<F, Fut>(
        name: &str,
        file_len: u64,
        chunk_bytes: u64,
        fetch: &mut F,
    ) -> Result<Self>
    where
        F: FnMut(Chunk) -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        let chunk_bytes = chunk_bytes.max(1);
        let mut prefix = Vec::new();
        let mut chunks = Vec::new();
        let header = loop {
            let n = chunks.len();
            let chunk = chunk_at(n, chunk_bytes, file_len).ok_or_else(|| {
                Error::Invalid(format!(
                    "{name}: the file ends ({file_len} bytes) inside its GGUF header"
                ))
            })?;
            if chunk.start >= MAX_HEADER_BYTES {
                return Err(Error::Invalid(format!(
                    "{name}: the GGUF header is longer than {} MiB",
                    MAX_HEADER_BYTES >> 20
                )));
            }
            let bytes = fetch_checked(name, fetch, chunk).await?;
            prefix.extend_from_slice(&bytes);
            chunks.push(bytes);
            match parse_header(&prefix, file_len) {
                Ok(Some(header)) => break header,
                Ok(None) => continue,
                Err(e) => return Err(named(name, e)),
            }
        };
        let data_offset = header.data_offset();
        let held = chunks
            .into_iter()
            .enumerate()
            .filter(|(n, _)| (*n as u64 + 1) * chunk_bytes > data_offset)
            .collect();
        let next = (data_offset / chunk_bytes) as usize;
        Ok(Self {
            header,
            chunk_bytes,
            name: name.to_string(),
            held,
            next,
            kept: HashMap::new(),
        })
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// Chunks of the file, header included.
    pub fn chunk_count(&self) -> usize {
        self.header.file_len().div_ceil(self.chunk_bytes) as usize
    }

    /// The chunks still to consume, in order: from the one the data starts in to the end.
    pub fn chunks_left(&self) -> Range<usize> {
        self.next..self.chunk_count()
    }

    /// Chunk `n` of this file.
    pub fn chunk(&self, n: usize) -> Option<Chunk> {
        chunk_at(n, self.chunk_bytes, self.header.file_len())
    }

    /// Takes the chunks fetched ahead of their turn; the caller consumes them in order
    /// instead of fetching them.
    pub fn take_held(&mut self) -> BTreeMap<usize, Vec<u8>> {
        std::mem::take(&mut self.held)
    }

    fn index_of(&self, tensor: &str) -> Result<usize> {
        self.header
            .tensor_position(tensor)
            .ok_or_else(|| Error::Invalid(format!("{}: no tensor {tensor}", self.name)))
    }

    /// Keeps `tensor`'s bytes as its chunks are consumed.
    pub fn keep(&mut self, tensor: &str) -> Result<()> {
        let i = self.index_of(tensor)?;
        let start = self.header.tensors()[i].file_offset();
        if (start / self.chunk_bytes) < self.next as u64 && !self.kept.contains_key(&i) {
            return Err(Error::Invalid(format!(
                "{}: tensor {tensor} was asked for after its bytes went by",
                self.name
            )));
        }
        self.kept.entry(i).or_default();
        Ok(())
    }

    /// Fetches now, ahead of their turn, the chunks holding `tensors` (those the file has)
    /// and keeps their bytes: the small tensors a model's config is read from.
    pub async fn read_first<F, Fut>(&mut self, tensors: &[&str], fetch: &mut F) -> Result<()>
    where
        F: FnMut(Chunk) -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        for name in tensors {
            let Some(i) = self.header.tensor_position(name) else {
                continue;
            };
            let info = &self.header.tensors()[i];
            let (start, end) = (
                info.file_offset(),
                info.file_offset() + info.n_bytes() as u64,
            );
            let mut bytes = Vec::with_capacity(info.n_bytes());
            for n in (start / self.chunk_bytes) as usize..end.div_ceil(self.chunk_bytes) as usize {
                let chunk = self.chunk(n).expect("tensors fit the file");
                if !self.held.contains_key(&n) {
                    let fetched = fetch_checked(&self.name, fetch, chunk).await?;
                    self.held.insert(n, fetched);
                }
                let overlap = overlap(chunk, start..end);
                bytes.extend_from_slice(&self.held[&n][overlap]);
            }
            self.kept.insert(i, bytes);
        }
        Ok(())
    }

    /// Consumes chunk `n`, the next in order, copying out the bytes of the tensors kept.
    pub fn consume(&mut self, n: usize, bytes: &[u8]) -> Result<()> {
        let chunk = self.chunk(n).filter(|_| n == self.next).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: chunk {n} consumed out of order (expected {})",
                self.name, self.next
            ))
        })?;
        check_len(&self.name, chunk, bytes.len())?;
        for (&i, kept) in &mut self.kept {
            let info = &self.header.tensors()[i];
            let start = info.file_offset();
            let range = start..start + info.n_bytes() as u64;
            if kept.len() == info.n_bytes() || range.end <= chunk.start || range.start >= chunk.end
            {
                continue;
            }
            // Chunks come in order, so a tensor's bytes only ever grow at its end.
            let at = start + kept.len() as u64;
            if at != chunk.start.max(start) {
                return Err(Error::Invalid(format!(
                    "{}: tensor {} is missing bytes before chunk {n}",
                    self.name,
                    info.name()
                )));
            }
            if kept.is_empty() {
                kept.reserve_exact(info.n_bytes());
            }
            kept.extend_from_slice(&bytes[overlap(chunk, range)]);
        }
        self.next += 1;
        Ok(())
    }

    /// Whether every byte of `tensor` has arrived.
    pub fn is_complete(&self, tensor: &str) -> bool {
        self.index_of(tensor).is_ok_and(|i| {
            self.kept
                .get(&i)
                .is_some_and(|b| b.len() == self.header.tensors()[i].n_bytes())
        })
    }

    /// Forgets `tensor`'s bytes.
    pub fn release(&mut self, tensor: &str) {
        if let Ok(i) = self.index_of(tensor) {
            self.kept.remove(&i);
        }
    }

    /// Bytes held: tensors kept and chunks held ahead of their turn.
    pub fn resident_bytes(&self) -> usize {
        self.kept.values().map(Vec::capacity).sum::<usize>()
            + self.held.values().map(Vec::len).sum::<usize>()
    }

    /// The file's name, as errors give it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl GgufData for ChunkedGguf {
    fn header(&self) -> &GgufHeader {
        &self.header
    }

    fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        self.index_of(info.name())
            .ok()
            .and_then(|i| self.kept.get(&i))
            .filter(|b| b.len() == info.n_bytes())
            .map(Vec::as_slice)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: tensor {} has not arrived",
                    self.name,
                    info.name()
                ))
            })
    }
}

fn chunk_at(n: usize, chunk_bytes: u64, file_len: u64) -> Option<Chunk> {
    let start = (n as u64).checked_mul(chunk_bytes)?;
    (start < file_len).then(|| Chunk {
        index: n,
        start,
        end: (start + chunk_bytes).min(file_len),
        fresh: false,
    })
}

/// Where bytes `range` of the file lie in `chunk`'s bytes.
fn overlap(chunk: Chunk, range: Range<u64>) -> Range<usize> {
    let from = range.start.max(chunk.start) - chunk.start;
    let to = range.end.min(chunk.end) - chunk.start;
    from as usize..to as usize
}

fn check_len(name: &str, chunk: Chunk, len: usize) -> Result<()> {
    if len as u64 == chunk.len() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{name}: bytes {}-{} came back as {len} bytes, not {}",
        chunk.start,
        chunk.end - 1,
        chunk.len()
    )))
}

/// `chunk`'s bytes from `fetch`, fetched once more, fresh, when the first copy has the
/// wrong length.
pub async fn fetch_checked<F, Fut>(name: &str, fetch: &mut F, chunk: Chunk) -> Result<Vec<u8>>
where
    F: FnMut(Chunk) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    let bytes = fetch(chunk).await?;
    recheck(name, fetch, chunk, bytes).await
}

/// `bytes`, fetched for `chunk`, or a fresh copy when they have the wrong length.
pub async fn recheck<F, Fut>(
    name: &str,
    fetch: &mut F,
    chunk: Chunk,
    bytes: Vec<u8>,
) -> Result<Vec<u8>>
where
    F: FnMut(Chunk) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    if let Err(first) = check_len(name, chunk, bytes.len()) {
        log::warn!("{first}; fetching it again");
        let bytes = fetch(Chunk {
            fresh: true,
            ..chunk
        })
        .await?;
        check_len(name, chunk, bytes.len()).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{m} (fetched twice)")),
            other => other,
        })?;
        return Ok(bytes);
    }
    Ok(bytes)
}

/// `e` with the file named.
fn named(name: &str, e: Error) -> Error {
    match e {
        Error::Invalid(m) => Error::Invalid(format!("{name}: {m}")),
        Error::Unsupported(m) => Error::Unsupported(format!("{name}: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ggml::GgmlType;
    use crate::formats::gguf::{GgufFile, Value};
    use crate::formats::gguf_writer::{GgufWriter, TensorSpec};

    /// A GGUF file with a header of a few hundred bytes and tensors of odd sizes.
    fn sample() -> Vec<u8> {
        let metadata = [
            ("general.architecture", Value::String("llama".into())),
            ("general.name", Value::String("x".repeat(300))),
        ];
        let tensors: Vec<TensorSpec> = [("a", 37), ("b", 5), ("c", 130), ("d", 64)]
            .iter()
            .map(|&(name, n)| TensorSpec {
                name: name.into(),
                dims: vec![n],
                ggml_type: GgmlType::F32,
            })
            .collect();
        let mut w = GgufWriter::new(Vec::new(), &metadata, &tensors).unwrap();
        for t in &tensors {
            let n = t.dims[0] as usize;
            let values: Vec<u8> = (0..n)
                .flat_map(|i| (i as f32 + t.name.len() as f32).to_le_bytes())
                .collect();
            w.write_tensor(&values).unwrap();
        }
        w.finish().unwrap()
    }

    /// A fetcher over `file` that records what it was asked for; `cut(chunk)` drops bytes
    /// off a copy.
    fn server<'a>(
        file: &'a [u8],
        asked: &'a mut Vec<Chunk>,
        cut: impl Fn(&Chunk) -> usize + 'a,
    ) -> impl FnMut(Chunk) -> std::future::Ready<Result<Vec<u8>>> + 'a {
        move |c: Chunk| {
            asked.push(c);
            let bytes = &file[c.start as usize..c.end as usize];
            std::future::ready(Ok(bytes[..bytes.len() - cut(&c)].to_vec()))
        }
    }

    #[test]
    fn tensors_come_out_whole_from_chunks_they_straddle() {
        let file = sample();
        let whole = GgufFile::from_bytes(file.clone()).unwrap();
        let mut asked = Vec::new();
        let mut fetch = server(&file, &mut asked, |_| 0);
        let mut gguf = pollster::block_on(ChunkedGguf::open(
            "t.gguf",
            file.len() as u64,
            100,
            &mut fetch,
        ))
        .unwrap();
        assert_eq!(gguf.header().tensors(), whole.tensors());
        pollster::block_on(gguf.read_first(&["c", "missing"], &mut fetch)).unwrap();
        assert!(gguf.is_complete("c"));
        for t in ["a", "b", "d"] {
            gguf.keep(t).unwrap();
        }
        let mut held = gguf.take_held();
        for n in gguf.chunks_left() {
            let bytes = held
                .remove(&n)
                .unwrap_or_else(|| fetch(gguf.chunk(n).unwrap()).into_inner().unwrap());
            gguf.consume(n, &bytes).unwrap();
        }
        assert!(held.is_empty());
        drop(fetch);
        for t in whole.tensors() {
            assert_eq!(
                gguf.tensor_data(t).unwrap(),
                whole.tensor_bytes(t),
                "{}",
                t.name()
            );
            gguf.release(t.name());
        }
        assert_eq!(gguf.resident_bytes(), 0);
        // Every chunk was fetched once (c's ahead of its turn).
        let mut order: Vec<usize> = asked.iter().map(|c| c.index).collect();
        order.sort_unstable();
        assert_eq!(order, (0..file.len().div_ceil(100)).collect::<Vec<_>>());
        assert!(asked.iter().all(|c| !c.fresh));
    }

    #[test]
    fn a_short_chunk_is_fetched_again_fresh_then_refused() {
        let file = sample();
        let len = file.len() as u64;
        let mut asked = Vec::new();
        let mut once = server(&file, &mut asked, |c| usize::from(c.index == 1 && !c.fresh));
        assert!(pollster::block_on(ChunkedGguf::open("t.gguf", len, 100, &mut once)).is_ok());
        drop(once);
        assert!(
            asked.contains(&Chunk {
                index: 1,
                start: 100,
                end: 200,
                fresh: true
            }),
            "{asked:?}"
        );

        let mut always = server(&file, &mut asked, |c| usize::from(c.index == 1));
        let err = pollster::block_on(ChunkedGguf::open("t.gguf", len, 100, &mut always))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("t.gguf: bytes 100-199 came back as 99 bytes, not 100 (fetched twice)"),
            "{err}"
        );
    }

    #[test]
    fn what_is_not_a_whole_gguf_is_refused_by_name() {
        let file = sample();
        let mut asked = Vec::new();
        let open = |bytes: &[u8], len: u64, asked: &mut Vec<Chunk>| {
            let mut fetch = server(bytes, asked, |_| 0);
            pollster::block_on(ChunkedGguf::open("t.gguf", len, 64, &mut fetch))
                .err()
                .expect("opened")
                .to_string()
        };
        let html = b"<!DOCTYPE html><html><body>Not Found</body></html>".repeat(4);
        let err = open(&html, html.len() as u64, &mut asked);
        assert!(err.contains("t.gguf: not a GGUF file"), "{err}");
        // Cut short inside the header, or inside the data: the header says so.
        let err = open(&file[..200], 200, &mut asked);
        assert!(err.contains("t.gguf") && err.contains("truncated"), "{err}");
        let err = open(&file[..file.len() - 1], file.len() as u64 - 1, &mut asked);
        assert!(err.contains("runs past the end"), "{err}");
    }
}
