#!/usr/bin/env python3
"""Load test for `glim serve`: many streaming clients at once, some of them leaving early.

Starts `glim serve` on 127.0.0.1 (or uses --url, which must be a loopback address), asks
each distinct prompt once, one at a time, for its greedy reference answer, then lets
--clients concurrent clients stream --requests chat completions between them. Every
--disconnect-every'th request hangs up after its first chunks of text. It reports the
requests completed, the aggregate tokens/s, and p50/p95 time to first token and latency;
it checks that every completed stream is well formed (chunks, one finish reason, usage,
`[DONE]`) and that its text equals the reference. The exit status is 1 if any check fails.

--streams 1,4,8 measures batching instead: for each count K, K clients stream 2K requests
(none leaving) and a table gives the aggregate tokens/s against one stream's; with
--ignore-eos every answer runs to --max-tokens, so the table measures decoding.

Standard library only, bounded in requests and in time (--time-limit).
"""

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_MODEL = (
    pathlib.Path(os.environ.get("GLIM_HOME", pathlib.Path.home() / ".cache" / "glim"))
    / "models"
    / "SmolLM2-135M-Instruct.Q4_1.gguf"
)
PROMPTS = [
    "What is the capital of France?",
    "Name three colors.",
    "What is 2 plus 2?",
    "Write a haiku about the sea.",
    "Who wrote Hamlet?",
    "Give me a word that rhymes with cat.",
    "What is the boiling point of water?",
    "Name a planet in the solar system.",
    "What language is spoken in Brazil?",
    "How many legs does a spider have?",
    "What is the opposite of hot?",
    "Suggest a name for a dog.",
    "What color is the sky on a clear day?",
    "Translate 'hello' into Spanish.",
    "What do bees make?",
    "Name a fruit that is yellow.",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Failure(Exception):
    pass


def percentile(values, p):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


async def http_request(host, port, path, body):
    """POSTs JSON; returns (status, headers, reader, writer) with the body unread."""
    reader, writer = await asyncio.open_connection(host, port)
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head.encode() + data)
    await writer.drain()
    status_line = (await reader.readline()).decode()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise Failure(f"not an HTTP status line: {status_line!r}")
    headers = {}
    while True:
        line = (await reader.readline()).decode()
        if line in ("\r\n", "\n", ""):
            break
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers, reader, writer


async def body_pieces(headers, reader):
    """The body as it arrives, chunked or not."""
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            chunk = await reader.readexactly(size + 2)
            yield chunk[:size]
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        yield await reader.read()


async def whole_body(headers, reader):
    return b"".join([piece async for piece in body_pieces(headers, reader)])


def chat_body(prompt, args, stream):
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": args.max_tokens,
        "stream": stream,
    }
    if args.ignore_eos:
        body["ignore_eos"] = True
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def reference(host, port, prompt, args):
    status, headers, reader, writer = await http_request(
        host, port, "/v1/chat/completions", chat_body(prompt, args, False)
    )
    body = await whole_body(headers, reader)
    writer.close()
    if status != 200:
        raise Failure(f"reference for {prompt!r}: status {status}: {body[:300]!r}")
    response = json.loads(body)
    return {
        "text": response["choices"][0]["message"]["content"],
        "finish_reason": response["choices"][0]["finish_reason"],
        "tokens": response["usage"]["completion_tokens"],
    }


def check_stream(events, ref):
    """Checks a finished stream's `data:` payloads; returns its completion tokens."""
    if not events or events[-1] != "[DONE]":
        raise Failure("the stream does not end in data: [DONE]")
    chunks = []
    for data in events[:-1]:
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise Failure(f"a chunk is not JSON: {data[:200]!r}")
        if "error" in chunk:
            raise Failure(f"the stream failed: {chunk['error']}")
        if chunk.get("object") != "chat.completion.chunk":
            raise Failure(f"not a chat.completion.chunk: {data[:200]!r}")
        chunks.append(chunk)
    if len({c.get("id") for c in chunks}) != 1:
        raise Failure("the chunks do not share one id")
    usage = chunks[-1]
    if usage.get("choices") != [] or not isinstance(usage.get("usage"), dict):
        raise Failure("the last chunk is not the usage chunk asked for by include_usage")
    choices = [c["choices"] for c in chunks[:-1]]
    if any(len(c) != 1 or c[0].get("index") != 0 for c in choices):
        raise Failure("a chunk does not hold exactly choice 0")
    finishes = [c[0].get("finish_reason") for c in choices if c[0].get("finish_reason")]
    if len(finishes) != 1 or choices[-1][0].get("finish_reason") != finishes[0]:
        raise Failure(f"not one finish reason, last: {finishes}")
    if finishes[0] != ref["finish_reason"]:
        raise Failure(f"finish reason {finishes[0]!r}, alone {ref['finish_reason']!r}")
    text = "".join(c[0].get("delta", {}).get("content") or "" for c in choices)
    if text != ref["text"]:
        raise Failure(f"answer {text!r} differs from its reference {ref['text']!r}")
    tokens = usage["usage"].get("completion_tokens")
    if tokens != ref["tokens"]:
        raise Failure(f"{tokens} completion tokens, alone {ref['tokens']}")
    return tokens


async def one_request(host, port, prompt, leaves, args, refs, result, pause=0.0):
    """Streams one answer into `result`: ttft, then tokens and latency, or left, or error.
    With `pause`, waits that many seconds after each piece read (a slow reader)."""
    sent = time.monotonic()
    while True:
        status, headers, reader, writer = await http_request(
            host, port, "/v1/chat/completions", chat_body(prompt, args, True)
        )
        if status != 503:
            break
        # The queue is full: wait as the server asks, as a client should.
        await whole_body(headers, reader)
        writer.close()
        result["retries"] = result.get("retries", 0) + 1
        await asyncio.sleep(float(headers.get("retry-after", "1")))
    try:
        if status != 200:
            body = await whole_body(headers, reader)
            raise Failure(f"status {status}: {body[:300]!r}")
        if not headers.get("content-type", "").startswith("text/event-stream"):
            raise Failure(f"content type {headers.get('content-type')!r}")
        events, pending, texts = [], b"", 0
        async for piece in body_pieces(headers, reader):
            pending += piece
            *lines, pending = pending.split(b"\n")
            for line in lines:
                line = line.decode().rstrip("\r")
                if not line.startswith("data: "):
                    continue  # blank separators and keep-alive comments
                events.append(line[len("data: "):])
                if '"content"' in line:
                    result.setdefault("ttft", time.monotonic() - sent)
                    texts += 1
            if leaves and texts >= 2:
                result["left"] = True
                return
            if pause:
                await asyncio.sleep(pause)
        result["tokens"] = check_stream(events, refs[prompt])
        result["latency"] = time.monotonic() - sent
    finally:
        writer.close()


async def run_clients(host, port, args, refs, clients, requests, disconnect_every):
    """`clients` concurrent clients share `requests` streamed requests; every
    `disconnect_every`th hangs up early. Returns the figures."""
    counter = iter(range(requests))
    results = []

    async def client():
        for number in counter:
            leaves = disconnect_every > 0 and number % disconnect_every == disconnect_every - 1
            result = {"number": number, "leaves": leaves}
            results.append(result)
            try:
                await one_request(host, port, prompt_of(number, args), leaves, args, refs, result)
            except (Failure, OSError, asyncio.IncompleteReadError, ValueError) as e:
                result["error"] = str(e) or type(e).__name__

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.monotonic() - started
    completed = [r for r in results if "tokens" in r]
    ttft = [r["ttft"] for r in results if "ttft" in r]
    latency = [r["latency"] for r in completed]
    tokens = sum(r["tokens"] for r in completed)
    return {
        "clients": clients, "requests": requests,
        "leaving": sum(r["leaves"] for r in results),
        "completed": len(completed), "disconnected": sum(1 for r in results if r.get("left")),
        "failures": [f"request {r['number']}: {r['error']}" for r in results if "error" in r],
        "retries_503": sum(r.get("retries", 0) for r in results),
        "wall_s": wall, "tokens": tokens, "tok_s": tokens / wall if wall else 0.0,
        "ttft_p50_s": percentile(ttft, 50), "ttft_p95_s": percentile(ttft, 95),
        "latency_p50_s": percentile(latency, 50), "latency_p95_s": percentile(latency, 95),
    }


def prompt_of(number, args):
    return args.prompts[number % len(args.prompts)]


async def load(host, port, args):
    """References one at a time, then the load (or each --streams count), then one more
    request to show the server still answers the same."""
    used = {prompt_of(i, args) for i in range(max(args.requests, 2 * max(args.streams or [0])))}
    refs = {}
    started = time.monotonic()
    for prompt in args.prompts:
        if prompt in used:
            refs[prompt] = await reference(host, port, prompt, args)
    alone_s = time.monotonic() - started
    alone = {"requests": len(refs), "tokens": sum(r["tokens"] for r in refs.values()),
             "wall_s": alone_s}
    alone["tok_s"] = alone["tokens"] / alone_s if alone_s else 0.0
    runs = []
    if args.streams:
        for k in args.streams:
            runs.append(await run_clients(host, port, args, refs, k, 2 * k, 0))
    else:
        runs.append(await run_clients(host, port, args, refs, args.clients, args.requests,
                                      args.disconnect_every))
    first = args.prompts[0]
    after = await reference(host, port, first, args) == refs[first]
    return alone, runs, after


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GlimServer:
    """`glim serve MODEL FLAGS` on a free loopback port, ready once entered, stopped on
    exit; its stderr goes to a temporary log."""

    def __init__(self, glim, model, flags, ready_within=300):
        self.glim, self.model, self.flags = str(glim), str(model), [str(f) for f in flags]
        self.host, self.port = "127.0.0.1", free_port()
        self.ready_within = ready_within

    @property
    def url(self):
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self):
        self.log = tempfile.TemporaryFile("w+")
        command = [self.glim, "serve", self.model, "--port", str(self.port), *self.flags]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log)
        try:
            wait_ready(self.host, self.port, self.process, self.ready_within)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def adapter(self):
        """The model line glim prints: format, weights, context and adapter."""
        return next((l.strip() for l in self.log_text().splitlines()
                     if " on " in l and "weights" in l), "")


def wait_ready(host, port, process, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Failure(f"glim serve exited with status {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).split(b" ")[1:2] == [b"200"]:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise Failure("the server did not become ready")


def ensure_glim_and_model(glim, model):
    """Builds the release binary and fetches the default model when they are missing."""
    if not pathlib.Path(glim).exists():
        subprocess.run(["cargo", "build", "--release", "-p", "glim-cli"], cwd=ROOT, check=True)
    if not pathlib.Path(model).exists() and str(model) == str(DEFAULT_MODEL):
        subprocess.run([ROOT / "scripts" / "fetch-model.sh"], check=True, stdout=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=str(DEFAULT_MODEL))
    parser.add_argument("--url", help="a running server (loopback only) instead of starting one")
    parser.add_argument("--glim", default=str(ROOT / "target" / "release" / "glim"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--disconnect-every", type=int, default=4,
                        help="every Nth request hangs up early (0: none)")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS),
                        help=f"distinct prompts used (at most {len(PROMPTS)})")
    parser.add_argument("--parallel", type=int, default=4, help="slots of the started server")
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--quant", help="weight format of the started server")
    parser.add_argument("--time-limit", type=float, default=900, help="seconds, in all")
    parser.add_argument("--ignore-eos", action="store_true",
                        help="every answer runs to --max-tokens (measures decoding)")
    parser.add_argument("--streams", type=lambda v: [int(k) for k in v.split(",")],
                        help="instead of one load: for each count K in this list (1,4,8), "
                             "K clients stream 2K requests, none leaving; a table of "
                             "aggregate tok/s")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.streams and not args.url:
        args.parallel = max(args.parallel, max(args.streams))
    args.prompts = PROMPTS[: max(1, min(args.prompts, len(PROMPTS)))]

    if args.url:
        url = urllib.parse.urlsplit(args.url)
        if url.hostname not in LOOPBACK:
            sys.exit("error: the load test only runs against a loopback address")
        server = None
        host, port = url.hostname, url.port or 80
    else:
        ensure_glim_and_model(args.glim, args.model)
        flags = ["--ctx", args.ctx, "--parallel", args.parallel, "--queue", max(64, args.clients)]
        if args.quant:
            flags += ["--quant", args.quant]
        server = GlimServer(args.glim, args.model, flags)
        host, port = server.host, server.port
    try:
        with server or contextlib.nullcontext():
            alone, runs, after = asyncio.run(
                asyncio.wait_for(load(host, port, args), args.time_limit)
            )
            adapter = server.adapter() if server else ""
    except (Failure, OSError, asyncio.TimeoutError) as e:
        if server and hasattr(server, "log"):
            sys.stderr.write(server.log_text()[-2000:])
        sys.exit(f"error: {e or 'the load test ran past --time-limit'}")

    seconds = lambda s: "-" if s is None else f"{s:.1f} s"  # noqa: E731
    print(f"glim serve load test: streaming requests of {args.max_tokens} tokens"
          + (" (ignore_eos)" if args.ignore_eos else "")
          + f", {len(args.prompts)} prompts, greedy"
          + (f", --parallel {args.parallel}" if not args.url else ""))
    if adapter:
        print(f"  model: {adapter}")
    print(f"  one request at a time: {alone['tokens']} tokens in {alone['wall_s']:.1f} s, "
          f"{alone['tok_s']:.1f} tok/s")
    if args.streams:
        base = runs[0]["tok_s"] or 1.0
        print("  | concurrent streams | aggregate tok/s | vs 1 stream | TTFT p50 | latency p50 |")
        print("  | --- | --- | --- | --- | --- |")
        for run in runs:
            print(f"  | {run['clients']} | {run['tok_s']:.1f} | {run['tok_s'] / base:.2f}x "
                  f"| {seconds(run['ttft_p50_s'])} | {seconds(run['latency_p50_s'])} |")
    for run in runs if not args.streams else []:
        print(f"  {run['clients']} clients, {run['requests']} requests: completed "
              f"{run['completed']} of {run['requests'] - run['leaving']}, disconnected early "
              f"{run['disconnected']} of {run['leaving']}, failed {len(run['failures'])}, "
              f"503 retries {run['retries_503']}")
        print(f"  {run['tokens']} tokens of completed answers in {run['wall_s']:.1f} s: "
              f"{run['tok_s']:.1f} tok/s aggregate")
        print(f"  time to first token p50 {seconds(run['ttft_p50_s'])}, "
              f"p95 {seconds(run['ttft_p95_s'])}; latency p50 {seconds(run['latency_p50_s'])}, "
              f"p95 {seconds(run['latency_p95_s'])}")
    failures = [f for run in runs for f in run["failures"]]
    for failure in failures[:10]:
        print(f"  failed: {failure}")
    print("  every completed stream well formed and equal to its reference: "
          + ("yes" if not failures else "NO"))
    print("  served the same answer after the load: " + ("yes" if after else "NO"))
    if args.json:
        figures = {"adapter": adapter, "max_tokens": args.max_tokens,
                   "ignore_eos": args.ignore_eos, "alone": alone, "runs": runs,
                   "served_after": after}
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    ok = after and not failures and all(
        r["completed"] == r["requests"] - r["leaving"] and r["disconnected"] == r["leaving"]
        for r in runs
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
