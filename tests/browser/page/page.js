// window.glimTest: the package's API as tests/browser/gguf-e2e.mjs calls it, each result a
// plain object (errors as { name, message }) so it crosses page.evaluate.
import * as glim from "./pkg/index.js";

let engine = null;
let worker = null;

const failure = (e) => ({ ok: false, error: { name: e?.name ?? "Error", message: String(e?.message ?? e) } });

window.glimTest = {
  /** Loads `url` in a worker engine; resolves to { ok, seconds, progress: [last report], info } or { ok: false, error }. */
  async load(url, options = {}) {
    await engine?.unload().catch(() => {});
    worker?.terminate();
    engine = null;
    const reports = [];
    const started = performance.now();
    try {
      worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
      engine = await glim.CreateWebWorkerEngine(worker, new URL(url, location.href).href, {
        ...options,
        initProgressCallback: (r) => reports.push(r),
      });
      return { ok: true, seconds: (performance.now() - started) / 1000, last: reports.at(-1), reports: reports.length, info: await engine.info() };
    } catch (e) {
      return { ...failure(e), last: reports.at(-1) };
    }
  },
  /** The greedy continuation of `prompt` (no chat template), `maxTokens` tokens at most, with `extra` request fields. */
  async complete(prompt, maxTokens, extra = {}) {
    try {
      const reply = await engine.completions.create({ ...extra, prompt, temperature: 0, max_tokens: maxTokens });
      return { ok: true, text: reply.choices[0].text, finish: reply.choices[0].finish_reason };
    } catch (e) {
      return failure(e);
    }
  },
  async inCache(url) { return glim.hasModelInCache(new URL(url, location.href).href); },
  async deleteFromCache(url) { return glim.deleteModelInCache(new URL(url, location.href).href); },
};
document.body.dataset.ready = "1";
