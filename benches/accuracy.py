#!/usr/bin/env python3
"""glim against llama.cpp on the same GGUF file, for each GGUF type glim runs as stored.

    python3 benches/accuracy.py [--types Q4_K_M,Q8_0,...] [--ctx 128] [--markdown FILE]

The default model (SmolLM2-135M-Instruct, Q4_1) is requantized by llama.cpp's own
`llama-quantize --allow-requantize` into each type (llama.cpp picks each tensor's type
as it does for any model: SmolLM2's 576-wide matrices cannot hold 256-weight k-quant
blocks and fall back to its chosen legacy type, so a "Q4_K_M" file mixes Q4_K/Q6_K
`ffn_down` with Q5_0/Q8_0 elsewhere), then the perplexity of tests/reference/text.txt is
measured on that same file by llama.cpp's `llama-perplexity` (CPU backend) and by
`glim ppl` (as stored, on the adapter GLIM_ADAPTER picks). Prints one markdown table:
the tensor types glim loaded, bits per weight, both perplexities and their ratio.

`--vulkan` adds llama.cpp's Vulkan backend (GPU offload; on lavapipe minutes a file).
Requantizing from Q4_1 rounds a second time, so the perplexities rise with fewer bits;
what this measures is whether glim computes what llama.cpp computes on each file.
llama.cpp is built once by benches/peer/build-llamacpp.sh. Python standard library only.
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A type, or TYPE/TENSOR=TYPE... for llama-quantize's --tensor-type overrides (SmolLM2's Q2_K
# mix keeps its only 256-divisible matrix, ffn_down, in Q3_K: the override puts it in Q2_K).
TYPES = ["Q4_1", "Q4_0", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K/ffn_down=q2_K", "Q3_K_M", "Q4_K_M",
         "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS"]
PPL = re.compile(r"Final estimate: PPL = ([0-9.]+)")


def run(cmd, **kw):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.exit(f"accuracy: {' '.join(map(str, cmd))} failed:\n{done.stderr[-2000:]}")
    return done


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--glim", default=str(REPO / "target" / "release" / "glim"))
    ap.add_argument("--markdown")
    ap.add_argument("--vulkan", action="store_true",
                    help="also llama-perplexity on llama.cpp's Vulkan backend (its activations are not "
                         "rounded to 8 bits as its CPU backend's are; minutes a file on lavapipe)")
    args = ap.parse_args()

    peer = Path(run([REPO / "benches" / "peer" / "build-llamacpp.sh"]).stdout.strip().splitlines()[-1])
    if not Path(args.glim).exists():
        run(["cargo", "build", "--release", "-p", "glim-cli"], cwd=REPO)
    source = Path(run([REPO / "scripts" / "fetch-model.sh"]).stdout.strip())
    text = REPO / "tests" / "reference" / "text.txt"
    work = source.parent.parent / "accuracy"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LD_LIBRARY_PATH=str(peer))

    rows = []
    for spec in args.types.split(","):
        ty, *overrides = spec.split("/")
        tag = "-".join([ty] + [o.replace("=", "-") for o in overrides])
        path = source if spec == "Q4_1" else work / f"{source.name.split('.')[0]}.{tag}.gguf"
        if not path.exists():
            part = path.with_suffix(".part")
            extra = [a for o in overrides for a in ("--tensor-type", o)]
            run([peer / "llama-quantize", "--allow-requantize", *extra, source, part, ty], env=env)
            part.rename(path)
        peer_out = run([peer / "llama-perplexity", "-m", path, "-f", text, "-c", args.ctx,
                        "-b", args.ctx, "-ngl", "0", "-dev", "none", "-t", os.cpu_count()], env=env)
        peer_ppl = float(PPL.search(peer_out.stdout + peer_out.stderr).group(1))
        vk_ppl = None
        if args.vulkan:
            # GGML_VK_VISIBLE_DEVICES: without it ggml skips a Vulkan device of CPU type (lavapipe).
            vk_out = run([peer / "llama-perplexity", "-m", path, "-f", text, "-c", args.ctx,
                          "-b", args.ctx, "-ngl", "99"], env=dict(env, GGML_VK_VISIBLE_DEVICES="0"))
            vk_ppl = float(PPL.search(vk_out.stdout + vk_out.stderr).group(1))
        glim_out = run([args.glim, "ppl", path, text, "--ctx", args.ctx])
        glim_ppl = float(PPL.search(glim_out.stdout).group(1))
        load = re.search(r": (.+) weights, ([0-9.]+) MiB", glim_out.stderr)
        formats, mib = (load.group(1), load.group(2)) if load else ("?", "?")
        bits = path.stat().st_size * 8 / 134515008  # SmolLM2-135M's parameters
        row = [spec.replace("/", " with "), formats, f"{bits:.2f}", mib, f"{peer_ppl:.2f}"]
        if args.vulkan:
            row.append(f"{vk_ppl:.2f}")
        rows.append(row + [f"{glim_ppl:.2f}", f"{(glim_ppl / peer_ppl - 1) * 100:+.1f} %"])
        print(f"{spec}: llama.cpp {peer_ppl:.3f}, glim {glim_ppl:.3f} ({formats})", file=sys.stderr)

    vk = " llama.cpp Vulkan perplexity |" if args.vulkan else ""
    lines = ["| file (llama-quantize type) | tensor formats glim runs | file bits/weight | glim weights MiB "
             f"| llama.cpp CPU perplexity |{vk} glim perplexity | glim vs llama.cpp CPU |",
             "| --- " * (8 if args.vulkan else 7) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
