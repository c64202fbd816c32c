#!/usr/bin/env bash
# The npm package as a user gets it: `npm pack` of web/pkg installs into a fresh folder,
# imports under Node (every export present), and its types check against usage.ts with
# tsc --noEmit. Run after scripts/build-web.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/package
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tarball=$(cd web/pkg && npm pack --silent --pack-destination "$work")
mkdir "$work/app"
cp "$here/usage.ts" "$here/tsconfig.json" "$work/app/"
cd "$work/app"
npm init -y >/dev/null
npm pkg set type=module >/dev/null
npm install --silent --no-audit --no-fund "$work/$tarball" typescript@5.9.3 >/dev/null
node --input-type=module -e '
import * as glim from "glim-llm";
const want = ["CreateEngine", "CreateWebWorkerEngine", "WebWorkerEngineHandler", "hasModelInCache",
  "deleteModelInCache", "WebGPUUnavailableError", "ModelTooLargeError", "DeviceLostError", "ModelLoadError"];
const missing = want.filter((name) => typeof glim[name] !== "function");
if (missing.length) { console.error("glim-llm lacks", missing.join(", ")); process.exit(1); }
// Without WebGPU, engines refuse with the typed error rather than crashing.
try { await glim.CreateEngine("http://127.0.0.1:1/none/"); process.exit(1); }
catch (e) { if (!(e instanceof glim.WebGPUUnavailableError)) { console.error("wrong error", e); process.exit(1); } }
console.log("glim-llm imports under Node:", want.length, "exports");
'
npx tsc --noEmit -p .
echo "glim-llm: npm pack installs, imports under Node, and its types check ($tarball)"
