#!/usr/bin/env bash
# Builds the npm package glim-llm into web/pkg/: the engine compiled to wasm32, its
# wasm-bindgen glue (the CLI pinned to the wasm-bindgen crate's version in Cargo.lock,
# installed with cargo when missing), wasm-opt where the machine has it, and the package's
# own JavaScript, types, README and package.json from web/js/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-wasm.sh --release glim-web

version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$version" ]; then
    echo "build-web: no wasm-bindgen in Cargo.lock" >&2
    exit 1
fi
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
    echo "build-web: installing wasm-bindgen-cli $version (several minutes, once)" >&2
    cargo install wasm-bindgen-cli --version "$version"
fi

out=web/pkg
rm -rf "$out"
wasm-bindgen --target web --out-dir "$out" --out-name glim_web \
    target/wasm32-unknown-unknown/release/glim_web.wasm
if command -v wasm-opt >/dev/null; then
    if wasm-opt -O2 --all-features "$out/glim_web_bg.wasm" -o "$out/glim_web_bg.opt.wasm"; then
        mv "$out/glim_web_bg.opt.wasm" "$out/glim_web_bg.wasm"
    else
        echo "build-web: wasm-opt failed; keeping the unoptimized module" >&2
        rm -f "$out/glim_web_bg.opt.wasm"
    fi
else
    echo "build-web: no wasm-opt on this machine; the module is not size-optimized" >&2
fi
cp web/js/index.js web/js/gguf.js web/js/index.d.ts web/js/package.json web/js/README.md "$out/"
# wasm-bindgen writes a .gitignore of its own; the package ships what package.json lists.
rm -f "$out/.gitignore"
echo "build-web: package in $out ($(du -sh "$out" | cut -f1))" >&2
