#!/usr/bin/env node
// End-to-end test of GGUF URLs in the glim-llm package, in headless Chromium, through a bare
// page (tests/browser/page/) that calls the package's API.
//
//   node tests/browser/gguf-e2e.mjs --ranged URL --ranged-log FILE --cut-at BYTE \
//     --plain URL --plain-log FILE --model PATH --size BYTES --prompt "..." --tokens N \
//     --expected FILE --split PATH --schema FILE --schema-prompt "..." --schema-expected FILE \
//     [--chromium /usr/bin/chromium] [--bad NAME=NEEDLE]...
//
// --ranged: a scripts/serve.mjs with Range support started with `--cut-at BYTE` (its
// responses break off before that byte of a .gguf until /__heal); --plain: one started with
// `--ranges no`. Both serve this page as www and the GGUF under /models/ at PATH; the logs are
// their --log files. Steps, on the ranged server:
//   1. a load breaks off at the cut: ModelLoadError naming the URL, and the chunks before
//      the cut are in Cache Storage;
//   2. after /__heal the load resumes: no chunk before the cut is asked for again, and the
//      file crosses the network about once in all;
//   3. a reload reads nothing of the file; hasModelInCache and deleteModelInCache;
//   4. the same model split in parts (--split: the first part's path) reads each part once,
//      run with gemv's subgroup reduction where the device has subgroups;
//   5. each --bad file (under /models/) fails with a ModelLoadError containing NEEDLE.
// Then on the plain server (another origin, so an empty cache) the load reads the file in one
// 200 response, exactly once. Every load but the first must continue the raw --prompt
// greedily, --tokens tokens, as --expected says (`GLIM_PRECISION=f32 glim run --raw`, less
// one trailing newline: SwiftShader has no shader-f16): each path got the file's bytes.
// Last, a `response_format` request must answer as --schema-expected says (`glim run --raw
// --json-schema --schema` on --schema-prompt), and a schema that does not compile be an
// InvalidRequestError.
// Exit status 0 when all of that held, 1 (`FAIL: ...`) otherwise.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM_ARGS = ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"];
/** The package's chunk size (web/js/gguf.js). */
const CHUNK = 4 << 20;

class Failure extends Error {}
const fail = (message) => { throw new Failure(message); };
const log = (text) => console.log(`[gguf-e2e] ${text}`);

function parseArgs(argv) {
  const options = { ranged: null, "ranged-log": null, "cut-at": null, plain: null, "plain-log": null, model: null,
    size: null, prompt: null, tokens: null, expected: null, split: null, schema: null, "schema-prompt": null,
    "schema-expected": null, chromium: process.env.CHROMIUM ?? "/usr/bin/chromium", bad: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (!argv[i].startsWith("--") || !(name in options) || i + 1 >= argv.length) {
      console.error(`bad argument ${argv[i]}; see the comment at the top of ${path.basename(process.argv[1])}`);
      process.exit(2);
    }
    if (Array.isArray(options[name])) options[name].push(argv[i + 1]);
    else options[name] = argv[i + 1];
  }
  for (const [name, value] of Object.entries(options)) {
    if (value === null) { console.error(`missing --${name}`); process.exit(2); }
  }
  return { ...options, cutAt: Number(options["cut-at"]), size: Number(options.size) };
}

/** The server log's requests of `file` since line `from`: { method, status, start, end }. */
function requests(logFile, file, from = 0) {
  const lines = fs.readFileSync(logFile, "utf8").split("\n").filter(Boolean).slice(from);
  return lines.map((l) => l.split(" ")).filter(([, p]) => p === file).map(([method, , status, sent]) => {
    const range = /^(\d+)-(\d+)\/\d+$/.exec(sent);
    const [start, end] = range ? [Number(range[1]), Number(range[2]) + 1] : [0, Number(sent)];
    return { method, status: Number(status), start, end };
  });
}
const lineCount = (logFile) => fs.readFileSync(logFile, "utf8").split("\n").filter(Boolean).length;
const bytesOf = (reqs) => reqs.filter((r) => r.method === "GET").reduce((n, r) => n + r.end - r.start, 0);

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const modelPath = new URL(o.model, o.ranged).pathname;
  const expected = fs.readFileSync(o.expected, "utf8").replace(/\n$/, "");
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "glim-gguf-e2e-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: o.chromium, headless: true, args: CHROMIUM_ARGS,
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") log(`[${m.worker() ? "worker" : "page"}] ${m.text()}`); });
    page.on("pageerror", (e) => log(`[page] uncaught: ${e.message}`));
    const open = async (base) => {
      await page.goto(base);
      await page.waitForFunction(() => document.body?.dataset.ready === "1");
    };
    const call = (name, ...args) => page.evaluate(([n, a]) => window.glimTest[n](...a), [name, args]);

    // 1. The download breaks off at the cut.
    await open(o.ranged);
    const broken = await call("load", o.model);
    log(`load with the connection cut at byte ${o.cutAt}: ${JSON.stringify(broken.error ?? broken)}`);
    if (broken.ok) fail("the load went through although the server cut the file off");
    if (broken.error.name !== "ModelLoadError" || !broken.error.message.includes(o.model.split("/").pop())) {
      fail(`a cut-off download gave ${broken.error.name}: ${broken.error.message}`);
    }
    const firstTry = requests(o["ranged-log"], modelPath);

    // 2. Healed: the load resumes from the chunks it has and answers.
    await fetch(new URL("/__heal", o.ranged));
    let mark = lineCount(o["ranged-log"]);
    const resumed = await call("load", o.model);
    if (!resumed.ok) fail(`the resumed load failed: ${resumed.error.name}: ${resumed.error.message}`);
    const again = requests(o["ranged-log"], modelPath, mark);
    const cutChunk = Math.floor(o.cutAt / CHUNK) * CHUNK;
    const before = again.filter((r) => r.method === "GET" && r.start < cutChunk);
    log(`resumed in ${resumed.seconds.toFixed(1)} s: ${again.length} requests of the file, ${bytesOf(again)} bytes; ${resumed.last?.text}`);
    if (before.length) fail(`the resumed load fetched again bytes it had before the cut: ${JSON.stringify(before)}`);
    const total = bytesOf(firstTry) + bytesOf(again);
    if (total < o.size || total > o.size + 4 * CHUNK) fail(`the file crossed the network as ${total} bytes for a ${o.size}-byte file`);
    log(`adapter: ${resumed.info.adapter} (${resumed.info.backend}), precision ${resumed.info.precision}, formats ${JSON.stringify(resumed.info.format)}, software: ${resumed.info.software}, ${resumed.info.kernels} kernels`);
    if (/swiftshader/i.test(JSON.stringify(resumed.info.adapterInfo)) && !(resumed.info.software && resumed.info.note && resumed.info.kernels === "cpu")) {
      fail(`info() does not say SwiftShader is a software adapter running the CPU kernels: ${JSON.stringify(resumed.info)}`);
    }
    const sameContinuation = async (what) => {
      const got = await call("complete", o.prompt, Number(o.tokens));
      if (!got.ok) fail(`${what}: completing failed: ${got.error.name}: ${got.error.message}`);
      log(`${what} continues ${JSON.stringify(o.prompt)} with ${JSON.stringify(got.text)}`);
      if (got.text !== expected) fail(`${what} continues ${JSON.stringify(o.prompt)} with ${JSON.stringify(got.text)}, not ${JSON.stringify(expected)} as glim run does (${o.expected})`);
    };
    await sameContinuation("the resumed load");

    // 3. A reload reads nothing of the file.
    mark = lineCount(o["ranged-log"]);
    await page.reload();
    await page.waitForFunction(() => document.body?.dataset.ready === "1");
    const reloaded = await call("load", o.model);
    if (!reloaded.ok) fail(`the load after a reload failed: ${reloaded.error.message}`);
    const reread = requests(o["ranged-log"], modelPath, mark).filter((r) => r.method === "GET");
    log(`after a reload: loaded in ${reloaded.seconds.toFixed(1)} s, ${reread.length} GET requests of the file; ${reloaded.last?.text}`);
    if (reread.length) fail(`after a reload the file was fetched again: ${JSON.stringify(reread)}`);
    await sameContinuation("the model loaded from the cache");
    const cached = await call("inCache", o.model);
    await call("deleteFromCache", o.model);
    const afterDelete = await call("inCache", o.model);
    if (!cached || afterDelete) fail(`hasModelInCache said ${cached}, then after deleteModelInCache ${afterDelete}`);

    // 4. The model split in parts: each part read once, in Range requests. It runs the
    // matrix-vector kernel in teams of one subgroup, reducing by shuffles, where the device
    // has subgroups (SwiftShader does, 4 lanes wide: no default launch uses such a team).
    const subgroup = resumed.info.subgroupSize;
    if (!subgroup && /swiftshader/i.test(JSON.stringify(resumed.info.adapterInfo))) {
      fail(`the device has no subgroups on SwiftShader, which offers them: ${JSON.stringify(resumed.info)}`);
    }
    const gemv = subgroup ? `${subgroup},${Math.max(1, 64 / subgroup)},8,2,1` : undefined;
    mark = lineCount(o["ranged-log"]);
    const split = await call("load", o.split, { gemv });
    if (!split.ok) fail(`the split model failed to load: ${split.error.name}: ${split.error.message}`);
    log(`split: gemv ${JSON.stringify(split.info.gemv)}, subgroup size ${subgroup}`);
    if (subgroup && split.info.gemv.reduction !== "subgroup") fail(`gemv in teams of ${subgroup} does not reduce by subgroup shuffles: ${JSON.stringify(split.info.gemv)}`);
    if (!subgroup) log("SKIPPED: no subgroups on this device, so the subgroup reduction is not checked in the browser");
    const splitDir = path.posix.dirname(new URL(o.split, o.ranged).pathname);
    const partReqs = fs.readFileSync(o["ranged-log"], "utf8").split("\n").filter(Boolean).slice(mark)
      .map((l) => l.split(" ")).filter(([m, p]) => m === "GET" && p.startsWith(`${splitDir}/`) && /-of-\d{5}\.gguf$/.test(p));
    const parts = new Set(partReqs.map(([, p]) => p));
    log(`split: loaded in ${split.seconds.toFixed(1)} s from ${parts.size} parts in ${partReqs.length} requests; ${split.last?.text}`);
    if (parts.size < 2) fail(`the split model was read from ${parts.size} file(s): ${JSON.stringify([...parts])}`);
    await sameContinuation(`the split model (gemv ${JSON.stringify(split.info.gemv)})`);

    // 5. Files that are not a model glim runs.
    for (const bad of o.bad) {
      const [file, needle] = bad.split("=");
      const result = await call("load", `models/${file}`);
      log(`${file}: ${JSON.stringify(result.error ?? "loaded")}`);
      if (result.ok || result.error.name !== "ModelLoadError" || !result.error.message.includes(needle)) {
        fail(`${file} should fail with a ModelLoadError mentioning ${JSON.stringify(needle)}`);
      }
    }

    // A server that ignores Range: one 200 response, read once.
    await open(o.plain);
    mark = lineCount(o["plain-log"]);
    const plain = await call("load", o.model);
    if (!plain.ok) fail(`the load from a server without Range failed: ${plain.error.name}: ${plain.error.message}`);
    const got = requests(o["plain-log"], modelPath, mark).filter((r) => r.method === "GET");
    log(`without Range: loaded in ${plain.seconds.toFixed(1)} s from ${got.length} GET (${bytesOf(got)} bytes)`);
    if (got.length !== 1 || got[0].status !== 200 || bytesOf(got) !== o.size) fail(`without Range the file was read as ${JSON.stringify(got)}`);
    await sameContinuation("the model read without Range");

    // Structured output through the worker engine: the same answer as `glim run --raw
    // --json-schema` at f32, and JSON the schema allows.
    const schema = JSON.parse(fs.readFileSync(o.schema, "utf8"));
    const schemaExpected = fs.readFileSync(o["schema-expected"], "utf8").replace(/\n$/, "");
    const held = await call("complete", o["schema-prompt"], 24,
      { response_format: { type: "json_schema", json_schema: { name: "capital", schema } } });
    if (!held.ok) fail(`a response_format request failed: ${held.error.name}: ${held.error.message}`);
    log(`response_format json_schema answers ${JSON.stringify(held.text)} (${held.finish})`);
    if (held.text !== schemaExpected) fail(`the schema's answer ${JSON.stringify(held.text)} is not glim run --json-schema's ${JSON.stringify(schemaExpected)}`);
    const value = JSON.parse(held.text);
    if (!schema.properties.capital.enum.includes(value.capital) || Object.keys(value).length !== 1 || held.finish !== "stop") {
      fail(`the schema's answer breaks it: ${held.text} (${held.finish})`);
    }
    const refused = await call("complete", o["schema-prompt"], 4,
      { response_format: { type: "json_schema", json_schema: { name: "x", schema: { $ref: "#/$defs/none" } } } });
    if (refused.ok || refused.error.name !== "InvalidRequestError" || !refused.error.message.includes("does not compile")) {
      fail(`a schema that does not compile gave ${JSON.stringify(refused)}`);
    }
    log("PASS");
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (error) => {
  console.error(error instanceof Failure ? `FAIL: ${error.message}` : `FAIL: ${error.stack ?? error}`);
  process.exit(1);
});
