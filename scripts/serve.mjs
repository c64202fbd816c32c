#!/usr/bin/env node
// A tiny static server for the browser chat page (Node 20, no dependencies), on 127.0.0.1 only.
//
//   node scripts/serve.mjs [--port 8765] [--www www] [--pkg web/pkg] [--models DIR] [--log FILE]
//                          [--ranges yes|no] [--cut-at BYTE]
//
//   /            -> the www folder (index.html for a folder)
//   /pkg/...     -> the glim-llm package folder
//   /models/...  -> the models folder
//   /models.json -> the models folder's models.json when it has one, else www's
//
// --port 0 picks a free port. The first line on stdout is always `serving http://127.0.0.1:PORT/`.
// Files are served with single-range `Range` requests (206, or 416 when unsatisfiable), an
// ETag and Last-Modified; `--ranges no` ignores Range, as some servers do (200, whole file).
// With --log, every request is appended to FILE as one line `METHOD PATH STATUS BYTES`
// (BYTES: the body's length, or `a-b/size` for a range), written before the response is sent
// (so a test can count which model files, and how much of them, the page fetched).
// `--cut-at BYTE` (for tests) breaks off every response of a .gguf file that would send that
// byte of the file, just before it, until `GET /__heal` is requested.
// Every response says `Cache-Control: no-cache`: the package keeps its own Cache Storage copy.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".wasm": "application/wasm",
  ".bin": "application/octet-stream",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
  ".map": "application/json; charset=utf-8",
};

function parseArgs(argv) {
  const options = { port: "8765", www: "www", pkg: "web/pkg", models: "models", log: null, ranges: "yes", "cut-at": null };
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].replace(/^--/, "");
    if (!argv[i].startsWith("--") || !(name in options) || i + 1 >= argv.length) {
      console.error(`usage: node scripts/serve.mjs [--port N] [--www DIR] [--pkg DIR] [--models DIR] [--log FILE] [--ranges yes|no] [--cut-at BYTE]\nbad argument: ${argv[i]}`);
      process.exit(2);
    }
    options[name] = argv[++i];
  }
  const port = Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`bad --port ${options.port}`);
    process.exit(2);
  }
  const cutAt = options["cut-at"] === null ? null : Number(options["cut-at"]);
  if (!["yes", "no"].includes(options.ranges) || (cutAt !== null && !(Number.isInteger(cutAt) && cutAt >= 0))) {
    console.error(`bad --ranges ${options.ranges} or --cut-at ${options["cut-at"]}`);
    process.exit(2);
  }
  return { ...options, port, ranges: options.ranges === "yes", cutAt };
}

const options = parseArgs(process.argv.slice(2));
const mounts = [
  ["/pkg/", path.resolve(options.pkg)],
  ["/models/", path.resolve(options.models)],
  ["/", path.resolve(options.www)],
];

// The file a URL path names, or null when it is malformed or tries to leave its folder.
function resolveFile(urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (!decoded.startsWith("/") || decoded.includes("\0") || decoded.includes("\\")) return null;
  if (decoded.split("/").some((part) => part === "..")) return null;
  // A models folder that lists its own models (a test's) replaces the page's list.
  const ownList = path.join(path.resolve(options.models), "models.json");
  if (decoded === "/models.json" && fs.existsSync(ownList)) return ownList;
  const [prefix, root] = mounts.find(([p]) => decoded.startsWith(p));
  const file = path.join(root, decoded.slice(prefix.length));
  if (file !== root && !file.startsWith(root + path.sep)) return null;
  return file;
}

function statFile(file) {
  try {
    let stat = fs.statSync(file);
    if (stat.isDirectory()) {
      file = path.join(file, "index.html");
      stat = fs.statSync(file);
    }
    return stat.isFile() ? { file, size: stat.size, mtime: stat.mtime } : null;
  } catch {
    return null;
  }
}

// The one range `Range: bytes=...` asks of a `size`-byte file: { start, end } (end
// exclusive), "unsatisfiable", or null to send the whole file (no header, several ranges,
// or a form this server does not read).
function requestedRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header ?? "");
  if (!m || (m[1] === "" && m[2] === "")) return null;
  let start, end;
  if (m[1] === "") {
    start = Math.max(0, size - Number(m[2]));
    end = size;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size : Math.min(size, Number(m[2]) + 1);
  }
  return start < end && start < size ? { start, end } : "unsatisfiable";
}

let cutting = options.cutAt !== null;

const server = http.createServer((req, res) => {
  const urlPath = (req.url ?? "/").split("?")[0].split("#")[0];
  const finish = (status, headers = {}, body = null) => {
    const sent = req.method === "HEAD" ? 0 : (headers["Content-Range"]?.replace(/^bytes /, "") ?? headers["Content-Length"] ?? 0);
    if (options.log) fs.appendFileSync(options.log, `${req.method} ${urlPath} ${status} ${sent}\n`);
    res.writeHead(status, { "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", ...headers });
    return body;
  };
  const fail = (status, message, extra = {}) => {
    const text = `${status} ${message}\n`;
    finish(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text), ...extra });
    res.end(req.method === "HEAD" ? undefined : text);
  };

  if (req.method !== "GET" && req.method !== "HEAD") return fail(405, "Method Not Allowed", { Allow: "GET, HEAD" });
  if (urlPath === "/__heal") {
    cutting = false;
    return fail(200, "OK");
  }
  const file = resolveFile(urlPath);
  if (!file) return fail(400, "Bad Request");
  const found = statFile(file);
  if (!found) return fail(404, "Not Found");

  const type = TYPES[path.extname(found.file).toLowerCase()] ?? "application/octet-stream";
  const headers = {
    "Content-Type": type,
    ETag: `"${found.size.toString(16)}-${found.mtime.getTime().toString(16)}"`,
    "Last-Modified": found.mtime.toUTCString(),
  };
  if (options.ranges) headers["Accept-Ranges"] = "bytes";
  const range = options.ranges ? requestedRange(req.headers.range, found.size) : null;
  if (range === "unsatisfiable") return fail(416, "Range Not Satisfiable", { "Content-Range": `bytes */${found.size}` });
  const { start, end } = range ?? { start: 0, end: found.size };
  if (range) {
    finish(206, { ...headers, "Content-Range": `bytes ${start}-${end - 1}/${found.size}`, "Content-Length": end - start });
  } else {
    finish(200, { ...headers, "Content-Length": found.size });
  }
  if (req.method === "HEAD" || start === end) return res.end();
  // A test's broken connection: the bytes before the cut, then the socket closes.
  const cut = cutting && found.file.endsWith(".gguf") && start <= options.cutAt && options.cutAt < end;
  if (cut && options.cutAt === start) {
    res.flushHeaders();
    return res.destroy();
  }
  const stream = fs.createReadStream(found.file, { start, end: (cut ? options.cutAt : end) - 1 });
  stream.on("error", () => res.destroy());
  if (cut) {
    stream.on("end", () => res.destroy());
    stream.pipe(res, { end: false });
  } else {
    stream.pipe(res);
  }
});

server.listen(options.port, "127.0.0.1", () => {
  console.log(`serving http://127.0.0.1:${server.address().port}/`);
  console.log(`  /        ${mounts[2][1]}\n  /pkg/    ${mounts[0][1]}\n  /models/ ${mounts[1][1]}`);
  if (options.log) console.log(`  log      ${path.resolve(options.log)}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
