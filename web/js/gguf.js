// A GGUF file fetched by URL in chunks, for the engine's GGUF loader (Engine.loadGguf).
//
// The engine asks for chunks (bytes start..end of the file), a few at a time, in file
// order. Each comes from Cache Storage when a complete copy is there, else from the
// network with a Range request, and is stored once complete, so a reload reads nothing of
// the file and an interrupted download resumes from the chunks it has. A server that
// ignores Range answers the first request with the whole file: that body is then read
// once, as a stream, and cut into chunks as the engine asks for them.
//
// The cache holds, next to the chunks, a small manifest per URL (size, ETag,
// Last-Modified, chunk size); a changed file on the server (another size or validator)
// drops the cached chunks.

/** Bytes per chunk: one Range request and one cache entry each. */
export const CHUNK_BYTES = 4 << 20;

/** How often a chunk whose transfer broke off is asked for again before the load fails. */
const ATTEMPTS = 3;

/** Whether `url` names a GGUF file by its path (`.../model.gguf`, any query). */
export function isGgufPath(url) {
  return new URL(url).pathname.toLowerCase().endsWith(".gguf");
}

const SPLIT_NAME = /-(\d{5})-of-(\d{5})\.gguf$/i;

/**
 * The URLs of a GGUF model's files: `url` alone, or for the first part of a split model
 * (`NAME-00001-of-0000N.gguf`) every part's, in order. Another part's URL is an error.
 */
export function ggufParts(url, errors) {
  const u = new URL(url);
  const m = SPLIT_NAME.exec(u.pathname);
  if (!m || Number(m[2]) <= 1) return [url];
  if (m[1] !== "00001") {
    throw errors.load(`${url} is part ${Number(m[1])} of ${Number(m[2])} of a split model: give the first part's URL (-00001-of-${m[2]}.gguf)`);
  }
  return Array.from({ length: Number(m[2]) }, (_, i) => {
    const part = new URL(u.href);
    part.pathname = u.pathname.replace(SPLIT_NAME, `-${String(i + 1).padStart(5, "0")}-of-${m[2]}.gguf`);
    return part.href;
  });
}

/** Whether the resource at `url` starts with GGUF's magic (a URL without `.gguf`). */
export async function startsWithGguf(url) {
  try {
    const response = await fetch(url, { headers: { Range: "bytes=0-3" }, cache: "no-store" });
    if (!response.ok || !response.body) return false;
    const reader = response.body.getReader();
    const { value } = await reader.read();
    reader.cancel().catch(() => {});
    return isMagic(value);
  } catch {
    return false;
  }
}

function isMagic(bytes) {
  return !!bytes && bytes.length >= 4 && bytes[0] === 0x47 && bytes[1] === 0x47 && bytes[2] === 0x55 && bytes[3] === 0x46;
}

/** The cache key of something kept for `url` (the URL with a `glim-` query parameter). */
function cacheKey(url, name, value) {
  const key = new URL(url);
  key.hash = "";
  key.searchParams.append(`glim-${name}`, value);
  return key.href;
}
const chunkKey = (url, start, end) => cacheKey(url, "bytes", `${start}-${end}`);
const manifestKey = (url) => cacheKey(url, "gguf", "manifest");

/** Whether `key` is one of the cache entries kept for `url`. */
export function isCacheKeyOf(url, key) {
  const u = new URL(key);
  const ours = [...u.searchParams.keys()].some((k) => k.startsWith("glim-"));
  for (const k of [...u.searchParams.keys()]) if (k.startsWith("glim-")) u.searchParams.delete(k);
  const plain = new URL(url);
  plain.hash = "";
  return ours && u.href === plain.href;
}

async function readManifest(cache, url) {
  const hit = cache && (await cache.match(manifestKey(url)));
  if (!hit) return null;
  try {
    const m = await hit.json();
    return Number.isSafeInteger(m.size) ? m : null;
  } catch {
    return null;
  }
}

/** The chunks of a `size`-byte file, as [start, end) pairs. */
function chunkRanges(size) {
  const out = [];
  for (let start = 0; start < size; start += CHUNK_BYTES) out.push([start, Math.min(start + CHUNK_BYTES, size)]);
  return out;
}

/** Whether every chunk of the GGUF file at `url` is in `cache`. */
export async function ggufInCache(cache, url) {
  const manifest = await readManifest(cache, url);
  if (manifest?.chunkBytes !== CHUNK_BYTES) return false;
  for (const [start, end] of chunkRanges(manifest.size)) {
    if (!(await cache.match(chunkKey(url, start, end)))) return false;
  }
  return true;
}

/** Removes what the cache holds of the GGUF file at `url`. */
export async function deleteGgufFromCache(cache, url) {
  for (const request of await cache.keys()) {
    if (isCacheKeyOf(url, request.url)) await cache.delete(request);
  }
}

/** `Content-Range: bytes a-b/total` as numbers, or null. */
function contentRange(response) {
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(response.headers.get("content-range") ?? "");
  return m ? { start: Number(m[1]), end: Number(m[2]) + 1, total: Number(m[3]) } : null;
}

/** What identifies a version of the file: size and validators. */
function identity(response, size) {
  return { size, etag: response.headers.get("etag"), lastModified: response.headers.get("last-modified") };
}

function sameFile(a, b) {
  return a.size === b.size && (a.etag ?? null) === (b.etag ?? null) && (a.lastModified ?? null) === (b.lastModified ?? null);
}

/** Reads a response body whole, counting bytes as they arrive. */
async function readAll(response, onBytes) {
  const parts = [];
  let n = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    n += value.length;
    onBytes(value.length);
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/**
 * A file's body read once, front to back, and cut into the chunks asked for. Chunks read
 * past on the way to the one asked for are kept until asked for.
 */
class BodyStream {
  #reader; #pos = 0; #parts = []; #have = 0; #kept = new Map(); #turn = Promise.resolve(); #done = false;
  constructor(response) { this.#reader = response.body.getReader(); }

  /** Bytes start..end, or null when the stream has passed them. */
  read(start, end, onBytes) {
    const run = this.#turn.then(() => this.#read(start, end, onBytes));
    this.#turn = run.catch(() => {});
    return run;
  }

  async #read(start, end, onBytes) {
    const kept = this.#kept.get(start);
    if (kept) { this.#kept.delete(start); return kept; }
    if (start < this.#pos) return null;
    for (;;) {
      // Whole chunks at the front of what has been read go out or are kept.
      while (this.#have >= CHUNK_BYTES || (this.#done && this.#have)) {
        const n = Math.min(CHUNK_BYTES, this.#have);
        const piece = this.#take(n);
        const at = this.#pos;
        this.#pos += n;
        if (at === start) return piece.subarray(0, end - start);
        if (at > start) return null;
        this.#kept.set(at, piece);
      }
      if (this.#done) return new Uint8Array(0);
      const { done, value } = await this.#reader.read();
      if (done) { this.#done = true; continue; }
      onBytes(value.length);
      this.#parts.push(value);
      this.#have += value.length;
    }
  }

  /** The first `n` bytes read and not yet taken, copied once into one buffer. */
  #take(n) {
    const out = new Uint8Array(n);
    for (let at = 0; at < n;) {
      const part = this.#parts[0];
      const k = Math.min(part.length, n - at);
      out.set(part.subarray(0, k), at);
      at += k;
      if (k === part.length) this.#parts.shift();
      else this.#parts[0] = part.subarray(k);
    }
    this.#have -= n;
    return out;
  }

  cancel() { this.#reader.cancel().catch(() => {}); }
}

/**
 * Opens the GGUF file at `url` for the engine: its size (from the cache's manifest, or the
 * first request) and `fetchChunk({ start, end, fresh })`. `store` is `{ cache, refuse(e) }`
 * (cache null when the browser gives none); `onBytes(n, fromCache)` counts bytes as they
 * come. `errors.load(message)` makes the error thrown for a file that cannot be read.
 */
export async function openGguf(url, store, onBytes, errors) {
  let manifest = store.cache ? await readManifest(store.cache, url) : null;
  if (manifest && manifest.chunkBytes !== CHUNK_BYTES) {
    // Cut by another version of the package: its chunks are no use to this one.
    await deleteGgufFromCache(store.cache, url);
    manifest = null;
  }
  if (manifest) {
    // Is the cached copy still the server's file? A HEAD request reads none of it; with no
    // network, the cache is what there is.
    try {
      const head = await fetch(url, { method: "HEAD", cache: "no-store" });
      const size = Number(head.headers.get("content-length"));
      if (head.ok && Number.isSafeInteger(size) && size > 0 && !sameFile(manifest, identity(head, size))) {
        await deleteGgufFromCache(store.cache, url);
        manifest = null;
      }
    } catch {}
  }

  let first = null; // chunk 0 as the first request returned it
  let body = null; // BodyStream where the server ignores Range
  let ranges = manifest ? manifest.ranges : true;
  if (!manifest) {
    const response = await get(url, { headers: { Range: `bytes=0-${CHUNK_BYTES - 1}` }, cache: "no-store" }, errors);
    let size;
    if (response.status === 206) {
      const range = contentRange(response);
      if (!range || range.start !== 0) throw errors.load(`${url}: the server answered a Range request with ${response.headers.get("content-range") ?? "no Content-Range"}`);
      size = range.total;
      first = await readAll(response, (n) => onBytes(n, false));
    } else {
      // 200: the whole file follows. Its length must be known to check the header.
      ranges = false;
      size = Number(response.headers.get("content-length"));
      if (!Number.isSafeInteger(size) || !response.headers.get("content-length")) {
        response.body?.cancel();
        throw errors.load(`${url}: the server supports neither Range requests nor Content-Length, so the file's size is unknown`);
      }
      body = new BodyStream(response);
      first = await body.read(0, Math.min(CHUNK_BYTES, size), (n) => onBytes(n, false));
    }
    if (!isMagic(first)) {
      const type = response.headers.get("content-type") ?? "no content type";
      const text = new TextDecoder().decode(first.subarray(0, 24)).replace(/[^\x20-\x7e]/g, "?");
      body?.cancel();
      throw errors.load(`${url} is not a GGUF file: the server sent ${type}, starting ${JSON.stringify(text)}`);
    }
    manifest = { ...identity(response, size), chunkBytes: CHUNK_BYTES, ranges };
    if (store.cache) {
      try {
        await store.cache.put(manifestKey(url), new Response(JSON.stringify(manifest)));
      } catch (e) { store.refuse(e); }
    }
  }

  const network = async ({ start, end }) => {
    if (start === 0 && first) {
      const bytes = first;
      first = null;
      return bytes;
    }
    if (body) {
      const bytes = await body.read(start, end, (n) => onBytes(n, false));
      if (bytes) return bytes;
      // Passed already (a copy asked for again): read the file anew from the start.
      body.cancel();
    }
    if (!ranges) {
      body = new BodyStream(await get(url, { cache: "no-store" }, errors));
      return (await body.read(start, end, (n) => onBytes(n, false))) ?? new Uint8Array(0);
    }
    const response = await get(url, { headers: { Range: `bytes=${start}-${end - 1}` }, cache: "no-store" }, errors);
    const range = contentRange(response);
    if (response.status !== 206 || !range || range.start !== start) {
      response.body?.cancel();
      throw errors.load(`${url}: asked for bytes ${start}-${end - 1}, the server sent HTTP ${response.status} ${response.headers.get("content-range") ?? ""}`.trim());
    }
    return readAll(response, (n) => onBytes(n, false));
  };

  const fetchChunk = async ({ start, end, fresh }) => {
    const key = chunkKey(url, start, end);
    if (store.cache) {
      if (fresh) {
        await store.cache.delete(key);
      } else {
        const hit = await store.cache.match(key);
        if (hit) {
          const bytes = new Uint8Array(await hit.arrayBuffer());
          onBytes(bytes.length, true);
          if (bytes.length === end - start) return bytes;
        }
      }
    }
    let bytes;
    for (let attempt = 1; ; attempt++) {
      try {
        bytes = await network({ start, end });
        break;
      } catch (e) {
        // A transfer cut off (network error, not an HTTP answer): ask again.
        if (e?.name === "ModelLoadError" || attempt >= ATTEMPTS) throw e?.name === "ModelLoadError" ? e : errors.load(`${url}: reading bytes ${start}-${end - 1} failed: ${e?.message ?? e}`);
        if (body) { body.cancel(); body = null; }
      }
    }
    // Only a complete chunk is kept: a short one is the engine's to fetch again.
    if (bytes.length === end - start && store.cache) {
      store.cache.put(key, new Response(bytes)).catch((e) => store.refuse(e));
    }
    return bytes;
  };

  return { size: manifest.size, fetchChunk, close: () => body?.cancel() };
}

/** A GET that answered 200 or 206, or the error that says why not. */
async function get(url, init, errors) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw errors.load(`fetching ${url} failed: ${e.message || e}`);
  }
  if (response.status === 404) throw errors.load(`${url} does not exist (HTTP 404)`);
  if (!response.ok) throw errors.load(`fetching ${url} failed: HTTP ${response.status}`);
  return response;
}
