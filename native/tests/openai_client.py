#!/usr/bin/env python3
"""`glim serve` driven by the official `openai` Python client (scripts/test-serve.sh
installs it in a throwaway venv). Usage: openai_client.py GLIM MODEL

Checks: the models list; a greedy chat answer equal to `glim run --temperature 0`'s;
streaming with include_usage equal to non-streaming; a stop sequence; text completions; a
seeded sampled answer that repeats; four concurrent greedy streams equal to their one-at-a-
time answers; structured output (`response_format` json_object and json_schema: a nested
schema with $defs, enums, arrays and patterns, streamed and not, each answer validated with
the jsonschema package, and a schema glim cannot compile refused with a 400); and the
client's own error types for an invalid request, an unknown model and a wrong API key.
"""

import concurrent.futures
import pathlib
import subprocess
import sys

import json

import jsonschema
import openai

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benches"))
from load_test import GlimServer  # noqa: E402

KEY = "sk-glim-test"


def expect(error_type, call, says):
    try:
        call()
    except error_type as e:
        assert says in str(e), f"{e} should name {says!r}"
        return e
    raise AssertionError(f"expected {error_type.__name__}")


def main():
    glim, model = sys.argv[1], sys.argv[2]
    flags = ["--ctx", "512", "--parallel", "4", "--api-key", KEY]
    with GlimServer(glim, model, flags) as server:
        client = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=300)
        chat = client.chat.completions

        models = client.models.list().data
        assert len(models) == 1, models
        name = models[0].id
        assert name == pathlib.Path(model).stem, name
        print(f"ok: models.list -> {name}")

        prompt = "What is the capital of France?"
        messages = [{"role": "user", "content": prompt}]
        answer = chat.create(model=name, messages=messages, temperature=0, max_tokens=24)
        text = answer.choices[0].message.content
        assert answer.choices[0].finish_reason in ("stop", "length"), answer
        assert answer.usage.completion_tokens > 0 and answer.usage.prompt_tokens > 0, answer
        run = subprocess.run(
            [glim, "run", model, "-p", prompt, "-n", "24", "--ctx", "512", "--temperature", "0"],
            capture_output=True, text=True, check=True,
        )
        assert run.stdout.strip() == text.strip(), (run.stdout, text)
        print(f"ok: greedy chat equals glim run: {text!r}")

        stream = chat.create(model=name, messages=messages, temperature=0, max_tokens=24,
                             stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == text, (streamed, text)
        usage = chunks[-1].usage
        assert chunks[-1].choices == [] and usage is not None, chunks[-1]
        counts = lambda u: (u.prompt_tokens, u.completion_tokens, u.total_tokens)  # noqa: E731
        assert counts(usage) == counts(answer.usage), (usage, answer.usage)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == [answer.choices[0].finish_reason], finishes
        print("ok: streaming with include_usage equals the whole answer")

        # Stop at a word from the middle of the greedy answer: the text before it, "stop".
        words = text.split()
        assert len(words) >= 3, text
        stop = " " + words[len(words) // 2]
        cut = chat.create(model=name, messages=messages, temperature=0, max_tokens=24, stop=[stop])
        assert cut.choices[0].message.content == text[: text.index(stop)], (cut, stop)
        assert cut.choices[0].finish_reason == "stop", cut
        print(f"ok: stop={stop!r} cuts the answer there")

        done = client.completions.create(model=name, prompt="The capital of France is",
                                         max_tokens=12, temperature=0, stop=["."])
        assert "." not in done.choices[0].text and done.choices[0].finish_reason == "stop", done
        print(f"ok: completions with stop: {done.choices[0].text!r}")

        sampled = [
            chat.create(model=name, messages=messages, temperature=0.9, top_p=0.95, seed=7,
                        max_tokens=16).choices[0].message.content
            for _ in range(2)
        ]
        assert sampled[0] == sampled[1], sampled
        print("ok: a seeded sampled answer repeats")

        prompts = ["Name three colors.", "What is 2 plus 2?", "Write a haiku about the sea.",
                   "Who wrote Hamlet?"]

        def streamed_answer(p):
            parts = chat.create(model=name, messages=[{"role": "user", "content": p}],
                                temperature=0, max_tokens=24, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in parts if c.choices)

        alone = [streamed_answer(p) for p in prompts]
        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            together = list(pool.map(streamed_answer, prompts))
        assert together == alone, (together, alone)
        print("ok: four concurrent streams equal their one-at-a-time answers")

        structured_output(chat, name)
        tool_calls(chat, name)

        expect(openai.BadRequestError,
               lambda: chat.create(model=name, messages=messages, n=2), "`n`")
        expect(openai.BadRequestError,
               lambda: chat.create(model=name, messages=messages, max_tokens=100000), "512")
        expect(openai.NotFoundError, lambda: chat.create(model="gpt-9", messages=messages), "gpt-9")
        stranger = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
        expect(openai.AuthenticationError, lambda: stranger.models.list(), "API key")
        print("ok: invalid requests, an unknown model and a wrong key raise the client's errors")

        again = chat.create(model=name, messages=messages, temperature=0, max_tokens=24)
        assert again.choices[0].message.content == text
        print("ok: still serving the same answer")


# Nested: a $ref'd definition used twice, an enum, a bounded array, a pattern, numbers.
PERSON = {
    "$defs": {
        "place": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24},
                           "country": {"enum": ["France", "Italy", "Spain"]}},
            "required": ["city", "country"], "additionalProperties": False,
        },
    },
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 24},
        "age": {"type": "integer", "minimum": 1, "maximum": 120},
        "height_m": {"type": "number", "minimum": 0.5, "maximum": 2.5},
        "born": {"$ref": "#/$defs/place"},
        "lives": {"$ref": "#/$defs/place"},
        "languages": {"type": "array", "items": {"type": "string", "maxLength": 16},
                      "minItems": 1, "maxItems": 3},
        "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"},
    },
    "required": ["name", "age", "height_m", "born", "lives", "languages", "code"],
    "additionalProperties": False,
}


def structured_output(chat, name):
    ask = [{"role": "user", "content": "Describe a European person as JSON."}]
    schema_format = {"type": "json_schema",
                     "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    answer = chat.create(model=name, messages=ask, temperature=0, max_tokens=200,
                         response_format=schema_format)
    content = answer.choices[0].message.content
    jsonschema.validate(json.loads(content), PERSON)
    assert answer.choices[0].finish_reason == "stop", answer
    parts = chat.create(model=name, messages=ask, temperature=0, max_tokens=200,
                        response_format=schema_format, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    assert streamed == content, (streamed, content)
    sampled = chat.create(model=name, messages=ask, temperature=1.0, seed=11, max_tokens=200,
                          response_format=schema_format)
    jsonschema.validate(json.loads(sampled.choices[0].message.content), PERSON)
    print(f"ok: json_schema answers validate, streamed and not, greedy and sampled: {content}")

    city = [{"role": "user", "content": "Return a JSON object with the keys city and country for Paris."}]
    anything = chat.create(model=name, messages=city, temperature=0, max_tokens=60,
                           response_format={"type": "json_object"})
    text = anything.choices[0].message.content
    assert anything.choices[0].finish_reason == "stop", anything
    assert isinstance(json.loads(text), dict), text
    print(f"ok: json_object answers a JSON object: {json.dumps(json.loads(text))}")

    broken = {"type": "json_schema",
              "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/none"}}}}}
    expect(openai.BadRequestError,
           lambda: chat.create(model=name, messages=ask, response_format=broken), "does not compile")
    expect(openai.BadRequestError,
           lambda: chat.create(model=name, messages=ask, response_format={"type": "yaml"}), "response_format")
    print("ok: a schema glim cannot compile and an unknown format are 400s naming the problem")


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string", "maxLength": 30},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a timezone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 40}},
                   "required": ["timezone"], "additionalProperties": False}}}


def tool_calls(chat, name):
    ask = [{"role": "user", "content": "What is the weather like in Paris?"}]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in (named, "required"):
        answer = chat.create(model=name, messages=ask, tools=[WEATHER, TIME], tool_choice=choice,
                             temperature=0, max_tokens=100)
        message = answer.choices[0].message
        assert answer.choices[0].finish_reason == "tool_calls", answer
        assert message.tool_calls, answer
        for call in message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
        if choice is named:
            # Streaming is checked once, on the required choice.
            assert {c.function.name for c in message.tool_calls} == {"get_weather"}, message
            continue
        parts = list(chat.create(model=name, messages=ask, tools=[WEATHER, TIME], tool_choice=choice,
                                 temperature=0, max_tokens=100, stream=True))
        streamed = {}
        for part in parts:
            for delta in (part.choices[0].delta.tool_calls or []) if part.choices else []:
                entry = streamed.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = delta.id or entry["id"]
                entry["name"] += (delta.function.name or "") if delta.function else ""
                entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
        whole = [{"name": c.function.name, "arguments": c.function.arguments}
                 for c in message.tool_calls]
        assert all(entry.pop("id") for entry in streamed.values()), streamed
        assert [streamed[i] for i in sorted(streamed)] == whole, (streamed, whole)
        assert parts[-1].choices[0].finish_reason == "tool_calls", parts[-1]
    print(f"ok: named and required tool calls validate against their tools, streamed and not: {whole}")

    call = message.tool_calls[0]
    history = ask + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    after = chat.create(model=name, messages=history, tools=[WEATHER, TIME], tool_choice="none",
                        temperature=0, max_tokens=30)
    assert after.choices[0].message.content and not after.choices[0].message.tool_calls, after
    print(f"ok: the conversation goes on after the tool's result: {after.choices[0].message.content!r}")

    broken = dict(WEATHER, function=dict(WEATHER["function"], parameters={"$ref": "#/$defs/none"}))
    expect(openai.BadRequestError,
           lambda: chat.create(model=name, messages=ask, tools=[broken], tool_choice="required"),
           "does not compile")
    expect(openai.BadRequestError,
           lambda: chat.create(model=name, messages=ask, tools=[WEATHER],
                               tool_choice={"type": "function", "function": {"name": "nope"}}), "nope")
    print("ok: a tool schema glim cannot compile and an unknown named tool are 400s")


if __name__ == "__main__":
    main()
