//! A GGUF file (or the parts of a split model) read in fixed-size chunks: the browser's
//! path, where each chunk is one Range request and one Cache Storage entry.
//!
//! Each part's header is parsed from its first chunks, checked against the part's length as
//! a whole file would be, and the parts' headers joined. The tensor data is then consumed chunk by chunk in file order, and
//! only the bytes of the tensors asked for ([`ChunkedGguf::keep`]) are copied out, so memory
//! holds a few chunks and the tensors waiting for their parameter, never the file: a 4 GiB
//! model loads in a 4 GiB WASM memory.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Range;

use super::gguf::{context, parse_header, GgufData, GgufHeader, TensorInfo};
use crate::error::{Error, Result};

/// Bytes per chunk unless the caller picks another size: a few requests per second on a
/// fast link, and little memory per chunk in flight.
pub const DEFAULT_CHUNK_BYTES: u64 = 4 << 20;

/// The largest header glim reads: vocabularies of 256k tokens with their scores and merges
/// take about 10 MB.
pub const MAX_HEADER_BYTES: u64 = 64 << 20;

/// One chunk to fetch: bytes `start..end` of part `part` (0 for a single file). `index`
/// numbers the chunks of every part in order. `fresh` when a first copy had the wrong
/// length (a cached copy may be stale or cut short): fetch it past any cache and replace
/// what is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub part: usize,
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

/// How a file's parts are cut into chunks: each part's length and the index of its first
/// chunk.
struct Parts {
    chunk_bytes: u64,
    parts: Vec<(u64, usize)>,
}

impl Parts {
    fn new(lens: &[u64], chunk_bytes: u64) -> Self {
        let mut parts = Vec::new();
        let mut first = 0;
        for &len in lens {
            parts.push((len, first));
            first += len.div_ceil(chunk_bytes) as usize;
        }
        Self { chunk_bytes, parts }
    }

    /// Chunk `n`, counting every part's chunks in order.
    fn chunk(&self, n: usize) -> Option<Chunk> {
        let part = self.parts.iter().rposition(|&(_, first)| first <= n)?;
        let (len, first) = self.parts[part];
        let start = ((n - first) as u64).checked_mul(self.chunk_bytes)?;
        (start < len).then(|| Chunk {
            part,
            index: n,
            start,
            end: (start + self.chunk_bytes).min(len),
            fresh: false,
        })
    }

    /// The chunks holding bytes `range` of part `part`.
    fn chunks_of(&self, part: usize, range: Range<u64>) -> Range<usize> {
        let first = self.parts[part].1;
        first + (range.start / self.chunk_bytes) as usize
            ..first + range.end.div_ceil(self.chunk_bytes) as usize
    }
}

/// A GGUF file's header and the tensor bytes that have arrived.
pub struct ChunkedGguf {
    header: GgufHeader,
    /// Where the file came from, for errors.
    name: String,
    parts: Parts,
    /// Chunks fetched before their turn (the headers' last ones, those of tensors read
    /// first), to be consumed in order without fetching them again.
    held: BTreeMap<usize, Vec<u8>>,
    /// The chunks holding tensor data, in the order [`ChunkedGguf::consume`] takes them,
    /// and how many it has taken.
    order: Vec<usize>,
    consumed: usize,
    /// Tensors asked for, by index in the header: their bytes so far, complete when as long
    /// as the tensor.
    kept: HashMap<usize, Vec<u8>>,
}

impl ChunkedGguf {
    /// Reads the headers of the GGUF file `name` whose parts (one for a single file) are
    /// `part_lens` bytes long, fetching chunks of `chunk_bytes` from each part's first until
    /// its header parses.
    pub async fn open<F, Fut>(
        name: &str,
        part_lens: &[u64],
        chunk_bytes: u64,
        fetch: &mut F,
    ) -> Result<Self>
    where
        F: FnMut(Chunk) -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        let parts = Parts::new(part_lens, chunk_bytes.max(1));
        let mut held = BTreeMap::new();
        let mut order = Vec::new();
        let mut headers = Vec::new();
        for (part, &len) in part_lens.iter().enumerate() {
            let what = match part_lens.len() {
                1 => name.to_string(),
                n => format!("{name} (part {} of {n})", part + 1),
            };
            let header = read_header(&what, &parts, part, &mut held, fetch).await?;
            order.extend(parts.chunks_of(part, header.data_offset()..len));
            headers.push(header);
        }
        Ok(Self {
            header: GgufHeader::join(headers).map_err(|e| context(e, name))?,
            name: name.to_string(),
            parts,
            held,
            order,
            consumed: 0,
            kept: HashMap::new(),
        })
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The chunks still to consume, in order: in each part, from the one its data starts
    /// in to its end.
    pub fn chunks_left(&self) -> Vec<usize> {
        self.order[self.consumed..].to_vec()
    }

    /// Chunk `n`, counting every part's chunks in order.
    pub fn chunk(&self, n: usize) -> Option<Chunk> {
        self.parts.chunk(n)
    }

    /// Bytes of every part.
    pub fn total_bytes(&self) -> u64 {
        self.parts.parts.iter().map(|&(len, _)| len).sum()
    }

    /// Bytes of every part up to the end of `chunk`, as if the parts were one file.
    pub fn bytes_through(&self, chunk: Chunk) -> u64 {
        let before: u64 = self.parts.parts[..chunk.part]
            .iter()
            .map(|&(len, _)| len)
            .sum();
        before + chunk.end
    }

    /// The chunks holding `info`'s bytes.
    fn chunks_of(&self, info: &TensorInfo) -> Range<usize> {
        self.parts.chunks_of(info.part(), bytes_of(info))
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
        let first = self.chunks_of(&self.header.tensors()[i]).start;
        if self.order[..self.consumed].contains(&first) && !self.kept.contains_key(&i) {
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
            let mut bytes = Vec::with_capacity(info.n_bytes());
            for n in self.chunks_of(info) {
                let chunk = self.chunk(n).expect("tensors fit the file");
                if !self.held.contains_key(&n) {
                    let fetched = fetch_checked(&self.name, fetch, chunk).await?;
                    self.held.insert(n, fetched);
                }
                bytes.extend_from_slice(&self.held[&n][overlap(chunk, bytes_of(info))]);
            }
            self.kept.insert(i, bytes);
        }
        Ok(())
    }

    /// Consumes chunk `n`, the next in order, copying out the bytes of the tensors kept.
    pub fn consume(&mut self, n: usize, bytes: &[u8]) -> Result<()> {
        let expected = self.order.get(self.consumed).copied();
        let chunk = self
            .chunk(n)
            .filter(|_| expected == Some(n))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: chunk {n} consumed out of order (expected {expected:?})",
                    self.name
                ))
            })?;
        check_len(&self.name, chunk, bytes.len())?;
        for (&i, kept) in &mut self.kept {
            let info = &self.header.tensors()[i];
            let range = bytes_of(info);
            let start = range.start;
            if info.part() != chunk.part
                || kept.len() == info.n_bytes()
                || range.end <= chunk.start
                || range.start >= chunk.end
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
        self.consumed += 1;
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

/// Part `part`'s header, read from its chunks (`name` says which part); those of its chunks
/// that also hold data go into `held`.
async fn read_header<F, Fut>(
    name: &str,
    parts: &Parts,
    part: usize,
    held: &mut BTreeMap<usize, Vec<u8>>,
    fetch: &mut F,
) -> Result<GgufHeader>
where
    F: FnMut(Chunk) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    let (len, first) = parts.parts[part];
    let mut prefix = Vec::new();
    let mut chunks = Vec::new();
    let header = loop {
        let chunk = parts
            .chunk(first + chunks.len())
            .filter(|c| c.part == part)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{name}: the file ends ({len} bytes) inside its GGUF header"
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
        chunks.push((chunk, bytes));
        match parse_header(&prefix, len) {
            Ok(Some(header)) => break header,
            Ok(None) => continue,
            Err(e) => return Err(context(e, name)),
        }
    };
    for (chunk, bytes) in chunks {
        if chunk.end > header.data_offset() {
            held.insert(chunk.index, bytes);
        }
    }
    Ok(header)
}

/// Where `info`'s bytes lie in its part.
fn bytes_of(info: &TensorInfo) -> Range<u64> {
    info.file_offset()..info.file_offset() + info.n_bytes() as u64
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ggml::GgmlType;
    use crate::formats::gguf::{GgufFile, Value};
    use crate::formats::gguf_writer::{write_split, GgufWriter, TensorSpec};

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

    /// A fetcher over `files` (a model's parts) that records what it was asked for;
    /// `cut(chunk)` drops bytes off a copy.
    fn server<'a>(
        files: &'a [&'a [u8]],
        asked: &'a mut Vec<Chunk>,
        cut: impl Fn(&Chunk) -> usize + 'a,
    ) -> impl FnMut(Chunk) -> std::future::Ready<Result<Vec<u8>>> + 'a {
        move |c: Chunk| {
            asked.push(c);
            let bytes = &files[c.part][c.start as usize..c.end as usize];
            std::future::ready(Ok(bytes[..bytes.len() - cut(&c)].to_vec()))
        }
    }

    /// Opens `files` in chunks of `chunk_bytes`, keeps every tensor, consumes every chunk
    /// and checks each tensor's bytes against `whole`'s; returns the chunks asked for.
    fn stream_all(files: &[&[u8]], chunk_bytes: u64, whole: &GgufFile) -> Vec<Chunk> {
        let lens: Vec<u64> = files.iter().map(|f| f.len() as u64).collect();
        let mut asked = Vec::new();
        let mut fetch = server(files, &mut asked, |_| 0);
        let open = ChunkedGguf::open("t.gguf", &lens, chunk_bytes, &mut fetch);
        let mut gguf = pollster::block_on(open).unwrap();
        assert_eq!(gguf.header().tensors().len(), whole.tensors().len());
        let early = whole.tensors()[2].name();
        pollster::block_on(gguf.read_first(&[early, "missing"], &mut fetch)).unwrap();
        assert!(gguf.is_complete(early));
        for t in whole.tensors() {
            gguf.keep(t.name()).unwrap();
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
            let mine = gguf.header().tensor(t.name()).unwrap();
            assert_eq!(
                gguf.tensor_data(mine).unwrap(),
                whole.tensor_bytes(t),
                "{}",
                t.name()
            );
            gguf.release(t.name());
        }
        assert_eq!(gguf.resident_bytes(), 0);
        assert_eq!(gguf.total_bytes(), lens.iter().sum::<u64>());
        asked
    }

    #[test]
    fn tensors_come_out_whole_from_chunks_they_straddle() {
        let file = sample();
        let whole = GgufFile::from_bytes(file.clone()).unwrap();
        let asked = stream_all(&[&file], 100, &whole);
        // Every chunk was fetched once (one of them ahead of its turn).
        let mut order: Vec<usize> = asked.iter().map(|c| c.index).collect();
        order.sort_unstable();
        assert_eq!(order, (0..file.len().div_ceil(100)).collect::<Vec<_>>());
        assert!(asked.iter().all(|c| !c.fresh && c.part == 0));
    }

    #[test]
    fn a_split_model_streams_part_by_part() {
        let whole = GgufFile::from_bytes(sample()).unwrap();
        let parts = write_split(&whole, 3, |_| Ok(Vec::new())).unwrap();
        let files: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let asked = stream_all(&files, 64, &whole);
        for (p, file) in files.iter().enumerate() {
            let mut mine: Vec<u64> = asked
                .iter()
                .filter(|c| c.part == p)
                .map(|c| c.start)
                .collect();
            mine.sort_unstable();
            let all: Vec<u64> = (0..file.len() as u64).step_by(64).collect();
            assert_eq!(mine, all, "part {p}");
        }
        // A split model given as one file is refused.
        let mut asked = Vec::new();
        let mut fetch = server(&files, &mut asked, |_| 0);
        let one = [files[0].len() as u64];
        let open = ChunkedGguf::open("t.gguf", &one, 64, &mut fetch);
        let err = pollster::block_on(open).err().unwrap().to_string();
        assert!(
            err.contains("1 parts given, and the first says split.count 3"),
            "{err}"
        );
    }

    #[test]
    fn a_short_chunk_is_fetched_again_fresh_then_refused() {
        let file = sample();
        let len = file.len() as u64;
        let files = [file.as_slice()];
        let mut asked = Vec::new();
        let mut once = server(&files, &mut asked, |c| {
            usize::from(c.index == 1 && !c.fresh)
        });
        assert!(pollster::block_on(ChunkedGguf::open("t.gguf", &[len], 100, &mut once)).is_ok());
        drop(once);
        let again = Chunk {
            part: 0,
            index: 1,
            start: 100,
            end: 200,
            fresh: true,
        };
        assert!(asked.contains(&again), "{asked:?}");

        let mut always = server(&files, &mut asked, |c| usize::from(c.index == 1));
        let err = pollster::block_on(ChunkedGguf::open("t.gguf", &[len], 100, &mut always))
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
            let files = [bytes];
            let mut fetch = server(&files, asked, |_| 0);
            pollster::block_on(ChunkedGguf::open("t.gguf", &[len], 64, &mut fetch))
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
