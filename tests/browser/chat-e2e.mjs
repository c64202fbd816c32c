#!/usr/bin/env node
// End-to-end test of the chat page (www/) in headless Chromium, through playwright-core.
//
//   node tests/browser/chat-e2e.mjs \
//     --url 'http://127.0.0.1:PORT/?model=ID&temperature=0&max_tokens=8&autoload=1' \
//     --log SERVER_LOG --prompt "..." --expected ANSWER_FILE [--screenshot PNG] \
//     [--chromium /usr/bin/chromium] [--chromium-arg FLAG]... [--viewport 1280x800] \
//     [--load-timeout 600] [--answer-timeout 300] [--also MODEL_ID=ANSWER_FILE]...
//
// SERVER_LOG is the --log file of scripts/serve.mjs (one `METHOD PATH STATUS BYTES` line per request).
// Steps: open the page in a fresh profile; wait until the model is loaded; send the prompt and
// compare the answer exactly with ANSWER_FILE (less one trailing newline); screenshot; reload
// the page in the same profile and wait until the model is loaded again, this time without any
// weight request (a GET of a `params_shard_` or a `.gguf`) reaching the server (the weights
// must come from Cache Storage).
// Then hasModelInCache must see the folder and deleteModelInCache remove it. Each --also model
// (another architecture) is then loaded in the same page and must give its ANSWER_FILE to the
// same prompt. Last, the same page in a Chromium without WebGPU must show the banner that says so.
// Exit status 0 when all of that held, 1 (with a line starting `FAIL:`) otherwise.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM_ARGS = [
  "--enable-unsafe-webgpu",
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-sync",
  "--disable-quic",
];

class Failure extends Error {}
const fail = (message) => {
  throw new Failure(message);
};
const log = (prefix, text) => console.log(`${prefix} ${text}`);
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function parseArgs(argv) {
  const options = {
    url: null, log: null, prompt: null, expected: null, screenshot: null,
    chromium: process.env.CHROMIUM ?? "/usr/bin/chromium", "chromium-arg": [], also: [], viewport: "1280x800",
    "load-timeout": "600", "answer-timeout": "300",
  };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (!argv[i].startsWith("--") || !(name in options) || i + 1 >= argv.length) {
      console.error(`bad argument ${argv[i]}; see the comment at the top of ${path.basename(process.argv[1])} for usage`);
      process.exit(2);
    }
    if (Array.isArray(options[name])) options[name].push(argv[i + 1]);
    else options[name] = argv[i + 1];
  }
  for (const name of ["url", "log", "prompt", "expected"]) {
    if (options[name] === null) {
      console.error(`missing --${name}`);
      process.exit(2);
    }
  }
  const [width, height] = options.viewport.split("x").map(Number);
  return {
    ...options,
    viewport: { width, height },
    loadTimeout: Number(options["load-timeout"]) * 1000,
    answerTimeout: Number(options["answer-timeout"]) * 1000,
  };
}

// What the page shows now, through its test hooks (see the comment at the top of www/app.js).
function snapshot(page) {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id)?.textContent.trim() ?? "";
    const banner = document.getElementById("error");
    const answers = document.querySelectorAll('.message[data-role="assistant"][data-raw]');
    return {
      state: document.body.dataset.state ?? "",
      numbers: text("progress-numbers"),
      progress: text("progress-text"),
      error: banner && !banner.hidden ? banner.innerText.trim() : "",
      answers: answers.length,
      lastAnswer: answers.length ? answers[answers.length - 1].dataset.raw : null,
    };
  });
}

// Polls the page until done(snapshot) holds; fails on state `error` or after timeoutMs.
// Prints state changes, and the loading progress when its text changes or every 5 s.
async function waitFor(page, what, timeoutMs, done) {
  const started = Date.now();
  let last = {};
  let printed = 0;
  for (;;) {
    const now = await snapshot(page);
    if (now.state !== last.state) log("[state]", now.state);
    if (now.state === "loading" && (now.progress !== last.progress || Date.now() - printed > 5000)) {
      log("[progress]", `${now.numbers} ${now.progress}`);
      printed = Date.now();
    }
    last = now;
    if (now.state === "error") fail(`the page is in state error while waiting for ${what}; its banner says: ${now.error || "(empty)"}`);
    if (done(now)) return now;
    if (Date.now() - started > timeoutMs) {
      fail(`timed out after ${seconds(timeoutMs)} waiting for ${what} (state ${now.state}, progress ${now.numbers} "${now.progress}")`);
    }
    await sleep(250);
  }
}

const logLines = (file) => (fs.existsSync(file) ? fs.readFileSync(file, "utf8").split("\n").filter(Boolean) : []);
const isWeightRequest = (line) => /^GET \/models\/\S*(params_shard_\S*|\.gguf) /.test(line);

async function main() {
  const options = parseArgs(process.argv.slice(2));
  try {
    fs.accessSync(options.chromium, fs.constants.X_OK);
  } catch {
    fail(`no Chromium at ${options.chromium} (install it with: sudo apt-get install -y chromium; or pass --chromium PATH)`);
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "glim-e2e-"));
  const args = [...CHROMIUM_ARGS, ...options["chromium-arg"]];
  log("[e2e]", `${options.chromium} ${args.join(" ")} (profile ${profile})`);

  const context = await chromium.launchPersistentContext(profile, {
    executablePath: options.chromium,
    headless: true, // Chromium's --headless, the new headless mode
    args,
    viewport: options.viewport,
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    log("[e2e]", `Chromium ${context.browser()?.version() ?? ""}`.trim());
    page.on("console", (message) => log(message.worker() ? "[worker]" : "[page]", `${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => log("[page]", `uncaught: ${error.message}`));
    page.on("crash", () => log("[page]", "crashed"));
    context.on("requestfailed", (request) => log("[net]", `failed: ${request.url()} ${request.failure()?.errorText ?? ""}`));

    // First load: the weights come from the server.
    const linesAtStart = logLines(options.log).length;
    let started = Date.now();
    await page.goto(options.url);
    const gpu = await page.evaluate(async () => {
      if (!navigator.gpu) return null;
      const adapter = await navigator.gpu.requestAdapter().catch(() => null);
      const info = adapter?.info ?? {};
      return adapter ? [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ") || "(no adapter info)" : "none";
    });
    if (gpu === null) fail("navigator.gpu is missing: this browser has no WebGPU (check the Chromium flags)");
    log("[e2e]", `WebGPU adapter: ${gpu}`);
    await waitFor(page, "the model to load", options.loadTimeout, (s) => s.state === "ready");
    const firstLoad = Date.now() - started;
    // A software adapter (SwiftShader here) is named before loading, with the speed to expect.
    const notice = await page.evaluate(() => { const n = document.getElementById("notice"); return n && !n.hidden ? n.textContent : ""; });
    log("[e2e]", `notice: ${notice || "(none)"}`);
    if (/swiftshader/i.test(gpu) && !/software one \(.+\).*token\/s/.test(notice)) fail(`on SwiftShader the page shows no software-adapter notice (it says ${JSON.stringify(notice)})`);
    log("[e2e]", `loaded in ${seconds(firstLoad)}`);
    const weightRequests = logLines(options.log).slice(linesAtStart).filter(isWeightRequest).length;
    if (!weightRequests) fail(`${options.log} shows no weight request for the first load: is it the server's --log file?`);

    // One answer.
    const answerTime = await ask(page, options, options.expected);

    // Reload: the weights must come from Cache Storage, not from the server.
    const linesBefore = logLines(options.log).length;
    started = Date.now();
    await page.reload();
    await waitFor(page, "the model to load after the reload", options.loadTimeout, (s) => s.state === "ready");
    const secondLoad = Date.now() - started;
    const after = logLines(options.log).slice(linesBefore);
    const refetched = after.filter(isWeightRequest);
    log("[e2e]", `loaded again in ${seconds(secondLoad)}; ${after.length} requests, ${after.filter((l) => l.includes(" /models/")).length} of them under /models/`);
    if (refetched.length) fail(`after the reload the page fetched weights again instead of using its cache:\n  ${refetched.join("\n  ")}`);

    // The cache API of the package, on the page's origin: the folder is cached whole, and
    // deleting it leaves nothing behind.
    const cacheState = await page.evaluate(async () => {
      const glim = await import("./pkg/index.js");
      const models = await (await fetch("models.json")).json();
      const id = new URLSearchParams(location.search).get("model") ?? models[0].id;
      const url = new URL(models.find((m) => m.id === id).url, location.href).href;
      const before = await glim.hasModelInCache(url);
      await glim.deleteModelInCache(url);
      return { before, after: await glim.hasModelInCache(url) };
    });
    log("[e2e]", `hasModelInCache: ${cacheState.before}, after deleteModelInCache: ${cacheState.after}`);
    if (!cacheState.before || cacheState.after) fail(`the package's cache API is off: ${JSON.stringify(cacheState)}`);

    // Other architectures' folders, in the same page.
    for (const also of options.also) {
      const [id, answerFile] = also.split("=");
      const url = new URL(options.url);
      url.searchParams.set("model", id);
      started = Date.now();
      await page.goto(url.href);
      await waitFor(page, `${id} to load`, options.loadTimeout, (s) => s.state === "ready");
      log("[e2e]", `${id} loaded in ${seconds(Date.now() - started)}`);
      await ask(page, { ...options, screenshot: null }, answerFile);
    }

    await checkWithoutWebGPU(options);
    log("[e2e]", `PASS  first load ${seconds(firstLoad)} (${weightRequests} weight requests), answer ${seconds(answerTime)}, load after reload ${seconds(secondLoad)}`);
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

// Sends the prompt and checks the streamed answer is exactly the text of answerFile (less one
// trailing newline); returns how long it took.
async function ask(page, options, answerFile) {
  const expected = fs.readFileSync(answerFile, "utf8").replace(/\n$/, "");
  const before = (await snapshot(page)).answers;
  const started = Date.now();
  await page.fill("#prompt", options.prompt);
  await page.click("#send");
  const answered = await waitFor(page, "the answer", options.answerTimeout, (s) => s.state === "ready" && s.answers > before);
  const answerTime = Date.now() - started;
  log("[e2e]", `answered in ${seconds(answerTime)}: ${JSON.stringify(answered.lastAnswer)}`);
  if (options.screenshot) {
    await page.screenshot({ path: options.screenshot });
    log("[e2e]", `screenshot ${options.screenshot}`);
  }
  if (answered.lastAnswer !== expected) {
    const at = [...expected].findIndex((c, i) => c !== answered.lastAnswer[i]);
    fail(`the answer differs from ${answerFile} (at character ${at < 0 ? expected.length : at}):\n  expected ${JSON.stringify(expected)}\n  got      ${JSON.stringify(answered.lastAnswer)}`);
  }
  return answerTime;
}

// A browser without WebGPU (Chromium without --enable-unsafe-webgpu offers no adapter here):
// the page must end in state error with the banner naming WebGPU, not hang or go blank.
async function checkWithoutWebGPU(options) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "glim-e2e-nogpu-"));
  const args = [...CHROMIUM_ARGS.filter((a) => a !== "--enable-unsafe-webgpu"), "--disable-features=WebGPU"];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: options.chromium,
    headless: true,
    args,
    viewport: options.viewport,
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(options.url);
    const started = Date.now();
    for (;;) {
      const now = await snapshot(page);
      if (now.error) {
        if (!/WebGPU/.test(now.error)) fail(`without WebGPU the banner says: ${now.error}`);
        log("[e2e]", `without WebGPU the page says: ${now.error.split("\n")[0]}`);
        return;
      }
      if (now.state === "ready") fail("without WebGPU the model loaded anyway: the check is not testing what it should");
      if (Date.now() - started > 60_000) fail(`without WebGPU the page showed no error within 60 s (state ${now.state})`);
      await sleep(250);
    }
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error instanceof Failure ? `FAIL: ${error.message}` : `FAIL: ${error.stack ?? error}`);
    process.exit(1);
  },
);
