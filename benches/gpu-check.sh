#!/usr/bin/env bash
# glim's figures on a real GPU in one call, for the few minutes a GPU machine is lent
# (DEVELOPERS.md; never needed by a test).
#
#   benches/gpu-check.sh --prepare   here, beforehand: builds glim, kernel-bench and
#                                    llama.cpp's llama-bench (benches/peer/build-llamacpp.sh)
#                                    and packs them into target/gpu-kit.tar.xz (at most
#                                    64 MiB, so it travels with the working tree)
#   benches/gpu-check.sh             on the GPU machine, from the repository root: unpacks
#                                    the kit and runs the check (8 minutes at most)
#   benches/gpu-check.sh --small     the same check on a 4-layer model (a dry run on any
#                                    adapter, lavapipe included)
#
# The check: the adapter, `kernel-bench` over every weight format against the copy kernel,
# then `glim synth` of a Llama-2-7B-shaped GGUF in llama.cpp's Q4_K_M mix and in Q4_0,
# `glim bench` on each and llama.cpp's Vulkan `llama-bench` on the same files, and one
# table: prefill and decode tok/s, bits per weight, and decode's read bandwidth against
# the copy kernel's (the target is 70 %). Raw outputs go to $OUT when set (the device
# tool brings that folder back), else to a temporary folder; the table goes to stdout and
# to gpu-check.md there.
set -euo pipefail
cd "$(dirname "$0")/.."

kit=target/gpu-kit.tar.xz
say() { echo "gpu-check: $*" >&2; }

if [ "${1:-}" = --prepare ]; then
    cargo build --release -p glim-cli -p glim-benches >&2
    peer=$(benches/peer/build-llamacpp.sh | tail -1)
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/bin" "$stage/peer" "$stage/fallback"
    cp target/release/glim target/release/kernel-bench "$stage/bin/"
    cp "$peer/llama-bench" "$stage/peer/"
    # llama-bench's own shared libraries (libllama, libggml*) from the build, and the
    # system ones a bare machine may lack (used there only where its own are missing).
    ldd "$peer/llama-bench" | awk '/=> \// {print $1, $3}' | while read -r name lib; do
        case "$lib" in
            "$(dirname "$peer")"/*) cp "$lib" "$stage/peer/$name" ;;
            */libvulkan.so.1 | */libgomp.so.1) cp "$lib" "$stage/fallback/$name" ;;
        esac
    done
    strip "$stage/bin/"* "$stage/peer/"* 2>/dev/null || true
    git rev-parse --short HEAD >"$stage/COMMIT"
    tar -cJf "$kit" -C "$stage" .
    size=$(stat -c %s "$kit")
    say "packed $kit: $((size / 1048576)) MiB ($(tr -d '\n' <"$stage/COMMIT"))"
    if [ "$size" -gt $((64 * 1048576)) ]; then
        say "the kit is over 64 MiB and will not travel"
        exit 1
    fi
    exit 0
fi

shape=llama2-7b
if [ "${1:-}" = --small ]; then
    shape=small
    # llama.cpp skips Vulkan devices of CPU type (lavapipe) unless named; a real GPU needs
    # no such help.
    export GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0}
fi
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deadline=$((SECONDS + 470))
# Runs a step with what is left of the 8 minutes (never more than $1 seconds).
step() {
    local most=$1
    shift
    local left=$((deadline - SECONDS))
    [ "$left" -lt "$most" ] && most=$left
    if [ "$most" -le 5 ]; then
        say "out of time before: $*"
        return 124
    fi
    timeout "$most" "$@"
}

if [ -f "$kit" ]; then
    tar -xJf "$kit" -C "$work"
    glim=$work/bin/glim kbench=$work/bin/kernel-bench llama_bench=$work/peer/llama-bench
    export LD_LIBRARY_PATH="$work/peer${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # The kit's Vulkan loader and OpenMP runtime, only where this machine has none.
    for lib in "$work"/fallback/*; do
        [ -e "$lib" ] || continue
        if ! ldconfig -p 2>/dev/null | grep -q "$(basename "$lib")"; then
            mkdir -p "$work/missing" && ln -sf "$lib" "$work/missing/"
            say "using the kit's $(basename "$lib")"
        fi
    done
    if [ -d "$work/missing" ]; then export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$work/missing"; fi
    say "kit built at commit $(cat "$work/COMMIT"), this tree is at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
else
    say "no $kit (run --prepare first); using this tree's target/release and the peer build"
    glim=target/release/glim kbench=target/release/kernel-bench
    llama_bench=$(benches/peer/build-llamacpp.sh --locate 2>/dev/null || true)/llama-bench
fi

{
    date -u +"%Y-%m-%d %H:%M UTC"
    uname -srm
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    fi
} | tee "$out/machine.txt" >&2

say "kernel-bench, every format (about a minute)"
step 150 "$kbench" --seconds 0.25 >"$out/kernel-bench.txt" 2>&1 || say "kernel-bench failed: see $out/kernel-bench.txt"
copy=$(sed -n 's/^ *\([0-9.]*\) GB\/s counting bytes read.*/\1/p' "$out/kernel-bench.txt" | head -1)

for mix in q4_K_M q4_0; do
    file=$work/$shape-$mix.gguf
    say "glim synth $shape $mix"
    step 120 "$glim" synth "$file" --shape "$shape" --type "$mix" 2>>"$out/synth.txt" || { say "synth failed"; continue; }
    say "glim bench on it"
    step 120 "$glim" bench "$file" --prompt-len 512 --gen 128 --runs 3 --json \
        >"$out/glim-$mix.json" 2>"$out/glim-$mix.log" || say "glim bench failed: see $out/glim-$mix.log"
    if [ -x "$llama_bench" ]; then
        say "llama-bench (Vulkan) on it"
        step 120 "$llama_bench" -m "$file" -p 512 -n 128 -r 3 -ngl 99 -o json \
            >"$out/llama-$mix.json" 2>"$out/llama-$mix.log" || say "llama-bench failed: see $out/llama-$mix.log"
    fi
    rm -f "$file"
done

python3 - "$out" "${copy:-0}" "$shape" <<'PY' | tee "$out/gpu-check.md"
import json, pathlib, sys

out, copy, shape = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rows = []
for mix in ("q4_K_M", "q4_0"):
    try:
        g = json.loads((out / f"glim-{mix}.json").read_text().splitlines()[0])
        dec = g["decode_tok_s"]["median"]
        gbs = g["decode_bytes_per_token"] * dec / 1e9
        rows.append((f"glim {g['format']}", mix, f"{g['bits_per_weight']:.2f}", f"{g['weight_bytes'] / 2**20:.0f}",
                     f"{g['prefill_tok_s']['median']:.1f}", f"{dec:.1f}", f"{gbs:.3g}",
                     f"{gbs / copy:.0%}" if copy else "?", g["adapter"]))
    except Exception as e:  # a step that failed or ran out of time
        rows.append((f"glim", mix, "", "", "", "", "", "", f"no result ({e.__class__.__name__})"))
    try:
        runs = json.loads((out / f"llama-{mix}.json").read_text())
        pp = next(r for r in runs if r["n_prompt"] > 0)
        tg = next(r for r in runs if r["n_gen"] > 0)
        gbs = tg["model_size"] * tg["avg_ts"] / 1e9
        rows.append(("llama.cpp Vulkan", mix, f"{tg['model_size'] * 8 / tg['model_n_params']:.2f}",
                     f"{tg['model_size'] / 2**20:.0f}", f"{pp['avg_ts']:.1f}", f"{tg['avg_ts']:.1f}",
                     f"{gbs:.3g}", f"{gbs / copy:.0%}" if copy else "?", tg.get("gpu_info", "")))
    except Exception as e:
        rows.append(("llama.cpp Vulkan", mix, "", "", "", "", "", "", f"no result ({e.__class__.__name__})"))

print(f"### {shape}, prompt 512, 128 generated, median of 3 (copy kernel: {copy:.0f} GB/s read)\n")
print("| engine | GGUF | bits/weight | weights MiB | prefill tok/s | decode tok/s | decode GB/s read | vs copy | device |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
kb = (out / "kernel-bench.txt").read_text() if (out / "kernel-bench.txt").exists() else ""
summary = [l for l in kb.splitlines() if "geomean" in l]
if summary:
    print("kernel-bench, geometric mean over 4096x4096, 4096x11008, 11008x4096:\n")
    print("```")
    print("\n".join(summary))
    print("```")
PY
