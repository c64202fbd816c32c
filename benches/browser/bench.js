// window.bench: one round of each engine on a GGUF URL, as plain objects for page.evaluate.
// Both start cold (their caches emptied), load the file from the server, and continue the
// same raw prompt greedily; prefill and decode rates are each engine's own figures (glim's
// usage.extra, wllama's llama-server timings), load time is wall time to a ready engine.
import * as glim from "./pkg/index.js";
import { Wllama } from "./node_modules/@wllama/wllama/esm/index.js";

const now = () => performance.now();

window.bench = {
  async adapter() {
    return glim.adapterInfo().catch((e) => ({ error: String(e?.message ?? e) }));
  },

  async glim(url, prompt, maxTokens, context, kernels) {
    await glim.deleteModelInCache(url);
    const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    try {
      const started = now();
      const engine = await glim.CreateWebWorkerEngine(worker, url, { contextWindowSize: context, kernels });
      const loadSeconds = (now() - started) / 1000;
      const reply = await engine.completions.create({ prompt, max_tokens: maxTokens, temperature: 0 });
      const extra = reply.usage.extra ?? {};
      const info = await engine.info();
      await engine.unload();
      return {
        loadSeconds,
        promptTokens: reply.usage.prompt_tokens,
        generated: reply.usage.completion_tokens,
        prefill: extra.prefill_tokens_per_s,
        decode: extra.decode_tokens_per_s,
        text: reply.choices[0].text,
        how: `${info.adapter}, ${info.kernels} kernels, ${info.precision} activations, ${info.format}`,
      };
    } finally {
      worker.terminate();
    }
  },

  async wllama(url, prompt, maxTokens, context, gpuLayers) {
    const wllama = new Wllama({ default: new URL("./node_modules/@wllama/wllama/esm/wasm/wllama.wasm", import.meta.url).href }, {
      suppressNativeLog: true,
    });
    await wllama.cacheManager.clear();
    try {
      const started = now();
      await wllama.loadModelFromUrl(url, { n_ctx: context, n_gpu_layers: gpuLayers, useCache: false });
      const loadSeconds = (now() - started) / 1000;
      const reply = await wllama.createCompletion({ prompt, max_tokens: maxTokens, temperature: 0 });
      const t = reply.timings ?? {};
      return {
        loadSeconds,
        promptTokens: t.prompt_n,
        generated: t.predicted_n,
        prefill: t.prompt_per_second,
        decode: t.predicted_per_second,
        text: reply.choices[0].text,
        how: `${gpuLayers ? "WebGPU" : "WASM CPU"}, ${wllama.isMultithread?.() ? "multi" : "single"}-threaded`,
      };
    } finally {
      await wllama.exit().catch(() => {});
    }
  },
};
document.body.dataset.ready = "1";
