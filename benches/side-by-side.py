#!/usr/bin/env python3
"""glim next to llama.cpp on the same GGUF and the same machine (issue #8).

    python3 benches/side-by-side.py [GGUF] [--rounds 3] [--prompt-len 128] [--gen 64]
        [--glim PATH] [--quant q4f16 ...] [--markdown FILE]

Runs, round after round, llama.cpp's llama-bench on its Vulkan backend, llama-bench on its
CPU backend (all cores) and `glim bench`, one measured run each per round, so that the
three engines see the same machine state (thermals, other load) in turn; then prints
median (min-max) prefill and decode tokens/s over the rounds, weight memory, bytes read
per decode token, and glim's ratio to each llama.cpp backend.

llama.cpp is built once by benches/peer/build-llamacpp.sh (about 10 minutes on 2 cores) in
a cache outside the repository. Python standard library only.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "benches" / "peer" / "build-llamacpp.sh"
MIB = 1024 * 1024

# Nominal bits per weight of glim's formats (README "Weight formats") and of the GGUF types
# llama.cpp may run (llama.cpp's block layouts: e.g. Q4_1 = 32 4-bit codes + f16 scale + f16 min).
GLIM_BITS = {"q4f16": 4.5, "q3f16": 3.6, "f16": 16.0}
GGUF_BITS = {"Q4_0": 4.5, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_1": 6.0, "Q8_0": 8.5,
             "F16": 16.0, "BF16": 16.0, "F32": 32.0}


class StepError(Exception):
    """A command that failed; the message names it and ends with its stderr's tail."""


def nproc():
    return len(os.sched_getaffinity(0))


def default_model():
    home = os.environ.get("GLIM_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "glim")
    return Path(home) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def show(cmd, env=None):
    """A command as one shell line, with the environment variables it sets in front."""
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())
    return prefix + shlex.join(str(c) for c in cmd)


def tail(text, lines=15):
    return "\n".join(text.strip().splitlines()[-lines:])


def run(cmd, env=None, capture_stderr=True):
    """Runs a command and returns its stdout; StepError when it fails."""
    try:
        done = subprocess.run([str(c) for c in cmd], env={**os.environ, **(env or {})},
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE if capture_stderr else None, text=True)
    except OSError as e:
        raise StepError(f"could not start: {show(cmd, env)}\n  {e}") from None
    if done.returncode != 0:
        msg = f"failed (exit status {done.returncode}): {show(cmd, env)}"
        if capture_stderr and done.stderr.strip():
            msg += "\n  stderr, last lines:\n" + "\n".join("    " + l for l in tail(done.stderr).splitlines())
        raise StepError(msg)
    return done.stdout


@contextlib.contextmanager
def progress(r, rounds, what):
    """Says on stderr which run is under way, and how long it took."""
    print(f"round {r}/{rounds}: {what} ...", end="", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        yield
    finally:
        print(f" {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


def spread(samples):
    """Median, least and most of a list of tokens/s figures, or None for no samples."""
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def fmt_spread(s):
    if s is None:
        return "n/a"
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def fmt_mib(n):
    return "n/a" if n is None else f"{n / MIB:.1f}"


class Engine:
    """One row of the table: an engine on one backend, and what its runs measured."""

    def __init__(self, label):
        self.label = label
        self.device = None
        self.weight_bytes = None
        self.read_bytes = None
        self.bits = None
        self.params = None  # parameter count, where the engine reports it
        self.prefill = []
        self.decode = []
        self.error = None  # set on the first failure; the engine is not run again


# --- llama.cpp ---------------------------------------------------------------------------

def llama_bin_dir(args):
    """The folder of the llama.cpp binaries, built on first use unless --skip-build."""
    located = subprocess.run(["bash", BUILD_SCRIPT, "--locate"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    if not located.stdout.strip():
        raise StepError(f"failed: bash {BUILD_SCRIPT} --locate printed no folder")
    if located.returncode == 0 or args.dry_run:
        if located.returncode != 0:
            print(show(["bash", BUILD_SCRIPT]))
        return Path(located.stdout.strip().splitlines()[-1])
    if args.skip_build:
        raise StepError(f"llama.cpp is not built (--skip-build); build it with: bash {BUILD_SCRIPT}")
    print("llama.cpp: building it (about 10 minutes on 2 cores)", file=sys.stderr)
    # The build script's progress goes straight to the terminal; its stdout ends with the folder.
    out = run(["bash", BUILD_SCRIPT], capture_stderr=False)
    return Path(out.strip().splitlines()[-1])


def llama_has_vulkan(bin_dir):
    cache = bin_dir.parent / "CMakeCache.txt"
    return cache.is_file() and "GGML_VULKAN:BOOL=ON" in cache.read_text(errors="replace")


def llama_command(bin_dir, gguf, args, vulkan):
    env = {"LD_LIBRARY_PATH": ":".join(filter(None, [str(bin_dir), os.environ.get("LD_LIBRARY_PATH")]))}
    cmd = [bin_dir / "llama-bench", "-m", gguf, "-p", args.prompt_len, "-n", args.gen, "-r", 1]
    if vulkan:
        # Without it ggml skips a Vulkan device of CPU type (lavapipe), and would run on the CPU.
        env["GGML_VK_VISIBLE_DEVICES"] = "0"
        cmd += ["-ngl", 99]
    else:
        cmd += ["-ngl", 0, "-t", nproc(), "-dev", "none"]
    return cmd + ["-o", "json"], env


def parse_llama_bench(stdout, engine, vulkan):
    """Adds one llama-bench -o json result (a list of records) to engine."""
    try:
        records = json.loads(stdout[stdout.index("["):])
    except ValueError as e:
        raise StepError(f"llama-bench printed no JSON list ({e}); stdout began: {stdout[:200]!r}") from None
    for rec in records:
        if vulkan and not rec.get("gpu_info"):
            raise StepError("llama-bench found no Vulkan device (its gpu_info is empty), so it ran on the CPU")
        if rec.get("n_prompt", 0) > 0 and rec.get("n_gen", 0) == 0:
            engine.prefill.append(float(rec["avg_ts"]))
        elif rec.get("n_gen", 0) > 0 and rec.get("n_prompt", 0) == 0:
            engine.decode.append(float(rec["avg_ts"]))
        engine.weight_bytes = rec.get("model_size", engine.weight_bytes)
        # Every weight is read once per decode token, but for an untied token embedding (one row).
        engine.read_bytes = engine.weight_bytes
        engine.device = rec.get("gpu_info") if vulkan else rec.get("cpu_info")
        if not vulkan and rec.get("n_threads"):
            engine.label = f"llama.cpp CPU ({rec['n_threads']} threads)"
        quant = re.search(r"\b(Q\d_\d|BF16|F16|F32)\b", rec.get("model_type", ""))
        engine.bits = GGUF_BITS.get(quant.group(1)) if quant else None
        engine.params = rec.get("model_n_params")


# --- glim --------------------------------------------------------------------------------

def glim_binary(args):
    if args.glim:
        glim = Path(args.glim)
        if not glim.is_file() and not args.dry_run:
            raise StepError(f"--glim {glim}: no such file")
        return glim
    glim = REPO / "target" / "release" / "glim"
    if not glim.is_file():
        build = ["cargo", "build", "--release", "-p", "glim-cli"]
        if args.dry_run:
            print(f"(cd {shlex.quote(str(REPO))} && {shlex.join(build)})")
        else:
            print(f"glim: {glim} is missing; building it: {shlex.join(build)}", file=sys.stderr)
            subprocess.run(build, cwd=REPO, check=False)
            if not glim.is_file():
                raise StepError(f"failed: {shlex.join(build)} (in {REPO}) did not produce {glim}")
    return glim


def glim_command(glim, gguf, args):
    cmd = [glim, "bench", gguf]
    for q in args.quant:
        cmd += ["--quant", q]
    return cmd + ["--prompt-len", args.prompt_len, "--gen", args.gen, "--runs", 1, "--json"]


def tok_s_samples(value):
    """glim's {"median", "min", "max", "runs"} figure as a list of samples."""
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        runs = value.get("runs")
        if isinstance(runs, list) and runs:
            return [float(r) for r in runs]
        if isinstance(value.get("median"), (int, float)):
            return [float(value["median"])]
    return []


def parse_glim(stdout, engines):
    """Adds one `glim bench --json` result (one JSON object per line, per format) to engines."""
    seen = 0
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        fmt = str(row.get("format", "?"))
        engine = engines.setdefault(fmt, Engine(f"glim {fmt}"))
        seen += 1
        detail = ", ".join(filter(None, [row.get("backend"),
                                         row.get("precision") and f"{row['precision']} activations"]))
        engine.device = f"{row.get('adapter', '?')}" + (f" ({detail})" if detail else "")
        engine.weight_bytes = row.get("weight_bytes")
        engine.read_bytes = row.get("decode_bytes_per_token")
        engine.bits = row.get("bits_per_weight") or GLIM_BITS.get(fmt.split("_")[0])
        engine.prefill += tok_s_samples(row.get("prefill_tok_s"))
        engine.decode += tok_s_samples(row.get("decode_tok_s"))
    if seen == 0:
        raise StepError(f"glim bench printed no JSON line; stdout began: {stdout[:200]!r}")


# --- report ------------------------------------------------------------------------------

COLUMNS = ["engine", "device", "WM (MiB)", "bits/weight", "prefill tok/s, median (min-max)",
           "decode tok/s, median (min-max)", "read per decode token (MiB)"]


def table_rows(engines):
    rows = []
    for e in engines:
        if e.error is not None and not e.prefill and not e.decode:
            continue
        rows.append([e.label, e.device or "?", fmt_mib(e.weight_bytes),
                     "n/a" if e.bits is None else f"{e.bits:.1f}",
                     fmt_spread(spread(e.prefill)), fmt_spread(spread(e.decode)),
                     fmt_mib(e.read_bytes)])
    return rows


def ratio_lines(peers, glims):
    lines = []
    for g in glims:
        for p in peers:
            parts = []
            for what, gs, ps in (("prefill", g.prefill, p.prefill), ("decode", g.decode, p.decode)):
                if gs and ps:
                    parts.append(f"{what} {statistics.median(gs) / statistics.median(ps):.2f}x")
            if parts:
                lines.append(f"{g.label} / {p.label}: " + ", ".join(parts))
    return lines


def notes(peers, glims, args, glim_error):
    rounds = f"{args.rounds} round" + ("s" if args.rounds > 1 else "")
    out = [f"Tokens/s: one measured run per engine per round, {rounds} taken in turn; prefill of "
           f"{args.prompt_len} tokens and decode of {args.gen} tokens, each from an empty context "
           "(as llama-bench measures)."]
    for p in peers:
        if p.weight_bytes and p.params:
            out.append(f"llama.cpp WM: the GGUF's model_size, {p.weight_bytes * 8 / p.params:.2f} bits/weight on "
                       f"average over all {p.params} parameters (embeddings and norms included).")
            break
    out.append("Read per decode token: for llama.cpp its model_size, since every weight is read once per token; "
               "the KV cache of a context this short is small beside it."
               + (" For glim, its own count of weight and KV bytes read." if glims else ""))
    bits = ", ".join(f"{g.label} {g.bits:.2f}" for g in glims if g.bits is not None)
    if bits:
        out.append(f"Bits per weight: {bits}; GGUF Q4_1 5.0 (32 4-bit codes + an f16 scale and an f16 min).")
    for p in peers:
        if p.error is not None and not p.prefill and not p.decode:
            out.append(f"{p.label}: not measured: {p.error.splitlines()[0]}")
    if glim_error is not None:
        out.append(f"glim: {glim_error.splitlines()[0]}")
    return out


def print_text(rows, ratios, note_lines):
    widths = [max(len(str(r[i])) for r in [COLUMNS] + rows) for i in range(len(COLUMNS))]
    for r in [COLUMNS] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    for block in (ratios, note_lines):
        if block:
            print()
            print("\n".join(block))


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def write_markdown(path, rows, ratios, note_lines, glims, load):
    adapters = sorted({g.device for g in glims if g.device})
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# glim and llama.cpp, side by side",
        "",
        f"- date: {now}",
        f"- machine: {platform.machine()}, {cpu_model()}, {nproc()} cores; load average {load:.2f} at the start",
        *([f"- glim adapter: {', '.join(adapters)}"] if adapters else []),
        f"- command: `{shlex.join(['python3'] + sys.argv)}`",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(" --- " for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    if ratios:
        lines += [""] + [f"- {r}" for r in ratios]
    for note in note_lines:
        lines += ["", note]
    Path(path).write_text("\n".join(lines) + "\n")
    print(f"\nwrote {path}")


# --- main --------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", nargs="?", type=Path, default=None,
                    help=f"the model (default: {default_model()}, fetched if missing)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of one run per engine (default 3)")
    ap.add_argument("--prompt-len", type=int, default=128, help="prompt tokens for prefill (default 128)")
    ap.add_argument("--gen", type=int, default=64, help="tokens generated for decode (default 64)")
    ap.add_argument("--glim", help="the glim binary (default: target/release/glim, built if missing)")
    ap.add_argument("--quant", action="append", default=None,
                    help="convert glim's weights to this format; repeat for several (default: the GGUF as stored)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the results as a markdown table")
    ap.add_argument("--skip-build", action="store_true", help="fail instead of building llama.cpp")
    ap.add_argument("--peer-only", action="store_true", help="run llama.cpp only, not glim")
    ap.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    args = ap.parse_args()
    args.quant = args.quant or []
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    try:
        gguf = args.gguf
        if gguf is None:
            gguf = default_model()
            if not gguf.is_file():
                fetch = ["bash", REPO / "scripts" / "fetch-model.sh"]
                if args.dry_run:
                    print(show(fetch))
                else:
                    gguf = Path(run(fetch).strip().splitlines()[-1])
        elif not gguf.is_file() and not args.dry_run:
            raise StepError(f"{gguf}: no such file")
        gguf = gguf.resolve()
        bin_dir = llama_bin_dir(args)
        glim = None if args.peer_only else glim_binary(args)
    except StepError as e:
        print(f"side-by-side: {e}", file=sys.stderr)
        return 1

    vulkan = Engine("llama.cpp Vulkan")
    cpu = Engine("llama.cpp CPU")
    peers = [vulkan, cpu]
    if bin_dir.is_dir() and not llama_has_vulkan(bin_dir):
        vulkan.error = "this llama.cpp build has no Vulkan backend (no glslc or Vulkan headers when it was built)"
        print(f"skipping llama.cpp Vulkan: {vulkan.error}")
    glims = {}  # format -> Engine, filled from glim's output
    glim_error = None
    load = os.getloadavg()[0]
    if load > 0.5 * nproc() and not args.dry_run:
        # llama.cpp's CPU threads spin-wait for each other: sharing cores costs it most.
        print(f"warning: load average {load:.1f} on {nproc()} cores before the start: other processes "
              "compete with the measurements, llama.cpp's CPU backend most")

    for r in range(1, args.rounds + 1):
        for engine in peers:
            if engine.error is not None:
                continue
            cmd, env = llama_command(bin_dir, gguf, args, engine is vulkan)
            if args.dry_run:
                print(show(cmd, env))
                continue
            try:
                with progress(r, args.rounds, engine.label):
                    parse_llama_bench(run(cmd, env), engine, engine is vulkan)
            except StepError as e:
                engine.error = str(e)
                print(f"skipping {engine.label} from now on: {e}")
        if glim is not None and glim_error is None:
            cmd = glim_command(glim, gguf, args)
            if args.dry_run:
                print(show(cmd))
            else:
                try:
                    with progress(r, args.rounds, f"glim {' '.join(args.quant) or 'as stored'}"):
                        parse_glim(run(cmd), glims)
                except StepError as e:
                    glim_error = str(e)
                    print(f"glim: {e}")
    if args.dry_run:
        return 0

    glim_rows = list(glims.values())
    rows = table_rows(peers + glim_rows)
    ratios = ratio_lines([p for p in peers if p.prefill or p.decode], glim_rows)
    note_lines = notes(peers, glim_rows, args, glim_error)
    print()
    print_text(rows, ratios, note_lines)
    if args.markdown:
        write_markdown(args.markdown, rows, ratios, note_lines, glim_rows, load)

    if glim_error is not None:
        return 1
    if not any(p.prefill or p.decode for p in peers):
        print("side-by-side: no llama.cpp backend could run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
