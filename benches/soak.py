#!/usr/bin/env python3
"""Soak test for `glim serve`: many clients for minutes, honest and hostile interleaved.

Starts `glim serve` on 127.0.0.1 (loopback only), asks each prompt once for its greedy
reference answer, then runs --clients concurrent clients for --seconds. Each client loops
over requests of eight kinds in turn:

  0-3  a streamed chat completion, read whole; its text must equal the reference
  4    a stream the client hangs up on after its first pieces of text
  5    a slow reader: the stream read a piece at a time with pauses; must equal the reference
  6    a slow body: the headers, then nothing; the server must shed it (408, or closed)
  7    a malformed request (bad JSON, a wrong method, a body declared past --max-body, a
       field of the wrong type, a prompt past the context): its status and an OpenAI-shaped
       error

Meanwhile `/health` is asked every second (each must answer 200 within 5 s), and the
server's resident memory and open descriptors are sampled. At the end: counts per kind,
failures, health answers, and RSS and descriptors at the start, the end and their peak.
The exit status is 1 when any answer differs from its reference, any check fails, a health
check fails, or memory or descriptors do not come back (RSS more than 64 MiB over its
level after the warm-up, descriptors more than 16 over their start once the clients stop).

Standard library only; reuses load_test.py's client.
"""

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load_test import (  # noqa: E402
    DEFAULT_MODEL,
    PROMPTS,
    ROOT,
    Failure,
    GlimServer,
    ensure_glim_and_model,
    one_request,
    reference,
)

KINDS = ["stream", "stream", "stream", "stream", "leave", "slow-reader", "slow-body", "malformed"]


async def raw(host, port, data, wait=30.0):
    """Sends `data` as is; the status of the answer, or None when the server closes first."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), wait)
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    finally:
        writer.close()


async def streamed(host, port, prompt, args, refs, leave=False, pause=0.0):
    """One streamed answer, checked against its reference (or left after two pieces)."""
    result = {}
    await one_request(host, port, prompt, leave, args, refs, result, pause=pause)
    return "left" if result.get("left") else "ok"


def malformed_cases(host, port, args):
    chat = "/v1/chat/completions"

    def post(body, declared=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        length = declared if declared is not None else len(data)
        head = (f"POST {chat} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n")
        return head.encode() + (b"" if declared is not None else data)

    long_prompt = "word " * (args.ctx * 2)
    return [
        ("bad JSON", post(b"{\"messages\": [}"), 400),
        ("wrong method", f"GET {chat} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(), 405),
        ("declared past --max-body", post(b"", declared=1 << 30), 413),
        ("wrong field type", post({"messages": [{"role": "user", "content": "hi"}],
                                   "temperature": "hot"}), 400),
        ("past the context", post({"messages": [{"role": "user", "content": long_prompt}]}), 400),
    ]


async def client(number, host, port, args, refs, deadline, tally):
    turn = number
    cases = malformed_cases(host, port, args)
    while time.monotonic() < deadline:
        kind = KINDS[turn % len(KINDS)]
        prompt = PROMPTS[turn % len(args.prompts)]
        turn += 1
        try:
            if kind == "stream":
                outcome = await streamed(host, port, prompt, args, refs)
            elif kind == "leave":
                outcome = await streamed(host, port, prompt, args, refs, leave=True)
            elif kind == "slow-reader":
                outcome = await streamed(host, port, prompt, args, refs, pause=0.3)
            elif kind == "slow-body":
                head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
                status = await raw(host, port, head.encode(), wait=60)
                if status not in (408, None):
                    raise Failure(f"a slow body got {status}, not 408")
                outcome = "shed"
            else:
                what, data, want = cases[turn % len(cases)]
                status = await raw(host, port, data)
                if status != want:
                    raise Failure(f"{what}: status {status}, expected {want}")
                outcome = "refused"
            tally[kind][outcome] = tally[kind].get(outcome, 0) + 1
        except (Failure, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            tally["failures"].append(f"client {number} {kind}: {e or type(e).__name__}")


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def watch(host, port, pid, stop, health, samples):
    while not stop.is_set():
        started = time.monotonic()
        try:
            status = await asyncio.wait_for(
                raw(host, port, f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()), 5)
            health.append((status == 200, time.monotonic() - started))
        except (OSError, asyncio.TimeoutError):
            health.append((False, time.monotonic() - started))
        samples.append(sample(pid))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


async def soak(server, args):
    host, port = server.host, server.port
    refs = {p: await reference(host, port, p, args) for p in args.prompts}
    baseline = sample(server.process.pid)
    tally = {k: {} for k in KINDS}
    tally["failures"] = []
    health, samples, stop = [], [], asyncio.Event()
    watcher = asyncio.create_task(watch(host, port, server.process.pid, stop, health, samples))
    started = time.monotonic()
    deadline = started + args.seconds
    await asyncio.gather(*(client(i, host, port, args, refs, deadline, tally)
                           for i in range(args.clients)))
    wall = time.monotonic() - started
    # Once the clients are gone, what they held must be given back: the slow bodies' and
    # hung-up streams' connections close within the server's timeouts.
    await asyncio.sleep(15)
    stop.set()
    await watcher
    after = sample(server.process.pid)
    again = await reference(host, port, args.prompts[0], args)
    if again != refs[args.prompts[0]]:
        tally["failures"].append("the first prompt's answer changed after the soak")
    return tally, health, samples, baseline, after, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=str(DEFAULT_MODEL))
    parser.add_argument("--glim", default=str(ROOT / "target" / "release" / "glim"))
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    args.ignore_eos = False
    args.prompts = PROMPTS[: max(1, min(args.prompts, len(PROMPTS)))]
    ensure_glim_and_model(args.glim, args.model)
    flags = ["--ctx", args.ctx, "--parallel", args.parallel, "--queue", 2 * args.clients,
             "--max-body", 1 << 20]
    with GlimServer(args.glim, args.model, flags) as server:
        tally, health, samples, baseline, after, wall = asyncio.run(soak(server, args))
        adapter = server.adapter()
    failures = tally.pop("failures")
    warm = samples[len(samples) // 5] if samples else baseline
    peak_rss = max(s[0] for s in samples + [after])
    peak_fds = max(s[1] for s in samples + [after])
    bad_health = [h for h in health if not h[0]]
    if after[0] > warm[0] + (64 << 20):
        failures.append(f"RSS grew from {warm[0] >> 20} MiB to {after[0] >> 20} MiB")
    if after[1] > baseline[1] + 16:
        failures.append(f"descriptors went from {baseline[1]} to {after[1]}")
    if bad_health:
        failures.append(f"{len(bad_health)} of {len(health)} health checks failed")
    figures = {
        "adapter": adapter, "clients": args.clients, "seconds": round(wall, 1),
        "outcomes": tally, "health_checks": len(health),
        "health_max_s": round(max((h[1] for h in health), default=0), 3),
        "rss_mib": {"start": baseline[0] >> 20, "after_warmup": warm[0] >> 20,
                    "peak": peak_rss >> 20, "end": after[0] >> 20},
        "descriptors": {"start": baseline[1], "peak": peak_fds, "end": after[1]},
        "failures": failures,
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
