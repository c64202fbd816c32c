// The chat page: picks a model, loads it into a module worker through the glim-llm package
// (served at ./pkg/), and streams answers into the log as Markdown.
//
// URL parameters: ?model=<id from models.json> selects a model, ?autoload=1 loads it at once,
// ?temperature=0&max_tokens=8 prefill the settings.
//
// Test hooks (used by tests/browser/chat-e2e.mjs):
//   document.body.dataset.state  idle | loading | ready | generating | error
//   .message[data-role]          "user" or "assistant", one element per message in #log
//   .message[data-raw]           on assistant messages: the raw answer text, set once it finished
//   #error                       the error banner (hidden when there is no error)
//   #notice                      what the adapter means for speed (shown for a software adapter)
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), load: $("load"), error: $("error"), notice: $("notice"),
  progress: $("progress"), progressBar: $("progress-bar"), progressNumbers: $("progress-numbers"), progressText: $("progress-text"),
  log: $("log"), empty: $("empty"), composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  temperature: $("temperature"), maxTokens: $("max-tokens"), clear: $("clear"), status: $("status"),
};

const params = new URLSearchParams(location.search);
let glim = null; // the imported package module
let models = []; // models.json
let engine = null; // the loaded engine, or null
let worker = null; // the worker the engine runs in
let messages = []; // the conversation so far, sent whole every turn

// --- state and errors ------------------------------------------------------------------------

function setState(state) {
  document.body.dataset.state = state;
  const busy = state === "loading" || state === "generating";
  ui.load.disabled = busy || !glim || !models.length;
  ui.model.disabled = busy || !models.length;
  ui.send.disabled = busy || !engine;
  ui.send.hidden = state === "generating";
  ui.stop.hidden = state !== "generating";
  ui.clear.disabled = busy;
}

const ERROR_ADVICE = {
  WebGPUUnavailableError:
    "This browser has no WebGPU: use a recent Chrome or Edge, or start Chromium with --enable-unsafe-webgpu (on Linux also --enable-features=Vulkan).",
  ModelTooLargeError: "This model does not fit this GPU (too little GPU memory, or the GPU's limits are too low): try a smaller model.",
  DeviceLostError: "The GPU was reset and the model is gone: press Load to start again.",
  ModelLoadError: "The model could not be loaded: check the network connection and that the model (a GGUF file or a model folder) is served.",
};

function showError(error) {
  const name = error?.name ?? "Error";
  const detail = String(error?.message ?? error);
  ui.error.textContent = "";
  const advice = document.createElement("strong");
  advice.textContent = ERROR_ADVICE[name] ?? "Something went wrong.";
  const more = document.createElement("div");
  more.className = "detail";
  more.textContent = `${name}: ${detail}`;
  ui.error.append(advice, " ", more);
  ui.error.hidden = false;
  console.error(`${name}: ${detail}`);
}

function hideError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

// The engine is unusable after these; a new worker is made on the next Load.
const isFatal = (error) => ["DeviceLostError", "WebGPUUnavailableError"].includes(error?.name);

// --- loading ---------------------------------------------------------------------------------

function showProgress(report) {
  const mb = (bytes) => (bytes / 1e6).toFixed(1);
  const fraction = Math.min(Math.max(Number(report.progress) || 0, 0), 1);
  ui.progressBar.value = fraction;
  const bytes = report.totalBytes ? `${mb(report.loadedBytes ?? 0)} / ${mb(report.totalBytes)} MB · ` : "";
  ui.progressNumbers.textContent = `${bytes}${Math.floor(fraction * 100)}%`;
  ui.progressText.textContent = report.text ?? "";
}

async function dropEngine() {
  const [oldEngine, oldWorker] = [engine, worker];
  engine = null;
  worker = null;
  ui.status.textContent = "";
  if (oldEngine) {
    const timeout = new Promise((resolve) => setTimeout(resolve, 3000));
    await Promise.race([oldEngine.unload().catch(() => {}), timeout]);
  }
  oldWorker?.terminate();
}

async function load() {
  const model = models.find((m) => m.id === ui.model.value);
  if (!model || !glim) return;
  hideError();
  setState("loading");
  ui.status.textContent = "";
  ui.progress.hidden = false;
  showProgress({ progress: 0, text: `Starting ${model.name}…` });
  await dropEngine();
  const started = performance.now();
  const newWorker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  // A worker whose script fails to load, or that throws, says so only through this event.
  const workerFailed = new Promise((_, reject) =>
    newWorker.addEventListener("error", (event) => {
      const message = event.message || "could not load worker.js or the package";
      console.error(`worker: ${message}`);
      reject(new Error(`the worker failed: ${message}`));
    }),
  );
  workerFailed.catch(() => {}); // it only decides the race below, while loading
  try {
    const modelUrl = new URL(model.url, location.href).href;
    const loaded = await Promise.race([glim.CreateWebWorkerEngine(newWorker, modelUrl, { initProgressCallback: showProgress }), workerFailed]);
    [engine, worker] = [loaded, newWorker];
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    ui.progress.hidden = true;
    ui.status.textContent = `loaded in ${seconds} s`;
    console.log(`loaded ${model.id} in ${seconds} s`);
    setState("ready");
    ui.prompt.focus();
  } catch (error) {
    newWorker.terminate();
    ui.progress.hidden = true;
    showError(error);
    setState("error");
  }
}

// --- chat ------------------------------------------------------------------------------------

function addMessage(role, text = "") {
  ui.empty?.remove();
  const element = document.createElement("div");
  element.className = `message ${role}`;
  element.dataset.role = role;
  const body = document.createElement("div");
  body.className = "body";
  if (role === "user") body.textContent = text; // user text is shown as it is, never parsed
  element.append(body);
  ui.log.append(element);
  return element;
}

// Keeps the log scrolled to the end while the user has not scrolled up.
function follow(action) {
  const atEnd = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
  action();
  if (atEnd) ui.log.scrollTop = ui.log.scrollHeight;
}

function readSettings() {
  const temperature = Number(ui.temperature.value);
  const maxTokens = Math.round(Number(ui.maxTokens.value));
  return {
    temperature: Number.isFinite(temperature) && temperature >= 0 ? temperature : 0.7,
    max_tokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : 256,
  };
}

async function send() {
  const text = ui.prompt.value.trim();
  if (!text || !engine || document.body.dataset.state === "generating") return;
  hideError();
  ui.prompt.value = "";
  messages.push({ role: "user", content: text });
  const userElement = addMessage("user", text);
  const answer = addMessage("assistant");
  const body = answer.querySelector(".body");
  answer.classList.add("streaming");
  ui.log.scrollTop = ui.log.scrollHeight;
  setState("generating");

  let raw = "";
  let usage = null;
  let finish = null;
  let drawPending = false;
  const draw = () => {
    drawPending = false;
    follow(() => (body.innerHTML = renderMarkdown(raw))); // renderMarkdown escapes everything
  };
  try {
    const stream = await engine.chat.completions.create({
      messages: messages.slice(),
      stream: true,
      stream_options: { include_usage: true },
      ...readSettings(),
    });
    for await (const chunk of stream) {
      const choice = chunk.choices?.[0];
      if (choice?.delta?.content) {
        raw += choice.delta.content;
        if (!drawPending) {
          drawPending = true;
          requestAnimationFrame(draw);
        }
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    draw();
    messages.push({ role: "assistant", content: raw });
    addStats(answer, usage, finish);
    answer.classList.remove("streaming");
    answer.dataset.raw = raw;
    setState("ready");
  } catch (error) {
    draw();
    answer.classList.remove("streaming");
    answer.dataset.raw = raw;
    // The turn failed: keep it on screen, but out of the conversation the model sees.
    messages.pop();
    userElement.classList.add("failed");
    answer.classList.add("failed");
    if (isFatal(error)) await dropEngine();
    showError(error);
    setState("error");
  }
  ui.prompt.focus();
}

function addStats(answer, usage, finish) {
  const parts = [];
  const perSecond = (value) => (Number.isFinite(value) ? value.toFixed(1) : "?");
  if (usage?.extra) parts.push(`prefill ${perSecond(usage.extra.prefill_tokens_per_s)} tok/s`, `decode ${perSecond(usage.extra.decode_tokens_per_s)} tok/s`);
  if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} new tokens`);
  if (finish === "length") parts.push("stopped at max tokens");
  if (finish === "abort") parts.push("stopped");
  if (!parts.length) return;
  const stats = document.createElement("div");
  stats.className = "stats";
  stats.textContent = parts.join(" · ");
  follow(() => answer.append(stats));
}

async function clearChat() {
  messages = [];
  ui.log.replaceChildren();
  hideError();
  setState(engine ? "ready" : "idle");
  if (!engine) return;
  try {
    await engine.resetChat();
  } catch (error) {
    if (isFatal(error)) await dropEngine();
    showError(error);
    setState("error");
  }
}

// --- start -----------------------------------------------------------------------------------

function wire() {
  ui.load.addEventListener("click", load);
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  ui.stop.addEventListener("click", () => engine?.interruptGenerate());
  ui.clear.addEventListener("click", clearChat);
  if (params.has("temperature")) ui.temperature.value = params.get("temperature");
  if (params.has("max_tokens")) ui.maxTokens.value = params.get("max_tokens");
}

async function start() {
  wire();
  setState("idle");
  if (!navigator.gpu) {
    showError({ name: "WebGPUUnavailableError", message: "navigator.gpu is missing" });
    setState("error");
  }
  try {
    const response = await fetch("models.json");
    if (!response.ok) throw new Error(`models.json: HTTP ${response.status}`);
    models = await response.json();
    for (const model of models) ui.model.append(new Option(`${model.name} · ${model.size}`, model.id));
    const wanted = params.get("model");
    if (wanted && !models.some((m) => m.id === wanted)) throw new Error(`no model "${wanted}" in models.json`);
    if (wanted) ui.model.value = wanted;
  } catch (error) {
    showError(error);
    setState("error");
    return;
  }
  try {
    glim = await import("./pkg/index.js");
  } catch (error) {
    showError(new Error(`could not load the glim-llm package from ./pkg/ (${error.message})`));
    setState("error");
    return;
  }
  setState(document.body.dataset.state === "error" ? "error" : "idle");
  // A software adapter is said before loading: the user then knows why answers take minutes.
  if (navigator.gpu) {
    const adapter = await glim.adapterInfo().catch(() => null);
    if (adapter?.software) {
      ui.notice.textContent = adapter.note;
      ui.notice.hidden = false;
    }
  }
  if (params.get("autoload") === "1" && navigator.gpu) load();
}

start();
