#!/usr/bin/env node
// glim's npm package beside wllama (@wllama/wllama, llama.cpp in WASM) on the same GGUF in
// the same headless Chromium: load time, prefill and decode tokens/s, several rounds,
// medians and ratios. benches/browser.sh builds and serves everything and runs this.
//
//   node benches/browser/run.mjs --url http://127.0.0.1:PORT/ --model models/NAME.gguf \
//     [--rounds 3] [--gen 16] [--context 1024] [--wllama-gpu-layers N] [--chromium PATH]
//
// URL serves this folder as its root, the package at /pkg/ and the model at --model.
// wllama runs on the CPU (--wllama-gpu-layers 0) where the only WebGPU adapter is a software
// one, else with every layer on WebGPU, unless told otherwise; it runs single-threaded, as
// the page is not cross-origin isolated.
import { chromium } from "playwright-core";

const args = { url: null, model: null, rounds: "3", gen: "16", context: "1024", "wllama-gpu-layers": null,
  chromium: process.env.CHROMIUM ?? "/usr/bin/chromium" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, "");
  if (!(name in args) || i + 1 >= argv.length) {
    console.error(`bad argument ${argv[i]}; see the comment at the top of benches/browser/run.mjs`);
    process.exit(2);
  }
  args[name] = argv[i + 1];
}
if (!args.url || !args.model) {
  console.error("--url and --model are needed");
  process.exit(2);
}

// About 70 tokens of plain text, continued as is (no chat template) by both engines.
const PROMPT = "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
  + "combined movable metal type, oil-based ink and a screw press adapted from winemaking. Within fifty "
  + "years, presses had spread to more than two hundred cities across Europe, and the number of books in "
  + "circulation grew from thousands to millions. The consequences were";

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : "-");

const browser = await chromium.launch({
  executablePath: args.chromium, headless: true,
  args: ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-background-networking", "--no-first-run"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.log(`[page] uncaught: ${e.message}`));
  await page.goto(args.url);
  await page.waitForFunction(() => document.body?.dataset.ready === "1");
  const adapter = await page.evaluate(() => window.bench.adapter());
  const gpuLayers = args["wllama-gpu-layers"] !== null ? Number(args["wllama-gpu-layers"]) : adapter.software ? 0 : 999;
  const chromiumVersion = browser.version();
  console.log(`Chromium ${chromiumVersion}; WebGPU adapter: ${[adapter.vendor, adapter.architecture, adapter.description].filter(Boolean).join(" ") || adapter.error}${adapter.software ? " (software)" : ""}`);
  console.log(`model ${args.model}; prompt of about 70 tokens, ${args.gen} generated, context ${args.context}; ${args.rounds} rounds, each engine starting cold`);

  const results = { glim: [], wllama: [] };
  for (let round = 1; round <= Number(args.rounds); round++) {
    for (const engine of ["wllama", "glim"]) {
      const r = await page.evaluate(
        ([engine, url, prompt, gen, ctx, layers]) => (engine === "glim"
          ? window.bench.glim(url, prompt, gen, ctx)
          : window.bench.wllama(url, prompt, gen, ctx, layers)),
        [engine, new URL(args.model, args.url).href, PROMPT, Number(args.gen), Number(args.context), gpuLayers],
      );
      results[engine].push(r);
      console.log(`round ${round} ${engine.padEnd(6)} load ${fmt(r.loadSeconds, 1)} s, prefill ${fmt(r.prefill)} tok/s (${r.promptTokens} tokens), decode ${fmt(r.decode)} tok/s (${r.generated} tokens) [${r.how}] ${JSON.stringify(r.text)}`);
    }
  }

  const row = (name, rs) => [name, median(rs.map((r) => r.loadSeconds)), median(rs.map((r) => r.prefill)), median(rs.map((r) => r.decode))];
  const [g, w] = [row("glim", results.glim), row("wllama", results.wllama)];
  console.log("\nmedians over rounds          load s   prefill tok/s   decode tok/s");
  for (const [name, load, prefill, decode] of [g, w]) {
    console.log(`${name.padEnd(28)} ${fmt(load, 1).padStart(6)}   ${fmt(prefill).padStart(13)}   ${fmt(decode).padStart(12)}`);
  }
  console.log(`${"glim / wllama".padEnd(28)} ${fmt(g[1] / w[1]).padStart(6)}   ${fmt(g[2] / w[2]).padStart(13)}   ${fmt(g[3] / w[3]).padStart(12)}`);
} finally {
  await browser.close();
}
