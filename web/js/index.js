// glim-llm: glim's engine in the browser, with WebLLM's API shape.
//
// This file is transport only: it fetches a model folder's files or a GGUF file's chunks
// (gguf.js), caching them with the Cache Storage API, hands them to the wasm engine, turns
// its errors into classes, and carries requests and streamed chunks to and from a Web
// Worker. Requests are checked, rendered, generated and answered inside the engine (crate
// glim, through glim_web.js).

import initWasm, { Engine as WasmEngine } from "./glim_web.js";
import {
  CHUNK_BYTES, deleteGgufFromCache, ggufInCache, ggufParts, isGgufPath, openGguf, startsWithGguf,
} from "./gguf.js";

// ---------------------------------------------------------------------------- errors

/** This browser (or context) offers no WebGPU adapter. */
export class WebGPUUnavailableError extends Error {
  constructor(message) { super(message); this.name = "WebGPUUnavailableError"; }
}
/** The model needs more than this GPU allows (memory, binding or buffer size). */
export class ModelTooLargeError extends Error {
  constructor(message) { super(message); this.name = "ModelTooLargeError"; }
}
/** The GPU device was lost (driver reset, tab in background too long, ...). */
export class DeviceLostError extends Error {
  constructor(message) { super(message); this.name = "DeviceLostError"; }
}
/** The model folder could not be fetched or is not a usable model. */
export class ModelLoadError extends Error {
  constructor(message) { super(message); this.name = "ModelLoadError"; }
}
/** A request with a missing, unknown or invalid field. */
export class InvalidRequestError extends Error {
  constructor(message) { super(message); this.name = "InvalidRequestError"; }
}

const ERROR_CLASSES = {
  WebGPUUnavailableError, ModelTooLargeError, DeviceLostError, ModelLoadError, InvalidRequestError,
};

// Hints that say what to do, added to the engine's own message.
const ERROR_HINTS = {
  WebGPUUnavailableError:
    "Use a browser with WebGPU (Chrome or Edge 113+, or Chromium with --enable-unsafe-webgpu), on a page served over https or from localhost.",
  ModelTooLargeError:
    "Try a smaller model or a shorter context (contextWindowSize), or close other tabs using the GPU.",
  DeviceLostError: "The GPU was reset. Create the engine again to continue.",
};

/** Throws WebGPUUnavailableError where this context has no WebGPU at all. */
function requireWebGPU() {
  if (typeof navigator === "undefined" || !navigator.gpu) {
    throw new WebGPUUnavailableError(`this browser has no WebGPU (navigator.gpu is missing). ${ERROR_HINTS.WebGPUUnavailableError}`);
  }
}

/** An error from the engine or a worker as an instance of its class. */
function typed(e) {
  if (e && ERROR_CLASSES[e.name] && !(e instanceof ERROR_CLASSES[e.name])) {
    const hint = ERROR_HINTS[e.name];
    const message = hint && !String(e.message).includes(hint) ? `${e.message}. ${hint}` : e.message;
    return new ERROR_CLASSES[e.name](message);
  }
  if (e instanceof Error) return e;
  return new Error(String(e));
}

// ---------------------------------------------------------------------------- the adapter

// Software WebGPU adapters: Chromium's SwiftShader, Windows' WARP, Mesa's lavapipe.
const SOFTWARE_ADAPTER = /swiftshader|warp|basic render|llvmpipe|lavapipe|software/i;

/**
 * The WebGPU adapter this context gets, before anything is loaded: `{ vendor, architecture,
 * device, description, software, note }`. `software` is true for an adapter that runs on
 * the CPU, and `note` then says what to expect. Throws WebGPUUnavailableError without one.
 */
export async function adapterInfo() {
  requireWebGPU();
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  if (!adapter) throw new WebGPUUnavailableError(`this browser offers no WebGPU adapter. ${ERROR_HINTS.WebGPUUnavailableError}`);
  const info = adapter.info ?? {};
  const fields = {
    vendor: info.vendor ?? "", architecture: info.architecture ?? "", device: info.device ?? "", description: info.description ?? "",
  };
  const software = !!(info.isFallbackAdapter ?? adapter.isFallbackAdapter)
    || SOFTWARE_ADAPTER.test(Object.values(fields).join(" "));
  const name = fields.description || [fields.vendor, fields.architecture].filter(Boolean).join(" ") || "unknown";
  const note = software
    ? `The only WebGPU adapter here is a software one (${name}): it runs on the CPU, about a hundred times slower than a GPU. Expect minutes per answer (on 2 cores a 135M model prefills about 1.3 tokens/s and writes about 0.6 token/s), and enable hardware acceleration or use a browser with GPU access for real use.`
    : null;
  return { ...fields, software, note };
}

// ---------------------------------------------------------------------------- fetching

const CACHE_NAME = "glim-llm-models";
const INDEX_FILES = ["tensor-cache.json", "ndarray-cache.json"];

function absoluteUrl(modelUrl) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  return new URL(modelUrl, base).href;
}

function folderUrl(modelUrl) {
  const url = absoluteUrl(modelUrl);
  return url.endsWith("/") ? url : url + "/";
}

/**
 * Whether `modelUrl` is a GGUF file rather than a model folder: its path ends in `.gguf`,
 * or (a path ending neither in `.gguf` nor in `/`) its first four bytes are `GGUF`.
 */
async function isGguf(modelUrl) {
  const url = absoluteUrl(modelUrl);
  if (isGgufPath(url)) return true;
  return !new URL(url).pathname.endsWith("/") && (await startsWithGguf(url));
}

async function openCache() {
  try {
    if (typeof caches === "undefined") return { cache: null, why: "this context has no Cache Storage" };
    return { cache: await caches.open(CACHE_NAME), why: "" };
  } catch (e) {
    return { cache: null, why: `the browser refused Cache Storage (${e.message || e})` };
  }
}

async function fetchOk(url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ModelLoadError(`fetching ${url} failed: ${e.message || e}`);
  }
  if (!response.ok) throw new ModelLoadError(`fetching ${url} failed: HTTP ${response.status}`);
  return response;
}

/**
 * A small file of the folder: from the network (it says what changed), kept in the cache
 * for offline use and for hasModelInCache; from the cache when the network fails.
 * `optional` files that do not exist give null.
 */
async function fetchSmall(store, url, optional = false) {
  try {
    const response = await fetch(url, { cache: "no-cache" });
    if (response.ok) {
      const bytes = new Uint8Array(await response.arrayBuffer());
      if (store.cache) {
        try { await store.cache.put(url, new Response(bytes)); } catch (e) { store.refuse(e); }
      }
      return bytes;
    }
    if (response.status === 404 && optional) return null;
    if (response.status === 404) throw new ModelLoadError(`${url} does not exist (HTTP 404): is this a model folder?`);
  } catch (e) {
    if (e instanceof ModelLoadError) throw e;
  }
  const hit = store.cache && (await store.cache.match(url));
  if (hit) return new Uint8Array(await hit.arrayBuffer());
  if (optional) return null;
  throw new ModelLoadError(`fetching ${url} failed, and it is not in the cache`);
}

/** Reads a response body into one buffer, counting bytes as they arrive. */
async function readBody(response, expected, onBytes) {
  const out = new Uint8Array(expected);
  let at = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (at + value.length > expected) {
      // Longer than the index says: the engine's size check will name it.
      const grown = new Uint8Array(at + value.length);
      grown.set(out.subarray(0, at));
      grown.set(value, at);
      return grown;
    }
    out.set(value, at);
    at += value.length;
    onBytes(value.length);
  }
  return at === expected ? out : out.subarray(0, at);
}

const decoder = new TextDecoder();

// ---------------------------------------------------------------------------- the engine

let wasmReady = null;

/**
 * Loads the model at `modelUrl` (a model folder, or a GGUF file: see isGguf) and returns
 * an engine running in this thread.
 * `options.initProgressCallback({ progress, timeElapsed, text, loadedBytes, totalBytes })`
 * follows the load; `options.contextWindowSize` sets the KV cache length (default 2048);
 * `options.parallelFetches` how many shards or chunks download at once (default 4);
 * `options.kernels` ("gpu" or "cpu") which kernel set runs (default: "cpu" on a software
 * adapter, else "gpu"); `options.subgroups: false` keeps the device from subgroup
 * operations; `options.gemv` ("TEAM,TEAMS,OUT1,OUT4,OUT8", as GLIM_GEMV natively) launches
 * the matrix-vector kernel otherwise, for sweeps.
 */
export async function CreateEngine(modelUrl, options = {}) {
  requireWebGPU();
  const started = performance.now();
  const report = (progress, text, loadedBytes = 0, totalBytes = 0) => {
    options.initProgressCallback?.({
      progress, text, loadedBytes, totalBytes, timeElapsed: (performance.now() - started) / 1000,
    });
  };
  report(0, "Starting");
  wasmReady ??= initWasm();
  await wasmReady;

  const opened = await openCache();
  const store = {
    cache: opened.cache,
    note: opened.why,
    refuse(e) {
      // Quota exceeded or private mode: keep loading, without caching.
      this.cache = null;
      this.note = `not caching: the browser refused to store more (${e.message || e})`;
    },
  };
  // Progress counts bytes as they arrive, from the network or the cache, and as they
  // reach the GPU.
  const counts = { loaded: 0, fromCache: 0, uploaded: 0, total: 0, detail: "" };
  const tell = () => {
    const { loaded, fromCache, uploaded, total } = counts;
    const parts = [`Loading ${mb(loaded)} / ${mb(total)} MB`];
    if (fromCache) parts.push(`${mb(fromCache)} MB from cache`);
    parts.push(counts.detail);
    if (store.note) parts.push(store.note);
    const progress = total ? 0.9 * Math.min(loaded, total) / total + 0.1 * uploaded / total : 0;
    report(Math.min(progress, 0.999), parts.filter(Boolean).join(", "), Math.min(loaded, total), total);
  };
  // A software adapter runs the kernels glim runs on lavapipe, built for a CPU's SIMD lanes
  // rather than a GPU's warps: the same answers, decoding 2.4x faster on SwiftShader.
  const software = options.kernels ? false : (await adapterInfo().catch(() => null))?.software;
  const settings = software ? { ...options, kernels: "cpu" } : options;
  let wasm;
  try {
    const load = (await isGguf(modelUrl))
      ? () => loadGguf(absoluteUrl(modelUrl), settings, store, counts, tell)
      : () => loadFolder(folderUrl(modelUrl), settings, store, counts, tell);
    wasm = options.subgroups === false ? await load() : await withSubgroups(load);
  } catch (e) {
    throw typed(e);
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const finished = [`Loaded in ${seconds} s`];
  if (counts.fromCache) finished.push(`${mb(counts.fromCache)} of ${mb(counts.total)} MB from cache`);
  if (store.note) finished.push(store.note);
  report(1, finished.join(", "), counts.total, counts.total);
  return new Engine(wasm);
}

/**
 * Runs `open` (a load, whose WASM opens the WebGPU device) with `subgroups` among the
 * device's features wherever the adapter has them. wgpu has no name for that feature on the
 * web and never asks for it, so `GPUAdapter.requestDevice` adds it, for the one call the
 * engine makes, and is put back as it was.
 */
async function withSubgroups(open) {
  const proto = globalThis.GPUAdapter?.prototype;
  const original = proto?.requestDevice;
  if (!original) return open();
  const restore = () => {
    if (proto.requestDevice === asking) proto.requestDevice = original;
  };
  function asking(descriptor = {}) {
    restore();
    const features = [...(descriptor.requiredFeatures ?? [])];
    if (this.features.has("subgroups") && !features.includes("subgroups")) features.push("subgroups");
    return original.call(this, { ...descriptor, requiredFeatures: features });
  }
  proto.requestDevice = asking;
  try {
    return await open();
  } finally {
    restore();
  }
}

/** The name a model's responses carry: `options.modelId`, else the URL's last segment. */
function modelName(url, options) {
  return options.modelId ?? new URL(url).pathname.split("/").filter(Boolean).pop() ?? url;
}

const ERRORS = { load: (message) => new ModelLoadError(message) };

/** Loads the GGUF file at `url` (every part of a split model) onto the GPU, chunk by chunk. */
async function loadGguf(url, options, store, counts, tell) {
  const onBytes = (n, fromCache) => {
    counts.loaded += n;
    if (fromCache) counts.fromCache += n;
    tell();
  };
  const parts = [];
  try {
    for (const part of ggufParts(url, ERRORS)) {
      parts.push(await openGguf(part, store, onBytes, ERRORS));
      counts.total = parts.reduce((sum, p) => sum + p.size, 0);
    }
    return await WasmEngine.loadGguf({
      modelId: modelName(url, options).replace(/(-00001-of-\d{5})?\.gguf$/i, ""),
      url,
      fileSizes: parts.map((p) => p.size),
      chunkBytes: CHUNK_BYTES,
      contextWindowSize: options.contextWindowSize,
      parallelFetches: options.parallelFetches,
      kernels: options.kernels,
    gemv: options.gemv,
      fetchChunk: (chunk) => parts[chunk.part].fetchChunk(chunk),
      onProgress: (p) => {
        counts.uploaded = p.bytesDone;
        counts.detail = `${mb(p.bytesDone)} MB read into the GPU`;
        tell();
      },
    });
  } finally {
    for (const p of parts) p.close();
  }
}

const mb = (n) => (n / 1e6).toFixed(1);

/** Loads the model folder at `base` onto the GPU, shard by shard. */
async function loadFolder(base, options, store, counts, tell) {
  let indexText = null;
  for (const name of INDEX_FILES) {
    const bytes = await fetchSmall(store, base + name, true);
    if (bytes) { indexText = decoder.decode(bytes); break; }
  }
  if (indexText === null) {
    throw new ModelLoadError(`${base} has neither tensor-cache.json nor ndarray-cache.json: not an MLC model folder`);
  }
  let index;
  try { index = JSON.parse(indexText); } catch (e) { throw new ModelLoadError(`${base}tensor-cache.json: ${e.message}`); }
  const shards = Array.isArray(index.records) ? index.records : [];
  const chatConfig = decoder.decode(await fetchSmall(store, base + "mlc-chat-config.json"));
  const tokenizer = await fetchSmall(store, base + "tokenizer.json");
  const tokenizerConfig = await fetchSmall(store, base + "tokenizer_config.json", true);

  counts.total = shards.reduce((sum, s) => sum + (Number(s.nbytes) || 0), 0);
  counts.detail = `0 / ${shards.length} shards on the GPU`;
  // Network copies wait here until the engine has checked them; only then are they cached,
  // so a broken download is never kept.
  const unchecked = new Map();
  const fetchShard = async (n, fresh) => {
    const record = shards[n];
    const url = base + record.dataPath;
    if (fresh) {
      // The first copy failed its size or md5 check: drop it everywhere and fetch anew.
      if (store.cache) await store.cache.delete(url);
    } else if (store.cache) {
      const hit = await store.cache.match(url);
      if (hit) {
        const bytes = new Uint8Array(await hit.arrayBuffer());
        counts.loaded += bytes.length;
        counts.fromCache += bytes.length;
        tell();
        return bytes;
      }
    }
    const response = await fetchOk(url, { cache: fresh ? "reload" : "default" });
    const bytes = await readBody(response, Number(record.nbytes) || 0, (k) => { counts.loaded += k; tell(); });
    unchecked.set(n, { url, bytes });
    return bytes;
  };
  const onShardVerified = (n) => {
    const pending = unchecked.get(n);
    unchecked.delete(n);
    if (pending && store.cache) {
      store.cache.put(pending.url, new Response(pending.bytes)).catch((e) => store.refuse(e));
    }
  };
  const onProgress = (p) => {
    counts.uploaded = p.bytesDone;
    counts.detail = `${p.shardsDone} / ${shards.length} shards on the GPU`;
    tell();
  };
  return WasmEngine.load({
    modelId: options.modelId ?? base.split("/").filter(Boolean).pop(),
    baseUrl: base,
    chatConfig,
    tensorCache: indexText,
    tokenizer,
    tokenizerConfig: tokenizerConfig ? decoder.decode(tokenizerConfig) : undefined,
    contextWindowSize: options.contextWindowSize,
    parallelFetches: options.parallelFetches,
    kernels: options.kernels,
    gemv: options.gemv,
    fetchShard,
    onShardVerified,
    onProgress,
  });
}

/** An async iterable of chunks fed by callbacks, ending when `done` settles. */
function chunkStream(start) {
  const queue = [];
  let wake = null, finished = false, failure = null;
  const push = (chunk) => { queue.push(chunk); wake?.(); };
  start(push).then(
    () => { finished = true; wake?.(); },
    (e) => { failure = typed(e); finished = true; wake?.(); },
  );
  return {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (queue.length) { yield queue.shift(); continue; }
        if (failure) throw failure;
        if (finished) return;
        await new Promise((resolve) => { wake = resolve; });
        wake = null;
      }
    },
  };
}

class Engine {
  #wasm;
  constructor(wasm) {
    this.#wasm = wasm;
    this.chat = { completions: { create: (request) => this.#create(request, true) } };
    this.completions = { create: (request) => this.#create(request, false) };
  }

  async #create(request, chat) {
    const body = JSON.stringify(request ?? {});
    const run = (onChunk) => (chat ? this.#wasm.chatCompletion(body, onChunk) : this.#wasm.completion(body, onChunk));
    if (request?.stream) {
      return chunkStream((push) => run((text) => push(JSON.parse(text))));
    }
    try {
      return JSON.parse(await run(() => {}));
    } catch (e) {
      throw typed(e);
    }
  }

  /** Stops the answer being generated; its stream ends with finish_reason "abort". */
  interruptGenerate() { this.#wasm.interrupt(); }
  /** Forgets the conversation's KV cache. */
  async resetChat() {
    try { this.#wasm.reset(); } catch (e) { throw typed(e); }
  }
  async runtimeStatsText() { return this.#wasm.runtimeStatsText(); }
  /** The adapter and model: { model, format, precision, context, weightBytes, adapter,
   * software, note, ... }. */
  async info() {
    const adapter = await adapterInfo().catch(() => null);
    const own = JSON.parse(this.#wasm.info());
    return {
      ...own,
      adapter: own.adapter || adapter?.description || [adapter?.vendor, adapter?.architecture].filter(Boolean).join(" "),
      adapterInfo: adapter,
      software: adapter?.software ?? false,
      note: adapter?.note ?? null,
    };
  }
  /** Frees the GPU memory; the engine cannot be used afterwards. */
  async unload() { this.#wasm.unload(); }
}

// ---------------------------------------------------------------------------- the worker

/** Runs the engine inside a Web Worker: `self.onmessage = (m) => handler.onmessage(m)`. */
export class WebWorkerEngineHandler {
  #engine = null;
  #post;
  constructor(post = (message) => self.postMessage(message)) { this.#post = post; }

  async onmessage(event) {
    const { id, kind } = event.data ?? {};
    const reply = (message) => this.#post({ id, ...message });
    const fail = (e) => reply({ kind: "error", error: { name: e?.name ?? "Error", message: String(e?.message ?? e) } });
    try {
      switch (kind) {
        case "load": {
          await this.#engine?.unload();
          this.#engine = null;
          this.#engine = await CreateEngine(event.data.modelUrl, {
            ...event.data.options,
            initProgressCallback: (report) => reply({ kind: "progress", report }),
          });
          return reply({ kind: "result", value: null });
        }
        case "create": {
          const engine = this.#need();
          const target = event.data.chat ? engine.chat.completions : engine.completions;
          const result = await target.create(event.data.request);
          if (!event.data.request?.stream) return reply({ kind: "result", value: result });
          for await (const chunk of result) reply({ kind: "chunk", chunk });
          return reply({ kind: "result", value: null });
        }
        case "interrupt": return this.#engine?.interruptGenerate();
        case "reset": await this.#need().resetChat(); return reply({ kind: "result", value: null });
        case "stats": return reply({ kind: "result", value: await this.#need().runtimeStatsText() });
        case "info": return reply({ kind: "result", value: await this.#need().info() });
        case "unload": await this.#engine?.unload(); this.#engine = null; return reply({ kind: "result", value: null });
        default: throw new Error(`glim-llm worker: unknown message kind ${JSON.stringify(kind)}`);
      }
    } catch (e) {
      fail(e);
    }
  }

  #need() {
    if (!this.#engine) throw new ModelLoadError("no model is loaded in this worker");
    return this.#engine;
  }
}

/** The engine API, answered by a WebWorkerEngineHandler in `worker`. */
class WebWorkerEngine {
  #worker;
  #next = 1;
  #pending = new Map();
  constructor(worker) {
    this.#worker = worker;
    worker.addEventListener("message", (event) => this.#receive(event.data));
    worker.addEventListener("error", (event) => {
      const e = new ModelLoadError(`the worker failed: ${event.message || "it could not start"}`);
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
    });
    this.chat = { completions: { create: (request) => this.#create(request, true) } };
    this.completions = { create: (request) => this.#create(request, false) };
  }

  #receive(message) {
    const pending = this.#pending.get(message?.id);
    if (!pending) return;
    switch (message.kind) {
      case "progress": return pending.onProgress?.(message.report);
      case "chunk": return pending.onChunk?.(message.chunk);
      case "result": this.#pending.delete(message.id); return pending.resolve(message.value);
      case "error": this.#pending.delete(message.id); return pending.reject(typed(message.error));
    }
  }

  #call(message, handlers = {}) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, ...handlers });
      this.#worker.postMessage({ id, ...message });
    });
  }

  load(modelUrl, options = {}) {
    const { initProgressCallback, ...rest } = options;
    return this.#call({ kind: "load", modelUrl: absoluteUrl(modelUrl), options: rest }, { onProgress: initProgressCallback });
  }

  async #create(request, chat) {
    if (request?.stream) {
      return chunkStream((push) => this.#call({ kind: "create", chat, request }, { onChunk: push }));
    }
    return this.#call({ kind: "create", chat, request });
  }

  interruptGenerate() { this.#worker.postMessage({ id: 0, kind: "interrupt" }); }
  resetChat() { return this.#call({ kind: "reset" }); }
  runtimeStatsText() { return this.#call({ kind: "stats" }); }
  info() { return this.#call({ kind: "info" }); }
  unload() { return this.#call({ kind: "unload" }); }
}

/** CreateEngine's engine, running in `worker` (whose script runs a WebWorkerEngineHandler). */
export async function CreateWebWorkerEngine(worker, modelUrl, options = {}) {
  requireWebGPU();
  const engine = new WebWorkerEngine(worker);
  await engine.load(modelUrl, options);
  return engine;
}

// ---------------------------------------------------------------------------- the cache

async function cachedIndex(cache, base) {
  for (const name of INDEX_FILES) {
    const hit = await cache.match(base + name);
    if (hit) {
      try { return JSON.parse(await hit.text()); } catch { return null; }
    }
  }
  return null;
}

/** Whether every file of the model folder, or every byte of the GGUF file, at `modelUrl`
 * is in the cache. */
export async function hasModelInCache(modelUrl) {
  const { cache } = await openCache();
  if (!cache) return false;
  const url = absoluteUrl(modelUrl);
  if (isGgufPath(url)) {
    for (const part of ggufParts(url, ERRORS)) if (!(await ggufInCache(cache, part))) return false;
    return true;
  }
  if (await ggufInCache(cache, url)) return true;
  const base = folderUrl(modelUrl);
  const index = await cachedIndex(cache, base);
  if (!index || !Array.isArray(index.records)) return false;
  for (const file of ["mlc-chat-config.json", "tokenizer.json", ...index.records.map((r) => r.dataPath)]) {
    if (!(await cache.match(base + file))) return false;
  }
  return true;
}

/** Removes everything cached of the model folder or GGUF file at `modelUrl`. */
export async function deleteModelInCache(modelUrl) {
  const { cache } = await openCache();
  if (!cache) return;
  const url = absoluteUrl(modelUrl);
  if (isGgufPath(url)) {
    for (const part of ggufParts(url, ERRORS)) await deleteGgufFromCache(cache, part);
    return;
  }
  await deleteGgufFromCache(cache, url);
  const base = folderUrl(modelUrl);
  for (const request of await cache.keys()) {
    if (request.url.startsWith(base)) await cache.delete(request);
  }
}
